//! `haven status` against real `haven serve` processes: the table, `--json` (parsed) and
//! `--prometheus` (families, types, histogram consistency), and a crashed member shown as
//! unreachable while the command still succeeds.

#[path = "support/cli.rs"]
mod cli_support;

use cli_support::TestCluster;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A tiny JSON parser, enough to check the shape of `haven status --json`.
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Number(f64),
    Str(String),
    Array(Vec<Json>),
    Object(BTreeMap<String, Json>),
}

impl Json {
    fn get(&self, key: &str) -> &Json {
        match self {
            Json::Object(m) => m
                .get(key)
                .unwrap_or_else(|| panic!("no {key:?} in {self:?}")),
            _ => panic!("not an object: {self:?}"),
        }
    }
    fn num(&self) -> f64 {
        match self {
            Json::Number(n) => *n,
            _ => panic!("not a number: {self:?}"),
        }
    }
    fn str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            _ => panic!("not a string: {self:?}"),
        }
    }
}

fn parse_json(text: &str) -> Json {
    let chars: Vec<char> = text.chars().collect();
    let mut pos = 0;
    let value = parse_value(&chars, &mut pos);
    skip_ws(&chars, &mut pos);
    assert_eq!(pos, chars.len(), "trailing text after JSON: {text}");
    value
}

fn skip_ws(c: &[char], pos: &mut usize) {
    while *pos < c.len() && c[*pos].is_whitespace() {
        *pos += 1;
    }
}

fn expect(c: &[char], pos: &mut usize, word: &str) {
    for w in word.chars() {
        assert_eq!(c.get(*pos), Some(&w), "bad JSON at {pos}");
        *pos += 1;
    }
}

fn parse_value(c: &[char], pos: &mut usize) -> Json {
    skip_ws(c, pos);
    match c.get(*pos).copied() {
        Some('n') => {
            expect(c, pos, "null");
            Json::Null
        }
        Some('t') => {
            expect(c, pos, "true");
            Json::Bool(true)
        }
        Some('f') => {
            expect(c, pos, "false");
            Json::Bool(false)
        }
        Some('"') => Json::Str(parse_string(c, pos)),
        Some('[') => {
            *pos += 1;
            let mut items = Vec::new();
            skip_ws(c, pos);
            if c.get(*pos) == Some(&']') {
                *pos += 1;
                return Json::Array(items);
            }
            loop {
                items.push(parse_value(c, pos));
                skip_ws(c, pos);
                match c.get(*pos) {
                    Some(',') => *pos += 1,
                    Some(']') => {
                        *pos += 1;
                        return Json::Array(items);
                    }
                    other => panic!("bad JSON array at {pos}: {other:?}"),
                }
            }
        }
        Some('{') => {
            *pos += 1;
            let mut map = BTreeMap::new();
            skip_ws(c, pos);
            if c.get(*pos) == Some(&'}') {
                *pos += 1;
                return Json::Object(map);
            }
            loop {
                skip_ws(c, pos);
                let key = parse_string(c, pos);
                skip_ws(c, pos);
                expect(c, pos, ":");
                let value = parse_value(c, pos);
                assert!(map.insert(key, value).is_none(), "duplicate key");
                skip_ws(c, pos);
                match c.get(*pos) {
                    Some(',') => *pos += 1,
                    Some('}') => {
                        *pos += 1;
                        return Json::Object(map);
                    }
                    other => panic!("bad JSON object at {pos}: {other:?}"),
                }
            }
        }
        Some(ch) if ch == '-' || ch.is_ascii_digit() => {
            let start = *pos;
            while *pos < c.len() && "+-.eE0123456789".contains(c[*pos]) {
                *pos += 1;
            }
            let s: String = c[start..*pos].iter().collect();
            Json::Number(s.parse().unwrap_or_else(|_| panic!("bad number {s:?}")))
        }
        other => panic!("bad JSON value at {pos}: {other:?}"),
    }
}

