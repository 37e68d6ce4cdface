//! `haven session grant`, `haven lock` and `haven locks` against a cluster of `haven serve`
//! processes: a token on stdout, a second holder that waits and then gets a larger token,
//! `--wait-ms` expiring with exit 1, the lock table while a holder holds, `--lock-delay-ms`,
//! and bad input.

#[path = "support/cli.rs"]
mod cli_support;

use cli_support::TestCluster;
use std::time::Duration;

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

#[test]
fn lock_prints_increasing_tokens_waits_and_times_out() {
    let cluster = TestCluster::start(3);

    let granted = ok(cluster.run(&["session", "grant", "--ttl-ms", "3000"]));
    let fields: Vec<&str> = granted.trim().split('\t').collect();
    assert!(fields[0].parse::<u64>().unwrap() > 0, "{granted}");
    assert_eq!(fields[1], "3000", "{granted}");

    let first = token(&ok(cluster.run(&["lock", "job", "--hold-ms", "0"])));

    // A holder keeps the lock for a while; meanwhile the table shows it, a try fails at once
    // (exit 1) and a waiter gets it after the release, with a larger token.
    let holder_args = cluster.args(&["lock", "job", "--hold-ms", "3000"]);
    let holder = std::thread::spawn(move || {
        let refs: Vec<&str> = holder_args.iter().map(String::as_str).collect();
        cli_support::haven_in(
            std::path::Path::new("."),
            &refs,
            None,
            Duration::from_secs(60),
        )
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let table = loop {
        let table = ok(cluster.run(&["locks", "--json"]));
        if table.contains(r#""name":"job""#) && table.contains(r#""holders":[{"#) {
            break table;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the holder never showed: {table}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(table.contains(r#""mode":"exclusive""#), "{table}");
    let busy = cluster.run(&["lock", "job", "--wait-ms", "0"]);
    assert_eq!(busy.code, 1, "{busy:?}");
    assert!(busy.stdout.is_empty(), "{busy:?}");
    let timed_out = cluster.run(&["lock", "job", "--wait-ms", "200"]);
    assert_eq!(timed_out.code, 1, "{timed_out:?}");
    let waited = token(&ok(cluster.run(&["lock", "job", "--hold-ms", "0"])));
    let held = holder.join().unwrap();
    assert_eq!(held.code, 0, "{held:?}");
    let held = token(&held.stdout);
    assert!(
        first < held && held < waited,
        "tokens {first} {held} {waited}"
    );

    // Released: the table is empty again; bad input is a usage error that changes nothing.
    assert_eq!(ok(cluster.run(&["locks"])), "");
    let empty = cluster.run(&["lock", "", "--hold-ms", "0"]);
    assert_eq!(empty.code, 2, "{empty:?}");
    let short = cluster.run(&["session", "grant", "--ttl-ms", "1"]);
    assert_eq!(short.code, 2, "{short:?}");

    // --lock-delay-ms: a delay within the limit takes the lock as usual (a clean release
    // starts no delay, so the next lock is granted at once); one over the limit is refused.
    let delayed = token(&ok(cluster.run(&[
        "lock",
        "job",
        "--hold-ms",
        "0",
        "--lock-delay-ms",
        "5000",
    ])));
    assert!(delayed > waited);
    let after = token(&ok(cluster.run(&[
        "lock",
        "job",
        "--hold-ms",
        "0",
        "--wait-ms",
        "0",
    ])));
    assert!(after > delayed);
    let too_long = cluster.run(&["lock", "job", "--hold-ms", "0", "--lock-delay-ms", "60001"]);
    assert_eq!(too_long.code, 2, "{too_long:?}");
    assert!(too_long.stderr.contains("lock_delay_ms"), "{too_long:?}");
}
