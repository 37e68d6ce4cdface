//! The README's membership walk-through, run for real: a 3-member cluster of `haven serve`
//! processes grows to 5 (`haven serve --join`, `haven member add`, `haven member promote`) and
//! shrinks back to 3 (`haven leader transfer`, `haven member remove`) while a writer keeps
//! writing; at the end every acknowledged write is there, and the members agree.

#[path = "support/cli.rs"]
mod cli_support;

use cli_support::cluster_support::{remote_client, wait_for};
use cli_support::{free_addrs, haven, Run, ServeProcess, CLUSTER};
use haven::ClientOptions;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);
const TIMINGS: &[&str] = &[
    "--tick-ms",
    "5",
    "--election-timeout-ms",
    "100",
    "--heartbeat-ms",
    "20",
    "--state-cache-mib",
    "16",
    "--snapshot-entries",
    "2000",
    "--snapshot-trailing-entries",
    "200",
];

/// `haven COMMAND --cluster (all five) --secret-file ... --cluster-id ...`.
fn cli(dir: &Path, addrs: &[SocketAddr], command: &[&str]) -> Run {
    let cluster = addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let secret = dir.join("secret");
    let mut args: Vec<&str> = command.to_vec();
    let cluster_id = CLUSTER.0.to_string();
    args.extend([
        "--cluster",
        &cluster,
        "--secret-file",
        secret.to_str().unwrap(),
        "--cluster-id",
        &cluster_id,
        "--timeout-ms",
        "20000",
    ]);
    haven(&args)
}

fn ok(run: Run) -> String {
    assert_eq!(run.code, 0, "{run:?}");
    run.stdout
}

/// (id, voter) of every member `haven member list --json` names, and the leader.
fn members(dir: &Path, addrs: &[SocketAddr]) -> (Vec<(u64, bool)>, Option<u64>) {
    let out = ok(cli(dir, addrs, &["member", "list", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).expect(&out);
    let list = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].as_u64().unwrap(), m["voter"].as_bool().unwrap()))
        .collect();
    (list, v["leader"].as_u64())
}

/// Wait until `haven status --json` shows member `id` within 100 entries of the leader's log.
fn caught_up(dir: &Path, addrs: &[SocketAddr], id: u64) {
    wait_for(&format!("member {id} to catch up"), WAIT, || {
        let run = cli(dir, addrs, &["status", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&run.stdout).ok()?;
        let row = v["members"]
            .as_array()?
            .iter()
            .find(|m| m["id"].as_u64() == Some(id))?
            .clone();
        (row["lag"].as_u64()? <= 100).then_some(())
    });
}

#[test]
fn grow_three_to_five_and_shrink_back_to_three_while_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let addrs = free_addrs(5);
    // Founders 1..3 (their --peers name only the three); 4 and 5 join later.
    let mut procs: Vec<ServeProcess> = (1..=3)
        .map(|id| ServeProcess::start(dir, id, &addrs[..3], TIMINGS))
        .collect();
    let (list, _) = wait_for("a leader", WAIT, || {
        let run = cli(dir, &addrs, &["member", "list", "--json"]);
        (run.code == 0).then_some(())?;
        Some(members(dir, &addrs))
    });
    assert_eq!(list, vec![(1, true), (2, true), (3, true)]);

    // A writer that keeps going through all of it; it keeps what was acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        let addrs = addrs.clone();
        std::thread::spawn(move || {
            let options = ClientOptions {
                request_timeout: Duration::from_secs(10),
                ..ClientOptions::default()
            };
            let client = wait_for("a writer connection", WAIT, || {
                remote_client(&addrs, options.clone()).ok()
            });
            let mut acked = Vec::new();
            let mut failed = 0u64;
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let key = format!("walk/{n:06}");
                match client.put(key.as_bytes(), format!("v{n}").as_bytes()) {
                    Ok(put) => acked.push((key, n, put.revision)),
                    Err(_) => failed += 1, // not acknowledged: not checked
                }
                n += 1;
            }
            (acked, failed)
        })
    };

    // Grow: for each new member, start it with --join, add it as a learner, wait until it
    // caught up, promote it.
    for id in [4u64, 5] {
        let mut joining = TIMINGS.to_vec();
        joining.push("--join");
        procs.push(ServeProcess::start(dir, id, &addrs, &joining));
        let address = addrs[(id - 1) as usize].to_string();
        let out = ok(cli(
            dir,
            &addrs,
            &["member", "add", &id.to_string(), &address],
        ));
        assert!(out.contains("added as a learner"), "{out}");
        let (list, _) = members(dir, &addrs);
        assert!(list.contains(&(id, false)), "{list:?}");
        caught_up(dir, &addrs, id);
        ok(cli(dir, &addrs, &["member", "promote", &id.to_string()]));
    }
    let (list, _) = members(dir, &addrs);
    assert_eq!(list, (1..=5).map(|id| (id, true)).collect::<Vec<_>>());

    // Shrink: move leadership to member 4, then remove two founders (1 and 2) and stop them.
    ok(cli(dir, &addrs, &["leader", "transfer", "4"]));
    let (_, leader) = members(dir, &addrs);
    assert_eq!(leader, Some(4));
    for id in [1u64, 2] {
        ok(cli(dir, &addrs, &["member", "remove", &id.to_string()]));
        procs[(id - 1) as usize].kill();
    }
    let (list, leader) = members(dir, &addrs);
    assert_eq!(list, vec![(3, true), (4, true), (5, true)]);
    assert!(leader.is_some_and(|l| (3..=5).contains(&l)), "{leader:?}");
    // Keep writing a little with the new configuration, then stop the writer.
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let (acked, failed) = writer.join().unwrap();
    assert!(
        acked.len() >= 50,
        "only {} acknowledged writes",
        acked.len()
    );

    // Every acknowledged write is there, with its value and revision, on the three left.
    let survivors = &addrs[2..];
    let client = remote_client(survivors, ClientOptions::default()).unwrap();
    for (key, n, revision) in &acked {
        let got = client
            .get(key.as_bytes())
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged write {key} is missing"));
        assert_eq!(got.value, format!("v{n}").as_bytes(), "{key}");
        assert_eq!(got.meta.mod_revision, *revision, "{key}");
    }
    // And the three agree on one state.
    wait_for("the three to converge", WAIT, || {
        let hashes: Vec<_> = survivors
            .iter()
            .map(|a| {
                let pinned = ClientOptions {
                    prefer_leader: false,
                    ..ClientOptions::default()
                };
                remote_client(&[*a], pinned).ok()?.state_hash().ok()
            })
            .collect::<Option<_>>()?;
        hashes.windows(2).all(|w| w[0] == w[1]).then_some(())
    });
    // The exit-code conventions: a bad id is a usage error, a transfer to a non-member is
    // refused with one line on stderr, and nothing changed.
    let zero = cli(dir, &addrs, &["member", "promote", "0"]);
    assert_eq!(zero.code, 2, "{zero:?}");
    assert_eq!(zero.stderr_lines().len(), 1, "{zero:?}");
    let stranger = cli(dir, &addrs, &["leader", "transfer", "9"]);
    assert_eq!(stranger.code, 2, "{stranger:?}");
    assert!(
        stranger.stderr.starts_with("haven leader: "),
        "{stranger:?}"
    );
    assert_eq!(members(dir, &addrs).0.len(), 3);
    eprintln!(
        "walk-through: {} writes acknowledged, {failed} not, across 3 -> 5 -> 3",
        acked.len()
    );
}