fn parse_string(c: &[char], pos: &mut usize) -> String {
    expect(c, pos, "\"");
    let mut s = String::new();
    loop {
        let ch = *c.get(*pos).expect("unterminated string");
        *pos += 1;
        match ch {
            '"' => return s,
            '\\' => {
                let e = c[*pos];
                *pos += 1;
                match e {
                    '"' => s.push('"'),
                    '\\' => s.push('\\'),
                    '/' => s.push('/'),
                    'n' => s.push('\n'),
                    'r' => s.push('\r'),
                    't' => s.push('\t'),
                    'u' => {
                        let hex: String = c[*pos..*pos + 4].iter().collect();
                        *pos += 4;
                        s.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap());
                    }
                    other => panic!("bad escape \\{other}"),
                }
            }
            ch if (ch as u32) < 0x20 => panic!("unescaped control character in a JSON string"),
            ch => s.push(ch),
        }
    }
}

#[test]
fn the_tiny_json_parser_parses() {
    let v = parse_json(r#"{"a":[1,-2.5,null,true],"b":"x\"\\\nA"}"#);
    assert_eq!(v.get("b").str(), "x\"\\\nA");
    assert_eq!(
        v.get("a"),
        &Json::Array(vec![
            Json::Number(1.0),
            Json::Number(-2.5),
            Json::Null,
            Json::Bool(true)
        ])
    );
}

#[test]
fn status_table_json_and_prometheus_describe_every_member() {
    let cluster = TestCluster::start(3);
    for i in 0..20 {
        assert_eq!(cluster.run(&["put", &format!("k{i}"), "v"]).code, 0);
    }

    // The table: a summary line, a header, one row per member, exactly one leader.
    let table = cluster.run(&["status"]);
    assert_eq!(table.code, 0, "{table:?}");
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(lines[0].starts_with("leader: member "), "{table:?}");
    assert!(lines[0].contains("3 of 3 members reachable"), "{table:?}");
    for column in [
        "ID",
        "ADDRESS",
        "ROLE",
        "TERM",
        "COMMIT",
        "APPLIED",
        "LAG",
        "LAST CONTACT",
    ] {
        assert!(lines[1].contains(column), "{table:?}");
    }
    assert_eq!(lines.len(), 5, "{table:?}");
    for (i, addr) in cluster.addrs.iter().enumerate() {
        let row = lines[2 + i];
        assert!(row.trim_start().starts_with(&(i + 1).to_string()), "{row}");
        assert!(row.contains(&addr.to_string()), "{row}");
    }
    assert_eq!(table.stdout.matches(" leader ").count(), 1, "{table:?}");
    assert_eq!(table.stdout.matches(" follower ").count(), 2, "{table:?}");

    // JSON: the same members, one leader, indexes that make sense.
    let json = cluster.run(&["status", "--json"]);
    assert_eq!(json.code, 0, "{json:?}");
    let v = parse_json(json.stdout.trim());
    let leader = v.get("leader").num();
    assert_eq!(v.get("reachable").num(), 3.0);
    let Json::Array(members) = v.get("members") else {
        panic!("members is not an array: {v:?}");
    };
    assert_eq!(members.len(), 3);
    for (i, m) in members.iter().enumerate() {
        assert_eq!(m.get("id").num(), (i + 1) as f64);
        assert_eq!(m.get("address").str(), cluster.addrs[i].to_string());
        assert_eq!(m.get("reachable"), &Json::Bool(true));
        assert_eq!(m.get("voter"), &Json::Bool(true));
        assert_eq!(m.get("error"), &Json::Null);
        let role = m.get("role").str();
        assert_eq!(role == "leader", leader == (i + 1) as f64, "{m:?}");
        assert!(
            m.get("applied_index").num() <= m.get("commit_index").num(),
            "{m:?}"
        );
        // 20 puts + the readiness put + the founding entries.
        assert!(m.get("commit_index").num() >= 21.0, "{m:?}");
        assert!(m.get("match_index").num() >= 0.0, "{m:?}");
        assert!(m.get("lag").num() >= 0.0, "{m:?}");
        let contact = m.get("last_contact_ms");
        assert_eq!(contact == &Json::Null, role == "leader", "{m:?}");
    }

    // Prometheus text format: every sample belongs to a family declared with # TYPE just
    // before it; the families promised are there; the fsync histogram is consistent.
    let prom = cluster.run(&["status", "--prometheus"]);
    assert_eq!(prom.code, 0, "{prom:?}");
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut samples: Vec<(String, String, f64)> = Vec::new();
    for line in prom.stdout.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["gauge", "counter", "histogram"].contains(&kind), "{line}");
            assert!(
                types.insert(name.into(), kind.into()).is_none(),
                "family twice: {line}"
            );
            current = Some(name.into());
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let family = current.as_deref().expect("a sample before any # TYPE");
        let ok = name == family
            || (types[family] == "histogram"
                && [
                    format!("{family}_bucket"),
                    format!("{family}_sum"),
                    format!("{family}_count"),
                ]
                .contains(&name.to_string()));
        assert!(ok, "sample {name} outside its family {family}");
        if types[family] == "counter" {
            assert!(name.ends_with("_total"), "{line}");
        }
        samples.push((name.into(), labels.into(), value));
    }
    for (family, kind) in [
        ("haven_up", "gauge"),
        ("haven_role", "gauge"),
        ("haven_term", "gauge"),
        ("haven_commit_index", "gauge"),
        ("haven_applied_index", "gauge"),
        ("haven_peer_lag_entries", "gauge"),
        ("haven_proposals_total", "counter"),
        ("haven_snapshots_taken_total", "counter"),
        ("haven_snapshots_sent_total", "counter"),
        ("haven_snapshots_received_total", "counter"),
        ("haven_snapshots_installed_total", "counter"),
        ("haven_wal_fsync_seconds", "histogram"),
    ] {
        assert_eq!(
            types.get(family).map(String::as_str),
            Some(kind),
            "{family}"
        );
    }
    let value = |name: &str, labels: &str| {
        samples
            .iter()
            .find(|(n, l, _)| n == name && l.starts_with(labels))
            .unwrap_or_else(|| panic!("no {name}{{{labels}"))
            .2
    };
    let leader_label = format!("member=\"{}\"", leader as u64);
    assert_eq!(
        value("haven_role", &format!("{leader_label},role=\"leader\"")),
        1.0
    );
    assert!(value("haven_proposals_total", &leader_label) >= 20.0);
    // The leader reports a lag for each of the two others.
    let lags = samples
        .iter()
        .filter(|(n, l, _)| n == "haven_peer_lag_entries" && l.starts_with(&leader_label))
        .count();
    assert_eq!(lags, 2, "{prom:?}");
    // Each member's fsync histogram: cumulative buckets, +Inf == _count > 0.
    for id in 1..=3 {
        let member = format!("member=\"{id}\"");
        let buckets: Vec<f64> = samples
            .iter()
            .filter(|(n, l, _)| n == "haven_wal_fsync_seconds_bucket" && l.starts_with(&member))
            .map(|s| s.2)
            .collect();
        assert!(
            buckets.windows(2).all(|w| w[0] <= w[1]),
            "not cumulative: {buckets:?}"
        );
        let count = value("haven_wal_fsync_seconds_count", &member);
        assert_eq!(buckets.last().copied(), Some(count));
        assert!(count >= 1.0, "member {id} reports no fdatasync");
    }
}

