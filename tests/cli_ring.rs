//! `haven ring` against a real cluster of `haven serve` processes on loopback: create, join,
//! weight, leave, show, owners and moves round trip, and the exit codes of bad input (2), an
//! absent map (1) and compacted moves (1), each failure with one stderr line.

#[path = "support/cli.rs"]
mod cli_support;

use cli_support::TestCluster;

fn ok(run: cli_support::Run) -> String {
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stderr, "", "{run:?}");
    run.stdout
}

fn fails(run: cli_support::Run, code: i32, mentions: &str) {
    assert_eq!(run.code, code, "{run:?}");
    assert_eq!(run.stdout, "", "{run:?}");
    let lines = run.stderr_lines();
    assert_eq!(lines.len(), 1, "exactly one stderr line: {run:?}");
    assert!(lines[0].starts_with("haven ring"), "{run:?}");
    assert!(
        lines[0].contains(mentions),
        "expected {mentions:?} in {run:?}"
    );
}

#[test]
fn ring_commands_round_trip_and_fail_with_the_documented_codes() {
    let cluster = TestCluster::start(3);
    assert_eq!(
        ok(cluster.run(&[
            "ring",
            "create",
            "jobs",
            "--partitions",
            "64",
            "--replicas",
            "2"
        ])),
        "epoch 1 slots_moved 0 replica_moves 0\n"
    );
    assert_eq!(
        ok(cluster.run(&["ring", "join", "jobs", "w1"])),
        "epoch 2 slots_moved 64 replica_moves 64\n"
    );
    let joined = ok(cluster.run(&["ring", "join", "jobs", "w2", "--weight", "1"]));
    assert!(joined.starts_with("epoch 3 "), "{joined}");
    ok(cluster.run(&["ring", "join", "jobs", "w3", "--weight", "2"]));
    ok(cluster.run(&["ring", "weight", "jobs", "w3", "--weight", "1"]));

    // show: the header and one row per owner; every slot is someone's.
    let shown = ok(cluster.run(&["ring", "show", "jobs"]));
    let lines: Vec<&str> = shown.lines().collect();
    assert!(
        lines[0].starts_with("map jobs epoch 5 partitions 64 replicas 2 (width 2) strategy rendezvous load_cap 1.020 owners 3"),
        "{shown}"
    );
    assert!(lines[1].starts_with("OWNER"), "{shown}");
    let rows: Vec<Vec<&str>> = lines[2..]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 3, "{shown}");
    let primaries: u32 = rows.iter().map(|r| r[2].parse::<u32>().unwrap()).sum();
    let replicas: u32 = rows.iter().map(|r| r[3].parse::<u32>().unwrap()).sum();
    assert_eq!((primaries, replicas), (64, 128), "{shown}");
    for row in &rows {
        // Equal weights now: each holds 42 or 43 of the 128 slots, 21 or 22 primaries.
        assert!(["42", "43"].contains(&row[3]), "{shown}");
        assert!(["21", "22"].contains(&row[2]), "{shown}");
    }

    // owners: the same answer from the member's copy and through the leader.
    let owners = ok(cluster.run(&["ring", "owners", "jobs", "job-7"]));
    let linear = ok(cluster.run(&["ring", "owners", "jobs", "job-7", "--linearizable"]));
    assert_eq!(owners, linear);
    assert!(owners.starts_with("epoch 5 partition "), "{owners}");
    let hex = ok(cluster.run(&["ring", "owners", "jobs", "6a6f622d37", "--hex"]));
    assert_eq!(hex, owners);

    // leave, then moves of that epoch: only w1's slots move, to the others.
    ok(cluster.run(&["ring", "leave", "jobs", "w1"]));
    let moves = ok(cluster.run(&["ring", "moves", "jobs", "--since", "5"]));
    assert!(!moves.is_empty());
    for line in moves.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 5, "{line}");
        assert_eq!(f[0], "6", "{line}");
        assert!(f[3] == "w1" || f[4] != "w1", "{line}");
    }
    let all = ok(cluster.run(&["ring", "moves", "jobs"]));
    assert!(
        all.ends_with(&moves),
        "moves since 0 end with those of epoch 6"
    );

    // Bad input: exit 2, nothing changed.
    fails(
        cluster.run(&["ring", "join", "jobs", "w2"]),
        2,
        "already joined",
    );
    fails(
        cluster.run(&["ring", "join", "jobs", "w9", "--weight", "0"]),
        2,
        "weight",
    );
    fails(
        cluster.run(&["ring", "leave", "nope", "w2"]),
        2,
        "no map named",
    );
    fails(
        cluster.run(&["ring", "owners", "nope", "k"]),
        2,
        "no map named",
    );
    fails(
        cluster.run(&["ring", "create", "x", "--load-cap", "0.5"]),
        2,
        "load cap",
    );
    fails(
        cluster.run(&["ring", "create", "x", "--strategy", "jump"]),
        2,
        "--strategy",
    );
    // Absent map: exit 1.
    fails(cluster.run(&["ring", "show", "nope"]), 1, "no map named");
    let shown_again = ok(cluster.run(&["ring", "show", "jobs"]));
    assert!(
        shown_again.starts_with("map jobs epoch 6 "),
        "{shown_again}"
    );

    // Compacted moves: exit 1 once the epochs are gone.
    for i in 0..haven::limits::MAX_MAP_MOVES_EPOCHS {
        let weight = (1 + i % 2).to_string();
        ok(cluster.run(&["ring", "weight", "jobs", "w2", "--weight", &weight]));
    }
    fails(
        cluster.run(&["ring", "moves", "jobs", "--since", "1"]),
        1,
        "no longer kept",
    );
}
