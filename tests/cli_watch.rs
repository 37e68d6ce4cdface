//! `haven watch` against a cluster of `haven serve` processes: one line per event in revision
//! order, `--json`, `--hex`, `--count`, and a live watch that sees writes made after it started.

#[path = "support/cli.rs"]
mod cli_support;

use cli_support::TestCluster;
use std::time::Duration;

fn ok(run: cli_support::Run) -> String {
    assert_eq!(run.code, 0, "{run:?}");
    run.stdout
}

#[test]
fn watch_prints_each_event_in_order_and_exits_after_count() {
    let cluster = TestCluster::start(3);
    ok(cluster.run(&["put", "w/a", "1"]));
    ok(cluster.run(&["put", "other", "x"]));
    ok(cluster.run(&["del", "w/a"]));
    ok(cluster.run(&["put", "w/b", "two words"]));

    let json = ok(cluster.run(&[
        "watch",
        "w/",
        "--from-revision",
        "1",
        "--count",
        "3",
        "--json",
    ]));
    let lines: Vec<&str> = json.lines().collect();
    assert_eq!(lines.len(), 3, "{json}");
    let revision = |line: &str| -> u64 {
        let start = line.find(':').unwrap() + 1;
        let end = line.find(',').unwrap();
        line[start..end].parse().unwrap()
    };
    assert!(
        lines[0].ends_with(r#""type":"put","key":"w/a","value":"1"}"#),
        "{json}"
    );
    assert!(
        lines[1].ends_with(r#""type":"delete","key":"w/a","value":null}"#),
        "{json}"
    );
    assert!(
        lines[2].ends_with(r#""type":"put","key":"w/b","value":"two words"}"#),
        "{json}"
    );
    assert!(revision(lines[0]) < revision(lines[1]) && revision(lines[1]) < revision(lines[2]));

    // With --hex the prefix is hex too ("w/" = 772f), and keys and values are printed in hex.
    let hex_prefix = ok(cluster.run(&[
        "watch",
        "772f",
        "--from-revision",
        "1",
        "--count",
        "1",
        "--hex",
    ]));
    let fields: Vec<&str> = hex_prefix.trim_end().split('\t').collect();
    assert_eq!(fields[1..], ["put", "772f61", "31"], "{hex_prefix}");

    // A live watch from now on sees a write made after it started.
    let args = cluster.args(&["watch", "live/", "--count", "1"]);
    let watcher = std::thread::spawn(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        cli_support::haven_in(
            std::path::Path::new("."),
            &refs,
            None,
            Duration::from_secs(60),
        )
    });
    // Keep writing until the watcher has seen one (it may register after the first write).
    let mut i = 0;
    while !watcher.is_finished() {
        ok(cluster.run(&["put", &format!("live/{i}"), "v"]));
        i += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = ok(watcher.join().unwrap());
    assert!(out.contains("\tput\tlive/"), "{out}");
}