#[test]
fn a_crashed_member_is_shown_unreachable_and_status_still_succeeds() {
    let mut cluster = TestCluster::start(3);
    cluster.members[2].kill();
    // Wait until the two survivors agree on a leader (it may have been member 3).
    let deadline = Instant::now() + Duration::from_secs(30);
    let table = loop {
        let run = cluster.run(&["status"]);
        if run.code == 0 && run.stdout.starts_with("leader: member") {
            break run;
        }
        assert!(
            Instant::now() < deadline,
            "no leader after the crash: {run:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        table.stdout.contains("2 of 3 members reachable"),
        "{table:?}"
    );
    let row3 = table
        .stdout
        .lines()
        .find(|l| l.contains(&cluster.addrs[2].to_string()) && l.contains("unreachable"))
        .unwrap_or_else(|| panic!("no unreachable row for member 3: {table:?}"));
    assert!(row3.trim_start().starts_with('3'), "{row3}");
    let json = cluster.run(&["status", "--json"]);
    let v = parse_json(json.stdout.trim());
    let Json::Array(members) = v.get("members") else {
        panic!("{v:?}")
    };
    assert_eq!(members[2].get("reachable"), &Json::Bool(false));
    assert_eq!(members[2].get("role").str(), "unreachable");
    assert!(!members[2].get("error").str().is_empty());
    let prom = cluster.run(&["status", "--prometheus"]);
    assert!(
        prom.stdout.contains(&format!(
            "haven_up{{member=\"3\",address=\"{}\"}} 0",
            cluster.addrs[2]
        )),
        "{prom:?}"
    );
}
