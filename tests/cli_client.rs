//! The client commands of the `haven` binary against a real cluster of `haven serve`
//! processes on loopback: round trips, `--hex`, and the exit codes scripts rely on (1 = a
//! definite "no", >= 2 = failed, each with exactly one line on stderr).

#[path = "support/cli.rs"]
mod cli_support;

use cli_support::{free_addrs, haven, TestCluster};

/// A failure: the code, nothing on stdout, one line on stderr naming the command.
fn assert_one_line_failure(run: &cli_support::Run, code: i32, command: &str, mentions: &str) {
    assert_eq!(run.code, code, "{run:?}");
    assert_eq!(run.stdout, "", "{run:?}");
    let lines = run.stderr_lines();
    assert_eq!(lines.len(), 1, "exactly one stderr line: {run:?}");
    assert!(lines[0].starts_with(&format!("haven {command}")), "{run:?}");
    assert!(
        lines[0].to_lowercase().contains(mentions),
        "expected {mentions:?} in {run:?}"
    );
}

#[test]
fn put_get_del_cas_scan_round_trip_and_absent_is_exit_1() {
    let cluster = TestCluster::start(3);
    let ok = |run: cli_support::Run| {
        assert_eq!(run.code, 0, "{run:?}");
        assert_eq!(run.stderr, "", "{run:?}");
        run.stdout
    };
    assert_eq!(ok(cluster.run(&["put", "fruit/apple", "red"])), "");
    assert_eq!(ok(cluster.run(&["put", "fruit/banana", "yellow 🍌"])), "");
    assert_eq!(ok(cluster.run(&["put", "veg/leek", "green"])), "");
    assert_eq!(ok(cluster.run(&["get", "fruit/apple"])), "red\n");
    assert_eq!(ok(cluster.run(&["get", "fruit/banana"])), "yellow 🍌\n");

    // Absent: exit 1, empty stdout, one line saying so.
    assert_one_line_failure(
        &cluster.run(&["get", "fruit/cherry"]),
        1,
        "get",
        "not found",
    );

    // Compare-and-swap: a mismatch is exit 1 and changes nothing.
    let lost = cluster.run(&["cas", "fruit/apple", "--expect", "green", "brown"]);
    assert_one_line_failure(&lost, 1, "cas", "compare failed");
    assert!(
        lost.stderr.contains("red"),
        "names the current value: {lost:?}"
    );
    assert_eq!(ok(cluster.run(&["get", "fruit/apple"])), "red\n");
    assert_eq!(
        ok(cluster.run(&["cas", "fruit/apple", "--expect", "red", "green"])),
        ""
    );
    assert_eq!(ok(cluster.run(&["get", "fruit/apple"])), "green\n");
    assert_one_line_failure(
        &cluster.run(&["cas", "fruit/apple", "--expect-absent", "x"]),
        1,
        "cas",
        "compare failed",
    );
    assert_eq!(
        ok(cluster.run(&["cas", "fruit/cherry", "--expect-absent", "dark"])),
        ""
    );
    assert_eq!(ok(cluster.run(&["get", "fruit/cherry"])), "dark\n");

    // Scan: key order, prefix, limit (a note on stderr when keys were left out).
    assert_eq!(
        ok(cluster.run(&["scan", "fruit/"])),
        "fruit/apple\tgreen\nfruit/banana\tyellow 🍌\nfruit/cherry\tdark\n"
    );
    let limited = cluster.run(&["scan", "fruit/", "--limit", "2"]);
    assert_eq!(limited.code, 0, "{limited:?}");
    assert_eq!(
        limited.stdout,
        "fruit/apple\tgreen\nfruit/banana\tyellow 🍌\n"
    );
    assert!(limited.stderr.contains("--limit"), "{limited:?}");
    let all = ok(cluster.run(&["scan"]));
    assert!(
        all.contains("veg/leek\tgreen\n") && all.contains("cli-test-ready\t1\n"),
        "{all}"
    );
    assert_eq!(ok(cluster.run(&["scan", "nothing-here/"])), "");

    // Delete: present then absent.
    assert_eq!(ok(cluster.run(&["del", "fruit/banana"])), "");
    assert_one_line_failure(
        &cluster.run(&["get", "fruit/banana"]),
        1,
        "get",
        "not found",
    );
    assert_one_line_failure(
        &cluster.run(&["del", "fruit/banana"]),
        1,
        "del",
        "not found",
    );
}

