//! A Jepsen-style test of real `haven serve` processes on 127.0.0.1.
//!
//! Client threads issue reads, writes (unique values) and compare-and-swaps while a nemesis
//! kills, pauses and partitions members; every operation is recorded as an invocation and a
//! completion on one clock and the history is checked for linearizability per key. After the
//! load: heal, read every key, restart the whole cluster, read every key again (no
//! acknowledged write may be lost), and compare every member's state hash.
//!
//! `cargo test --release --test jepsen` (about 60 s of load). Environment:
//! `HAVEN_JEPSEN_SECONDS` (load duration), `HAVEN_JEPSEN_MEMBERS` (3 or 5),
//! `HAVEN_JEPSEN_CLIENTS`, `HAVEN_JEPSEN_SEED` (replay a schedule), `HAVEN_JEPSEN_KEEP=1`
//! (keep the history of a passing run), `HAVEN_JEPSEN_LEASE_READS=1`, and
//! `HAVEN_JEPSEN_HISTORY=FILE` (check a kept history instead of running a cluster).
//!
//! The harness lives in `tests/jepsen/`; the tests below also check the checking pipeline
//! itself on histories built linearizable by construction and then broken on purpose.

#[path = "support/lincheck.rs"]
mod lincheck;
#[path = "support/proxy.rs"]
mod proxy;

#[path = "jepsen/check.rs"]
mod check;
#[path = "jepsen/cluster.rs"]
mod cluster;
#[path = "jepsen/env.rs"]
mod env;
#[path = "jepsen/generate.rs"]
mod generate;
#[path = "jepsen/history.rs"]
mod history;
#[path = "jepsen/keeper.rs"]
mod keeper;
#[path = "jepsen/nemesis.rs"]
mod nemesis;
#[path = "jepsen/router.rs"]
mod router;
#[path = "jepsen/run.rs"]
mod run;
#[path = "jepsen/watchdog.rs"]
mod watchdog;
#[path = "jepsen/workload.rs"]
mod workload;

use check::Values;
use history::{Action, Event, Kind};
use lincheck::OpResult;
use std::path::PathBuf;

#[test]
fn jepsen_linearizable_and_durable_under_kills_pauses_and_partitions() {
    if let Some(path) = std::env::var_os("HAVEN_JEPSEN_HISTORY") {
        let path = PathBuf::from(path);
        let events = history::read_file(&path).unwrap_or_else(|e| panic!("{e}"));
        println!("jepsen: {}", history::summarize(&events));
        let started = std::time::Instant::now();
        // A kept history that overran the budget can be checked with a larger one.
        let budget = std::env::var("HAVEN_JEPSEN_CHECK_BUDGET")
            .ok()
            .map_or(run::CHECK_BUDGET, |b| {
                b.parse().expect("HAVEN_JEPSEN_CHECK_BUDGET is a number")
            });
        let result = history::check(&events, budget);
        println!(
            "jepsen: checked in {:.2} s",
            started.elapsed().as_secs_f64()
        );
        if let Err(e) = result {
            panic!("{}: {e}", path.display());
        }
        return;
    }
    run::jepsen(&run::Settings::from_env());
}

// ----- the checking pipeline -----

const BUDGET: u64 = run::CHECK_BUDGET;

#[test]
fn checker_accepts_histories_linearizable_by_construction() {
    for seed in 0..40 {
        let g = generate::linearizable(seed, 8, 30, 3, 6);
        assert_eq!(history::check(&g.events, BUDGET), Ok(()), "seed {seed}");
    }
}

