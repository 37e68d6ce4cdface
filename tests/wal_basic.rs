//! WAL behaviour across restarts: appends, reads, truncation, compaction, hard state, limits,
//! group commit.

#[path = "support/wal.rs"]
mod wal_common;

use haven::wal::{Wal, WalOptions, WriteBatch};
use haven::{Error, HardState, LogIndex, NodeId, Term};
use std::sync::{mpsc, Arc};
use std::time::Duration;
use wal_common::*;

#[test]
fn appended_entries_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, report) = Wal::open(dir.path(), small_options()).unwrap();
        assert_eq!(report.torn_tail, None);
        assert_eq!(wal.last_index(), LogIndex(0));
        assert_eq!(wal.first_index(), LogIndex(1));
        assert_eq!(wal.term(LogIndex(0)).unwrap(), Some(Term(0)));
        append(&wal, 1, 10, 1, 100);
        append(&wal, 11, 20, 2, 100);
        assert_eq!(read_all(&wal).len(), 20);
    }
    let (wal, report) = Wal::open(dir.path(), small_options()).unwrap();
    assert_eq!(report.live_entries, 20);
    assert_eq!(report.torn_tail, None);
    assert_eq!(wal.last_index(), LogIndex(20));
    assert_eq!(wal.term(LogIndex(10)).unwrap(), Some(Term(1)));
    assert_eq!(wal.term(LogIndex(11)).unwrap(), Some(Term(2)));
    assert_eq!(wal.term(LogIndex(21)).unwrap(), None);
    assert_eq!(read_all(&wal).len(), 20);
    append(&wal, 21, 21, 2, 5);
    assert_eq!(wal.last_index(), LogIndex(21));
}

#[test]
fn reads_span_many_segments_after_the_cache_evicted_them() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions {
        cache_bytes: 4096,
        ..small_options()
    };
    let (wal, _) = Wal::open(dir.path(), options.clone()).unwrap();
    let mut next = 1;
    for round in 0..300u64 {
        let count = 1 + round % 17;
        let len = 50 + (round as usize * 37) % 400;
        append(&wal, next, next + count - 1, 1 + round / 100, len);
        next += count;
    }
    assert!(
        segments(dir.path()).len() >= 5,
        "the test must cross segments: {:?}",
        segments(dir.path())
    );
    read_all(&wal);
    drop(wal);
    // After a restart the cache holds only the newest 4 KiB: nearly everything comes from disk.
    let (wal, _) = Wal::open(dir.path(), options).unwrap();
    let all = read_all(&wal);
    // Windows that straddle record and segment boundaries, with byte limits.
    for lo in (1..all.len() as u64).step_by(97) {
        let got = wal.entries(LogIndex(lo), LogIndex(lo + 40), 2000).unwrap();
        assert!(!got.is_empty());
        let bytes: usize = got.iter().map(|e| e.size_bytes()).sum();
        assert!(
            got.len() == 1 || bytes <= 2000,
            "{bytes} bytes over the limit"
        );
        for (k, e) in got.iter().enumerate() {
            assert_eq!(e.index.0, lo + k as u64);
            check_entry(e);
        }
    }
}