#[test]
fn hex_keys_and_values_in_and_out_and_oversize_writes_nothing() {
    let cluster = TestCluster::start(3);
    // Binary bytes, including a NUL and a newline, through --hex both ways.
    let put = cluster.run(&["put", "--hex", "00ff0a", "DEADbeef000a"]);
    assert_eq!(put.code, 0, "{put:?}");
    let get = cluster.run(&["get", "--hex", "00ff0a"]);
    assert_eq!(
        (get.code, get.stdout.as_str()),
        (0, "deadbeef000a\n"),
        "{get:?}"
    );
    let scan = cluster.run(&["scan", "--hex", "00"]);
    assert_eq!(
        (scan.code, scan.stdout.as_str()),
        (0, "00ff0a\tdeadbeef000a\n"),
        "{scan:?}"
    );
    // A text key read with --hex comes out as hex too.
    assert_eq!(cluster.run(&["put", "k", "AB"]).code, 0);
    assert_eq!(cluster.run(&["get", "--hex", "6b"]).stdout, "4142\n");
    // cas with hex comparison.
    let cas = cluster.run(&["cas", "--hex", "6b", "--expect", "4142", "43"]);
    assert_eq!(cas.code, 0, "{cas:?}");
    assert_eq!(cluster.run(&["get", "k"]).stdout, "C\n");

    // Bad hex: an invalid argument (2), nothing written.
    assert_one_line_failure(
        &cluster.run(&["put", "--hex", "abc", "00"]),
        2,
        "put",
        "hex",
    );
    assert_one_line_failure(&cluster.run(&["put", "--hex", "zz", "00"]), 2, "put", "hex");

    // Oversize value (over the 1 MiB limit; through stdin, since the command line cannot
    // carry it): 2, and the key stays absent.
    let big = vec![b'v'; haven::limits::MAX_VALUE_BYTES + 1];
    let oversize = cluster.run_with_stdin(&["put", "big", "--stdin"], &big);
    assert_one_line_failure(&oversize, 2, "put", "invalid argument");
    assert_one_line_failure(&cluster.run(&["get", "big"]), 1, "get", "not found");
    // At the limit it goes through, and reads back whole.
    let fits = vec![b'w'; haven::limits::MAX_VALUE_BYTES];
    let put = cluster.run_with_stdin(&["put", "big", "--stdin"], &fits);
    assert_eq!(put.code, 0, "{put:?}");
    let get = cluster.run(&["get", "big"]);
    assert_eq!(get.stdout.len(), fits.len() + 1);
    assert!(get.stdout.bytes().take(fits.len()).all(|b| b == b'w'));
    // Oversize key.
    let long_key = "k".repeat(haven::limits::MAX_KEY_BYTES + 1);
    assert_one_line_failure(
        &cluster.run(&["put", &long_key, "v"]),
        2,
        "put",
        "invalid argument",
    );
}

#[test]
fn failures_exit_2_or_more_with_one_stderr_line() {
    let cluster = TestCluster::start(3);
    // A wrong secret: authentication refused (5), nothing written.
    let bad_secret = cluster.dir.path().join("bad-secret");
    std::fs::write(&bad_secret, "not the cluster's secret at all").unwrap();
    let list = cluster.cluster_list();
    let id = cli_support::CLUSTER.0.to_string();
    let refused = haven(&[
        "put",
        "k",
        "v",
        "--cluster",
        &list,
        "--secret-file",
        bad_secret.to_str().unwrap(),
        "--cluster-id",
        &id,
    ]);
    assert_one_line_failure(&refused, 5, "put", "authentication");
    // A wrong cluster id: also refused.
    let secret = cluster.secret_file();
    let wrong_id = haven(&[
        "get",
        "k",
        "--cluster",
        &list,
        "--secret-file",
        secret.to_str().unwrap(),
        "--cluster-id",
        "999",
    ]);
    assert_one_line_failure(&wrong_id, 5, "get", "authentication");
    assert_one_line_failure(&cluster.run(&["get", "k"]), 1, "get", "not found");

    // Nothing listening: unavailable (3).
    let dead = free_addrs(2)
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let unreachable = haven(&[
        "get",
        "k",
        "--cluster",
        &dead,
        "--secret-file",
        secret.to_str().unwrap(),
    ]);
    assert_one_line_failure(&unreachable, 3, "get", "unavailable");
    let status = haven(&[
        "status",
        "--cluster",
        &dead,
        "--secret-file",
        secret.to_str().unwrap(),
    ]);
    assert_one_line_failure(&status, 3, "status", "unavailable");

    // A missing secret file: a local failure (6).
    let missing = haven(&[
        "get",
        "k",
        "--cluster",
        &list,
        "--secret-file",
        "/nonexistent/secret",
    ]);
    assert_one_line_failure(&missing, 6, "get", "secret");

    // Usage errors: 2, one line (clap's own errors included).
    let usage = haven(&["get"]);
    assert_eq!(usage.code, 2, "{usage:?}");
    assert_eq!(usage.stderr_lines().len(), 1, "{usage:?}");
    assert!(
        usage.stderr.contains("--cluster"),
        "names what is missing: {usage:?}"
    );
    let usage = haven(&["cas", "k", "v", "--cluster", &list, "--secret-file", "x"]);
    assert_eq!(
        (usage.code, usage.stderr_lines().len()),
        (2, 1),
        "{usage:?}"
    );
    let usage = haven(&["frobnicate"]);
    assert_eq!(
        (usage.code, usage.stderr_lines().len()),
        (2, 1),
        "{usage:?}"
    );
    let help = haven(&["put", "--help"]);
    assert_eq!(help.code, 0, "{help:?}");
    assert!(help.stdout.contains("--hex"), "{help:?}");
}
