//! Backup and restore with real `haven serve` processes: `haven snapshot save` under write
//! load, `haven snapshot verify` (and a flipped byte refused), `haven snapshot restore` into a
//! NEW 3-member cluster, where every write acknowledged before the save is there with its value
//! and revision, and which the old cluster's credentials cannot mistake for the old one.

#[path = "support/cli.rs"]
mod cli_support;

use cli_support::cluster_support::{remote_client, secret, wait_for, SECRET};
use cli_support::{free_addrs, haven, ServeProcess, TestCluster, CLUSTER};
use haven::{Client, ClientOptions, ClusterId, ErrorCode};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// Start `haven serve` for member `id` of a restored cluster.
fn serve_restored(dir: &Path, id: u64, addrs: &[SocketAddr], cluster_id: u64) -> ServeProcess {
    let secret_file = dir.join("secret");
    let peers: Vec<String> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect();
    let log = dir.join(format!("r{id}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_haven"))
        .arg("serve")
        .args(["--id", &id.to_string()])
        .args(["--listen", &addrs[(id - 1) as usize].to_string()])
        .args(["--peers", &peers.join(",")])
        .arg("--data-dir")
        .arg(dir.join(format!("r{id}")))
        .arg("--secret-file")
        .arg(&secret_file)
        .args(["--cluster-id", &cluster_id.to_string()])
        .args(["--tick-ms", "5", "--election-timeout-ms", "100"])
        .args(["--heartbeat-ms", "20", "--state-cache-mib", "16"])
        .env("HAVEN_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn haven serve");
    ServeProcess {
        id,
        child: Some(child),
        log,
    }
}

#[test]
fn save_under_load_verify_and_restore_into_a_new_cluster() {
    let old = TestCluster::start(3);
    let options = ClientOptions {
        request_timeout: Duration::from_secs(10),
        ..ClientOptions::default()
    };

    // Some keys overwritten, so that a key's revision is not simply its first write's.
    let client = remote_client(&old.addrs, options.clone()).unwrap();
    for round in 0..3 {
        for k in 0..50 {
            client
                .put(
                    format!("base/{k}").as_bytes(),
                    format!("r{round}").as_bytes(),
                )
                .unwrap();
        }
    }

    // A writer that keeps writing while the backup is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<(String, String, u64)>::new()));
    let writer = {
        let (stop, acked, client) = (Arc::clone(&stop), Arc::clone(&acked), client.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let (key, value) = (format!("load/{n:06}"), format!("v{n}"));
                if let Ok(put) = client.put(key.as_bytes(), value.as_bytes()) {
                    acked.lock().unwrap().push((key, value, put.revision.0));
                }
                n += 1;
            }
        })
    };
    wait_for("writes under way", WAIT, || {
        (acked.lock().unwrap().len() >= 200).then_some(())
    });

    // Everything acknowledged before the save started must be in the backup.
    let mut before: Vec<(String, String, u64)> = acked.lock().unwrap().clone();
    for k in 0..50 {
        let got = client.get(format!("base/{k}").as_bytes()).unwrap().unwrap();
        before.push((format!("base/{k}"), "r2".into(), got.meta.mod_revision.0));
    }
    let backup = old.dir.path().join("backup.snap");
    let save = old.run(&["snapshot", "save", backup.to_str().unwrap()]);
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    assert_eq!(save.code, 0, "{save:?}");
    assert!(save.stdout.starts_with("saved "), "{save:?}");
    let during = acked.lock().unwrap().len() - (before.len() - 50);
    eprintln!("backup saved while {during} more writes were acknowledged");

    // verify: ok, with index, term and membership; one flipped byte is refused.
    let verify = haven(&["snapshot", "verify", backup.to_str().unwrap()]);
    assert_eq!(verify.code, 0, "{verify:?}");
    let voters = format!(
        "voters 1={},2={},3={}",
        old.addrs[0], old.addrs[1], old.addrs[2]
    );
    assert!(verify.stdout.contains(&voters), "{verify:?}");
    let mut bytes = std::fs::read(&backup).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    let bad = old.dir.path().join("bad.snap");
    std::fs::write(&bad, &bytes).unwrap();
    let refused = haven(&["snapshot", "verify", bad.to_str().unwrap()]);
    assert_eq!(refused.code, 6, "{refused:?}");
    assert_eq!(refused.stderr_lines().len(), 1, "{refused:?}");

    // restore into three new data directories: one new cluster id for all three.
    let new_dir = tempfile::tempdir().unwrap();
    let new_addrs = free_addrs(3);
    let peers: Vec<String> = new_addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect();
    let peers = peers.join(",");
    let mut cluster_ids = Vec::new();
    for id in 1..=3u64 {
        let data = new_dir.path().join(format!("r{id}"));
        let run = haven(&[
            "snapshot",
            "restore",
            backup.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--id",
            &id.to_string(),
            "--peers",
            &peers,
        ]);
        assert_eq!(run.code, 0, "{run:?}");
        let cluster_id: u64 = run
            .stdout
            .split("NEW cluster ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("no cluster id in {run:?}"));
        cluster_ids.push(cluster_id);
    }
    assert!(
        cluster_ids.windows(2).all(|w| w[0] == w[1]),
        "{cluster_ids:?}"
    );
    let new_cluster = cluster_ids[0];
    assert_ne!(new_cluster, CLUSTER.0);
    // A second restore into a used directory is refused.
    let again = haven(&[
        "snapshot",
        "restore",
        backup.to_str().unwrap(),
        "--data-dir",
        new_dir.path().join("r1").to_str().unwrap(),
        "--id",
        "1",
        "--peers",
        &peers,
    ]);
    assert_ne!(again.code, 0, "{again:?}");

    std::fs::write(new_dir.path().join("secret"), SECRET).unwrap();
    let _members: Vec<ServeProcess> = (1..=3)
        .map(|id| serve_restored(new_dir.path(), id, &new_addrs, new_cluster))
        .collect();
    let refs: Vec<String> = new_addrs.iter().map(ToString::to_string).collect();
    let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
    let restored: Client = wait_for("the restored cluster", WAIT, || {
        let c = Client::connect(&refs, ClusterId(new_cluster), &secret(), options.clone()).ok()?;
        c.put(b"after-restore", b"1").ok()?;
        Some(c)
    });
    for (key, value, revision) in &before {
        let got = restored
            .get(key.as_bytes())
            .unwrap()
            .unwrap_or_else(|| panic!("{key}, acknowledged before the save, is missing"));
        assert_eq!(got.value, value.as_bytes(), "{key}");
        assert_eq!(got.meta.mod_revision.0, *revision, "{key}");
    }
    // The members agree on the new configuration, and the old cluster's id is refused.
    let status = restored.status().unwrap();
    let ids: Vec<u64> = status.members.iter().map(|m| m.id.0).collect();
    assert_eq!(ids, vec![1, 2, 3]);
    assert!(status
        .members
        .iter()
        .all(|m| m.voter && new_addrs.iter().any(|a| a.to_string() == m.address)));
    let mistaken = Client::connect(&refs, CLUSTER, &secret(), options).unwrap_err();
    assert_eq!(mistaken.code(), ErrorCode::Auth, "{mistaken}");
}