#[test]
fn history_file_round_trips_and_checks_the_same() {
    let g = generate::linearizable(5, 6, 40, 2, 5);
    let mut events = g.events;
    events.push(Event::Nemesis {
        time_ns: events.last().map_or(0, Event::time_ns) + 1,
        what: "kill".into(),
        detail: "n2".into(),
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.txt");
    history::write_file(&path, &events).unwrap();
    let read = history::read_file(&path).unwrap();
    assert_eq!(read, events);
    assert_eq!(history::check(&read, BUDGET), Ok(()));
    let summary = history::summarize(&read);
    assert_eq!(summary.nemesis, 1);
    let completed = summary.read.ok + summary.read.fail + summary.read.info;
    assert!(completed > 0 && summary.write.ok > 0 && summary.cas.ok > 0);
}

/// Make a completed read return the value of a write that a later completed write replaced
/// before the read began: stale. Returns whether one was found.
fn inject_stale_read(events: &mut [Event]) -> bool {
    let ops = history::operations(events).unwrap();
    // (key, value, completed) of every acknowledged write.
    let writes: Vec<(u64, u64, u64, u64)> = ops
        .iter()
        .filter_map(|o| match (o.op, o.completion) {
            (lincheck::Op::Write(v), lincheck::Completion::Ok(_)) => {
                Some((o.key, v, o.invoked, o.completed))
            }
            _ => None,
        })
        .collect();
    for read in ops.iter().filter(|o| {
        o.op == lincheck::Op::Read && matches!(o.completion, lincheck::Completion::Ok(_))
    }) {
        for w1 in writes.iter().filter(|w| w.0 == read.key) {
            let replaced = writes
                .iter()
                .any(|w2| w2.0 == read.key && w2.2 > w1.3 && w2.3 < read.invoked);
            if !replaced {
                continue;
            }
            for event in events.iter_mut() {
                if let Event::Client {
                    time_ns,
                    process,
                    kind: kind @ Kind::Ok(_),
                    ..
                } = event
                {
                    if *time_ns == read.completed && *process == read.process {
                        *kind = Kind::Ok(OpResult::Read(Some(w1.1)));
                        return true;
                    }
                }
            }
        }
    }
    false
}

#[test]
fn checker_rejects_an_injected_stale_read() {
    let mut injected = 0;
    for seed in 0..40 {
        let mut g = generate::linearizable(seed, 6, 30, 2, 8);
        if !inject_stale_read(&mut g.events) {
            continue;
        }
        injected += 1;
        let result = history::check(&g.events, BUDGET);
        assert!(
            result
                .as_ref()
                .is_err_and(|e| e.contains("not linearizable")),
            "seed {seed}: stale read accepted: {result:?}"
        );
    }
    assert!(
        injected >= 20,
        "a stale read was injected in only {injected} histories"
    );
}

#[test]
fn checker_rejects_a_write_lost_across_the_full_restart() {
    for seed in 0..20 {
        let mut g = generate::linearizable(seed, 6, 30, 3, 8);
        let key = seed % 3;
        let old = g.finals[&key];
        // An acknowledged write, seen by the final read, missing after the restart.
        let fresh = 1_000_000 + seed;
        generate::append(
            &mut g,
            100,
            key,
            Action::Write(fresh),
            Kind::Ok(OpResult::Written),
        );
        let before: Values = [(key, Some(fresh))].into();
        generate::append(
            &mut g,
            101,
            key,
            Action::Read,
            Kind::Ok(OpResult::Read(Some(fresh))),
        );
        let before_restart = g.events.clone();
        let mut lost_g = g.clone();
        generate::append(
            &mut lost_g,
            102,
            key,
            Action::Read,
            Kind::Ok(OpResult::Read(old)),
        );
        let after: Values = [(key, old)].into();
        let durability = check::check_restart_values(&before_restart, &before, &after);
        assert!(
            durability.as_ref().is_err_and(|e| e.contains("lost")),
            "seed {seed}: {durability:?}"
        );
        let lin = history::check(&lost_g.events, BUDGET);
        assert!(
            lin.as_ref().is_err_and(|e| e.contains("not linearizable")),
            "seed {seed}: lost write accepted: {lin:?}"
        );

        // Control: the restart read sees the write.
        generate::append(
            &mut g,
            102,
            key,
            Action::Read,
            Kind::Ok(OpResult::Read(Some(fresh))),
        );
        let after: Values = [(key, Some(fresh))].into();
        assert_eq!(
            check::check_restart_values(&before_restart, &before, &after),
            Ok(())
        );
        assert_eq!(history::check(&g.events, BUDGET), Ok(()), "seed {seed}");
    }
}

#[test]
fn only_an_unseen_write_of_unknown_outcome_may_surface_after_the_restart() {
    let mut g = generate::linearizable(3, 4, 20, 1, 0);
    let ok = |r| Kind::Ok(r);
    // An unknown write, seen, then replaced.
    generate::append(&mut g, 100, 0, Action::Write(555_555), Kind::Info);
    generate::append(
        &mut g,
        101,
        0,
        Action::Read,
        ok(OpResult::Read(Some(555_555))),
    );
    generate::append(
        &mut g,
        102,
        0,
        Action::Write(666_666),
        ok(OpResult::Written),
    );
    // The final read before the restart.
    generate::append(
        &mut g,
        103,
        0,
        Action::Read,
        ok(OpResult::Read(Some(666_666))),
    );
    let before: Values = [(0, Some(666_666))].into();
    // A write that timed out and nobody saw, and one that failed (not applied).
    generate::append(&mut g, 104, 0, Action::Write(777_777), Kind::Info);
    generate::append(&mut g, 105, 0, Action::Write(999_999), Kind::Fail);
    let before_restart = g.events.clone();

    // The unseen unknown write may take effect late: consistent.
    let after: Values = [(0, Some(777_777))].into();
    assert_eq!(
        check::check_restart_values(&before_restart, &before, &after),
        Ok(())
    );
    generate::append(
        &mut g,
        106,
        0,
        Action::Read,
        ok(OpResult::Read(Some(777_777))),
    );
    assert_eq!(history::check(&g.events, BUDGET), Ok(()));

    for (value, why) in [
        (Some(555_555), "a value seen and replaced cannot come back"),
        (Some(888_888), "nobody wrote this value"),
        (Some(999_999), "this write failed"),
        (None, "the key was deleted by nobody"),
    ] {
        let after: Values = [(0, value)].into();
        assert!(
            check::check_restart_values(&before_restart, &before, &after).is_err(),
            "{why}"
        );
    }
    // A key not read after the restart is a failure too.
    assert!(check::check_restart_values(&before_restart, &before, &Values::new()).is_err());
}

#[test]
fn checker_budget_overrun_is_a_failure() {
    let g = generate::linearizable(11, 8, 40, 1, 4);
    assert_eq!(history::check(&g.events, BUDGET), Ok(()));
    let result = history::check(&g.events, 10);
    assert!(
        result
            .as_ref()
            .is_err_and(|e| e.contains("exceeded its budget")),
        "{result:?}"
    );
}

#[test]
fn pairing_rejects_a_malformed_history() {
    let g = generate::linearizable(1, 2, 5, 1, 0);
    // A completion without its invocation.
    let events: Vec<Event> = g.events[1..].to_vec();
    assert!(history::check(&events, BUDGET).is_err());
    // An invocation while the process's previous one is open.
    let mut events = g.events.clone();
    let first = events[0].clone();
    if let Event::Client { time_ns, .. } = &mut events[0] {
        *time_ns = 0;
    }
    events.insert(1, first);
    assert!(history::check(&events, BUDGET).is_err());
}

// ----- the router's reading of the handshake -----

/// A `Hello` frame as docs/FORMAT.md lays it out: envelope { version 1, body }, body
/// `cluster_id role expected_acceptor nonce founding` (no founding digest for clients, one for
/// peers).
fn hello_frame(role: &[u8], expected_acceptor: &[u8]) -> Vec<u8> {
    let mut body = vec![0x2a]; // cluster id 42
    body.extend_from_slice(role);
    body.extend_from_slice(expected_acceptor);
    body.extend_from_slice(&[7u8; 32]);
    if role[0] == 0 {
        body.push(1);
        body.extend_from_slice(&[9u8; 32]);
    } else {
        body.push(0);
    }
    let mut envelope = vec![1, body.len() as u8];
    envelope.extend_from_slice(&body);
    let mut frame = Vec::new();
    haven::codec::append_raw_frame(&mut frame, 1, 0, &envelope).unwrap();
    frame
}

#[test]
fn router_identifies_peers_and_clients_from_the_documented_hello() {
    use router::{identify, Caller};
    // FORMAT.md's example: Client { client_id: 300 } is `01 fb 2c 01`, no expected acceptor.
    let client = hello_frame(&[0x01, 0xfb, 0x2c, 0x01], &[0x00]);
    assert_eq!(identify(&client), Ok(Some((Caller::Client, client.len()))));
    // Peer { node_id: 2, lane: bulk } expecting member 3.
    let peer = hello_frame(&[0x00, 0x02, 0x01], &[0x01, 0x03]);
    assert_eq!(identify(&peer), Ok(Some((Caller::Peer(2), peer.len()))));
    // Partial frames need more bytes; garbage is refused.
    assert_eq!(identify(&peer[..10]), Ok(None));
    assert_eq!(identify(&peer[..peer.len() - 9]), Ok(None));
    assert!(identify(b"GET / HTTP/1.1\r\n\r\n").is_err());
}

// ----- the whole pipeline can fail -----

/// Run `action` with `client`, recording it in `history`; the outcome's kind.
fn recorded(
    history: &history::History,
    client: &haven::Client,
    process: u64,
    key: u64,
    action: Action,
) -> Kind {
    history.invoke(process, key, action);
    let outcome = workload::execute(client, key, action);
    assert_eq!(outcome.anomaly, None);
    history.complete(process, key, action, outcome.kind, outcome.message);
    outcome.kind
}

/// A canary for everything between the processes and the checker: a member cut off through
/// its links' proxies answers a stale-mode read with an old value after the majority
/// acknowledged a newer write, and the recorded history must fail the check. If the router or
/// the proxies did not isolate the member, it would have the new value and the canary would
/// not fire.
#[test]
fn pipeline_catches_a_stale_read_from_a_partitioned_member() {
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    let dir = tempfile::Builder::new()
        .prefix("jepsen-canary")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let processes = Arc::new(cluster::Processes::default());
    let cluster = cluster::Cluster::start(
        3,
        dir.path(),
        Arc::clone(&processes),
        cluster::MemberOptions { lease_reads: false },
    );
    let leader = cluster
        .wait_for_agreed_leader(Duration::from_secs(30))
        .unwrap();
    let follower = (leader + 1) % 3;
    let timeout = Duration::from_secs(2);
    let writer = cluster.member_client(leader, timeout).unwrap();
    let stale_reader = cluster
        .member_client_with(follower, timeout, haven::ReadMode::Stale)
        .unwrap();
    let history = history::History::new();

    let ok_write = Kind::Ok(OpResult::Written);
    assert_eq!(
        recorded(&history, &writer, 0, 0, Action::Write(1)),
        ok_write
    );
    // Wait (unrecorded) until the follower applied it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while workload::execute(&stale_reader, 0, Action::Read).kind
        != Kind::Ok(OpResult::Read(Some(1)))
    {
        assert!(
            Instant::now() < deadline,
            "the follower never applied write 1"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let others: Vec<usize> = (0..3).filter(|&i| i != follower).collect();
    cluster.partition(&[vec![follower], others]);
    // The majority acknowledges a newer write (retried with fresh values in case the
    // leadership moved just now; each attempt is recorded).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut process = 10;
    while recorded(&history, &writer, process, 0, Action::Write(process)) != ok_write {
        assert!(Instant::now() < deadline, "the majority accepts no write");
        process += 1;
    }
    let stale = recorded(&history, &stale_reader, 2, 0, Action::Read);
    assert_eq!(
        stale,
        Kind::Ok(OpResult::Read(Some(1))),
        "the cut-off member moved on"
    );
    let events = history.events();
    let result = history::check(&events, BUDGET);
    assert!(
        result
            .as_ref()
            .is_err_and(|e| e.contains("not linearizable")),
        "stale read accepted: {result:?}"
    );

    // Healed, the same member's linearizable read sees the write, and that history passes.
    cluster.links.heal();
    let reader = cluster.member_client(follower, timeout).unwrap();
    let history = history::History::new();
    assert_eq!(
        recorded(&history, &writer, 0, 0, Action::Write(3)),
        ok_write
    );
    let fresh = recorded(&history, &reader, 1, 0, Action::Read);
    assert_eq!(fresh, Kind::Ok(OpResult::Read(Some(3))));
    assert_eq!(history::check(&history.events(), BUDGET), Ok(()));
    let (routed, unidentified) = cluster.routing();
    assert!(
        routed >= 6 && unidentified.is_empty(),
        "{routed} {unidentified:?}"
    );
    processes.kill_all();
}