#[test]
fn entries_returns_at_least_one_entry_even_over_max_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), small_options()).unwrap();
    append(&wal, 1, 5, 1, 1000);
    let got = wal.entries(LogIndex(2), LogIndex(5), 1).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].index, LogIndex(2));
    assert_eq!(wal.entries(LogIndex(3), LogIndex(3), 0).unwrap(), vec![]);
    assert!(matches!(
        wal.entries(LogIndex(0), LogIndex(2), 10),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        wal.entries(LogIndex(5), LogIndex(7), 10),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn truncate_suffix_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, _) = Wal::open(dir.path(), small_options()).unwrap();
        append(&wal, 1, 300, 1, 300);
        wal.write(WriteBatch {
            hard_state: Some(hard_state(1, 100)),
            ..WriteBatch::default()
        })
        .unwrap();
        // A new leader of term 2 replaces everything from 150 on (across segments).
        append(&wal, 150, 160, 2, 30);
        assert_eq!(wal.last_index(), LogIndex(160));
        assert_eq!(wal.term(LogIndex(149)).unwrap(), Some(Term(1)));
        assert_eq!(wal.term(LogIndex(150)).unwrap(), Some(Term(2)));
        read_all(&wal);
    }
    let (wal, _) = Wal::open(dir.path(), small_options()).unwrap();
    assert_eq!(wal.last_index(), LogIndex(160));
    assert_eq!(wal.term(LogIndex(150)).unwrap(), Some(Term(2)));
    assert_eq!(wal.term(LogIndex(161)).unwrap(), None);
    let all = read_all(&wal);
    assert!(all[..149].iter().all(|e| e.term == Term(1)));
    assert!(all[149..].iter().all(|e| e.term == Term(2)));
    assert_eq!(wal.hard_state(), hard_state(1, 100));
}

#[test]
fn invalid_batches_are_refused_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), small_options()).unwrap();
    append(&wal, 1, 10, 2, 10);
    wal.write(WriteBatch {
        hard_state: Some(HardState {
            term: Term(2),
            vote: Some(NodeId(1)),
            commit: LogIndex(5),
        }),
        ..WriteBatch::default()
    })
    .unwrap();
    let refused = |batch: WriteBatch, why: &str| match wal.write(batch) {
        Err(Error::InvalidArgument(m)) => assert!(m.contains(why), "{m}"),
        other => panic!("expected InvalidArgument({why}), got {other:?}"),
    };
    refused(
        WriteBatch {
            entries: entries(12, 12, 2, 10),
            ..WriteBatch::default()
        },
        "gap",
    );
    refused(
        WriteBatch {
            entries: entries(5, 6, 3, 10),
            ..WriteBatch::default()
        },
        "committed",
    );
    refused(
        WriteBatch {
            entries: entries(11, 11, 1, 10),
            ..WriteBatch::default()
        },
        "below the term",
    );
    let mut not_contiguous = entries(11, 12, 2, 10);
    not_contiguous.remove(0);
    not_contiguous.insert(0, entry(13, 2, 10));
    refused(
        WriteBatch {
            entries: not_contiguous,
            ..WriteBatch::default()
        },
        "not contiguous",
    );
    refused(
        WriteBatch {
            hard_state: Some(hard_state(1, 5)),
            ..WriteBatch::default()
        },
        "term",
    );
    refused(
        WriteBatch {
            hard_state: Some(HardState {
                term: Term(2),
                vote: Some(NodeId(2)),
                commit: LogIndex(5),
            }),
            ..WriteBatch::default()
        },
        "vote",
    );
    assert_eq!(wal.last_index(), LogIndex(10));
    append(&wal, 11, 11, 2, 10);
    drop(wal);
    let (wal, _) = Wal::open(dir.path(), small_options()).unwrap();
    assert_eq!(wal.last_index(), LogIndex(11));
    assert_eq!(wal.hard_state().vote, Some(NodeId(1)));
    read_all(&wal);
}

