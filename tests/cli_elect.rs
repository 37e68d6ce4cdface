//! `haven elect` and `haven leader NAME` against a cluster of `haven serve` processes: the
//! token on stdout, the leader shown while it holds, a second campaigner that leads after the
//! first resigns with a larger token, "nobody leads" (exit 1), an election named `transfer`,
//! holding until stdin closes, `haven watch --election`, and bad input.

#[path = "support/cli.rs"]
mod cli_support;

use cli_support::TestCluster;
use std::time::{Duration, Instant};

fn ok(run: cli_support::Run) -> String {
    assert_eq!(run.code, 0, "{run:?}");
    run.stdout
}

fn token(stdout: &str) -> u64 {
    stdout
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("a decimal token: {stdout:?}"))
}

/// Run `haven ARGS` in the background (60 s at most).
fn spawn(args: Vec<String>) -> std::thread::JoinHandle<cli_support::Run> {
    std::thread::spawn(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        cli_support::haven_in(
            std::path::Path::new("."),
            &refs,
            None,
            Duration::from_secs(60),
        )
    })
}

/// Poll `haven leader ARGS` until its stdout contains `needle`.
fn wait_leader(args: &[String], needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = cli_support::haven(&refs);
        if run.stdout.contains(needle) {
            return run.stdout;
        }
        assert!(Instant::now() < deadline, "never saw {needle}: {run:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn elect_prints_increasing_tokens_and_leader_shows_who_leads() {
    let cluster = TestCluster::start(3);

    // Nobody leads yet: exit 1, nothing on stdout (null with --json).
    let none = cluster.run(&["leader", "svc"]);
    assert_eq!(none.code, 1, "{none:?}");
    assert!(none.stdout.is_empty(), "{none:?}");
    let none = cluster.run(&["leader", "svc", "--json"]);
    assert_eq!(none.code, 1, "{none:?}");
    assert_eq!(none.stdout.trim(), r#"{"name":"svc","leader":null}"#);

    // a leads for a while; leader shows it; b campaigns and leads once a resigned.
    let first = spawn(cluster.args(&["elect", "svc", "addr-a", "--hold-ms", "3000"]));
    let shown = wait_leader(
        &cluster.args(&["leader", "svc", "--json"]),
        r#""value":"addr-a""#,
    );
    let text = ok(cluster.run(&["leader", "svc"]));
    let fields: Vec<&str> = text.trim().split('\t').collect();
    assert_eq!(fields[0], "addr-a", "{text}");
    let second = token(&ok(cluster.run(&[
        "elect",
        "svc",
        "addr-b",
        "--hold-ms",
        "0",
    ])));
    let first = first.join().unwrap();
    let first = token(&ok(first));
    assert!(
        shown.contains(&format!(r#""token":{first},"#)),
        "{shown} names token {first}"
    );
    assert_eq!(fields[1], first.to_string(), "{text}");
    assert!(first < second, "tokens {first} then {second}");
    // Both resigned: nobody leads.
    assert_eq!(cluster.run(&["leader", "svc"]).code, 1);
    // The election's history, from the first revision: a leads (and again when b joins the
    // queue), b leads, nobody.
    let history = ok(cluster.run(&[
        "watch",
        "--election",
        "svc",
        "--from-revision",
        "1",
        "--count",
        "4",
        "--json",
    ]));
    let kinds: Vec<&str> = history
        .lines()
        .map(|l| {
            let start = l.find(r#""type":""#).unwrap() + 8;
            &l[start..start + l[start..].find('"').unwrap()]
        })
        .collect();
    assert_eq!(
        kinds,
        ["leader", "leader", "leader", "no_leader"],
        "{history}"
    );
    assert!(
        history
            .lines()
            .nth(2)
            .unwrap()
            .contains(r#""value":"addr-b""#),
        "{history}"
    );

    // An election named like the subcommand: options first, then `--`.
    let holder = spawn(cluster.args(&["elect", "transfer", "x", "--hold-ms", "2000"]));
    let mut args = cluster.args(&["leader", "--json"]);
    args.extend(["--".to_string(), "transfer".to_string()]);
    let shown = wait_leader(&args, r#""value":"x""#);
    assert!(shown.contains(r#""name":"transfer""#), "{shown}");
    ok(holder.join().unwrap());

    // Without --hold-ms the leadership is held until stdin closes (here at once).
    token(&ok(cluster.run_with_stdin(&["elect", "stdin", "v"], b"")));
    assert_eq!(cluster.run(&["leader", "stdin"]).code, 1);

    // Bad input: a usage error (exit 2) that changes nothing.
    assert_eq!(cluster.run(&["elect", "", "v", "--hold-ms", "0"]).code, 2);
    assert_eq!(cluster.run(&["leader", ""]).code, 2);
}