#[test]
fn hard_state_and_compaction_survive_restart_and_delete_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let hs = HardState {
        term: Term(3),
        vote: Some(NodeId(2)),
        commit: LogIndex(10),
    };
    {
        let (wal, _) = Wal::open(dir.path(), small_options()).unwrap();
        // The hard state goes into the first segment, which compaction will delete: it must
        // live on through the segment headers.
        wal.write(WriteBatch {
            entries: entries(1, 10, 3, 200),
            hard_state: Some(hs),
            ..WriteBatch::default()
        })
        .unwrap();
        append(&wal, 11, 2000, 3, 200);
        let before = segments(dir.path()).len();
        assert!(before >= 6, "{before} segments");
        wal.write(WriteBatch {
            compact_to: Some((LogIndex(1500), Term(3))),
            ..WriteBatch::default()
        })
        .unwrap();
        let after = segments(dir.path()).len();
        assert!(
            after < before,
            "compaction deleted nothing: {before} -> {after}"
        );
        assert_eq!(wal.first_index(), LogIndex(1501));
        assert_eq!(wal.compacted(), (LogIndex(1500), Term(3)));
        assert_eq!(wal.term(LogIndex(1500)).unwrap(), Some(Term(3)));
        assert_eq!(wal.term(LogIndex(1499)).unwrap(), None);
        read_all(&wal);
    }
    let (wal, report) = Wal::open(dir.path(), small_options()).unwrap();
    assert_eq!(report.live_entries, 500);
    assert_eq!(wal.hard_state(), hs);
    assert_eq!(wal.compacted(), (LogIndex(1500), Term(3)));
    assert_eq!(wal.first_index(), LogIndex(1501));
    assert_eq!(wal.last_index(), LogIndex(2000));
    assert_eq!(read_all(&wal).len(), 500);
    // Compaction backwards changes nothing; forwards keeps working after a restart.
    wal.write(WriteBatch {
        compact_to: Some((LogIndex(1000), Term(3))),
        ..WriteBatch::default()
    })
    .unwrap();
    assert_eq!(wal.first_index(), LogIndex(1501));
    wal.write(WriteBatch {
        compact_to: Some((LogIndex(2000), Term(3))),
        ..WriteBatch::default()
    })
    .unwrap();
    assert_eq!(wal.first_index(), LogIndex(2001));
    assert_eq!(wal.last_index(), LogIndex(2000));
    drop(wal);
    let (wal, _) = Wal::open(dir.path(), small_options()).unwrap();
    assert_eq!(wal.last_index(), LogIndex(2000));
    assert_eq!(wal.term(LogIndex(2000)).unwrap(), Some(Term(3)));
    assert_eq!(wal.hard_state(), hs);
    assert!(segments(dir.path()).len() <= 2);
}

#[test]
fn compaction_beyond_the_log_installs_a_snapshot_point() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, _) = Wal::open(dir.path(), small_options()).unwrap();
        append(&wal, 1, 20, 1, 20);
        // A follower installs a snapshot at (1000, 5) and appends after it in one batch.
        wal.write(WriteBatch {
            entries: entries(1001, 1010, 5, 20),
            hard_state: Some(hard_state(5, 1000)),
            compact_to: Some((LogIndex(1000), Term(5))),
        })
        .unwrap();
        assert_eq!(wal.first_index(), LogIndex(1001));
        assert_eq!(wal.term(LogIndex(1000)).unwrap(), Some(Term(5)));
        assert_eq!(wal.term(LogIndex(20)).unwrap(), None);
    }
    let (wal, _) = Wal::open(dir.path(), small_options()).unwrap();
    assert_eq!(wal.compacted(), (LogIndex(1000), Term(5)));
    assert_eq!(wal.last_index(), LogIndex(1010));
    assert_eq!(read_all(&wal).len(), 10);
    // A snapshot whose last entry conflicts with the log discards the whole log.
    wal.write(WriteBatch {
        compact_to: Some((LogIndex(1005), Term(6))),
        ..WriteBatch::default()
    })
    .unwrap();
    assert_eq!(wal.last_index(), LogIndex(1005));
    assert_eq!(wal.first_index(), LogIndex(1006));
    drop(wal);
    let (wal, _) = Wal::open(dir.path(), small_options()).unwrap();
    assert_eq!(wal.compacted(), (LogIndex(1005), Term(6)));
    assert_eq!(wal.last_index(), LogIndex(1005));
    append(&wal, 1006, 1006, 6, 10);
}

#[test]
fn a_record_larger_than_a_segment_gets_a_segment_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, _) = Wal::open(dir.path(), small_options()).unwrap();
        append(&wal, 1, 3, 1, 1000);
        // One entry 4x the segment size, then a batch of many entries larger than a segment.
        append(&wal, 4, 4, 1, 4 * SMALL_SEGMENT as usize);
        append(&wal, 5, 400, 1, 1000);
        append(&wal, 401, 401, 1, 10);
        read_all(&wal);
    }
    let (wal, _) = Wal::open(dir.path(), small_options()).unwrap();
    assert_eq!(wal.last_index(), LogIndex(401));
    let all = read_all(&wal);
    assert_eq!(all[3].data.len(), 4 * SMALL_SEGMENT as usize);
    let big = segments(dir.path())
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .max()
        .unwrap();
    assert!(big > SMALL_SEGMENT, "no oversize segment: largest is {big}");
}

#[test]
fn submissions_are_group_committed_and_acknowledged_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, faults) = open_with_faults(dir.path());
    let (acks_tx, acks_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (started_tx, started_rx) = mpsc::channel::<()>();
    // The first batch's callback holds the writer until the rest are queued, so the rest must
    // be drained and synced together.
    let first_ack = acks_tx.clone();
    let syncs_before = faults.sync_count();
    wal.submit(
        WriteBatch {
            entries: entries(1, 1, 1, 10),
            ..WriteBatch::default()
        },
        Box::new(move |r| {
            r.unwrap();
            started_tx.send(()).unwrap();
            release_rx.recv_timeout(Duration::from_secs(10)).unwrap();
            first_ack.send(1u64).unwrap();
        }),
    );
    started_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    const BATCHES: u64 = 200;
    for i in 2..=BATCHES {
        let tx = acks_tx.clone();
        wal.submit(
            WriteBatch {
                entries: entries(i, i, 1, 10),
                ..WriteBatch::default()
            },
            Box::new(move |r| {
                r.unwrap();
                tx.send(i).unwrap();
            }),
        );
    }
    release_tx.send(()).unwrap();
    let order: Vec<u64> = (0..BATCHES)
        .map(|_| acks_rx.recv_timeout(Duration::from_secs(20)).unwrap())
        .collect();
    assert_eq!(order, (1..=BATCHES).collect::<Vec<_>>());
    assert_eq!(wal.last_index(), LogIndex(BATCHES));
    // One fdatasync for the first batch, one for the 199 queued behind it (none of the small
    // batches fills a segment).
    assert_eq!(faults.sync_count() - syncs_before, 2);
    read_all(&wal);
}

#[test]
fn wal_is_send_and_sync_and_readable_while_writing() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Wal>();
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), small_options()).unwrap();
    let wal = Arc::new(wal);
    let reader = {
        let wal = Arc::clone(&wal);
        std::thread::spawn(move || {
            let mut reads = 0;
            while wal.last_index() < LogIndex(2000) && reads < 1_000_000 {
                let last = wal.last_index();
                if last >= wal.first_index() {
                    let lo = LogIndex(1.max(last.0.saturating_sub(50)));
                    for e in wal.entries(lo, last.next(), u64::MAX).unwrap() {
                        check_entry(&e);
                    }
                }
                reads += 1;
            }
            reads
        })
    };
    for i in (1..2000).step_by(10) {
        append(&wal, i, i + 9, 1, 100);
    }
    assert!(reader.join().unwrap() > 0);
}

#[test]
fn every_fdatasync_is_counted_in_the_sync_latency_histogram() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), small_options()).unwrap();
    let (before, _) = wal.sync_latency().snapshot();
    let before: u64 = before.total();
    append(&wal, 1, 1, 1, 10);
    append(&wal, 2, 2, 1, 10);
    let (after, _sum_micros) = wal.sync_latency().snapshot();
    assert_eq!(after.counts.len(), haven::histogram::Histogram::BUCKETS);
    // One group-committed write each, so at least one fdatasync each.
    assert!(after.total() >= before + 2, "{after:?}");
}
