//! Design rule 4: a failed fdatasync is fatal for the log. It is never retried, the batches it
//! covered are not acknowledged, and every later write is refused with `Fatal`.

#[path = "support/wal.rs"]
mod wal_common;

use haven::wal::{Wal, WriteBatch};
use haven::{Error, ErrorCode, LogIndex};
use std::sync::mpsc;
use std::time::Duration;
use wal_common::*;

#[test]
fn failed_fdatasync_stops_all_writes_and_is_never_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, faults) = open_with_faults(dir.path());
    append(&wal, 1, 10, 1, 100);
    assert!(wal.failure().is_none());

    faults.fail_syncs();
    let err = wal
        .write(WriteBatch {
            entries: entries(11, 12, 1, 100),
            ..WriteBatch::default()
        })
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Fatal, "{err}");
    assert!(err.to_string().contains("fdatasync"), "{err}");
    let syncs_after_failure = faults.sync_count();

    // Not acknowledged, so not visible to readers.
    assert_eq!(wal.last_index(), LogIndex(10));
    assert!(matches!(wal.failure(), Some(Error::Fatal(_))));

    // Every later write is refused, blocking or not, and no fdatasync is attempted again.
    for attempt in 0..3 {
        let err = wal
            .write(WriteBatch {
                entries: entries(11, 11, 1, 10),
                ..WriteBatch::default()
            })
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Fatal, "attempt {attempt}: {err}");
    }
    let (tx, rx) = mpsc::channel();
    wal.submit(
        WriteBatch {
            hard_state: Some(hard_state(2, 0)),
            ..WriteBatch::default()
        },
        Box::new(move |r| tx.send(r).unwrap()),
    );
    let result = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(matches!(result, Err(Error::Fatal(_))), "{result:?}");
    assert_eq!(
        faults.sync_count(),
        syncs_after_failure,
        "a failed fdatasync was retried"
    );

    // Reads of acknowledged entries still work.
    assert_eq!(read_all(&wal).len(), 10);
    drop(wal);

    // After a restart (the operator's decision) every acknowledged entry is there.
    let (wal, _) = Wal::open(dir.path(), small_options()).unwrap();
    assert!(wal.last_index() >= LogIndex(10));
    read_all(&wal);
}

#[test]
fn queued_batches_behind_a_failed_fdatasync_all_fail() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, faults) = open_with_faults(dir.path());
    faults.fail_syncs();
    let (tx, rx) = mpsc::channel();
    for i in 1..=50u64 {
        let tx = tx.clone();
        wal.submit(
            WriteBatch {
                entries: entries(i, i, 1, 10),
                ..WriteBatch::default()
            },
            Box::new(move |r| tx.send((i, r)).unwrap()),
        );
    }
    for _ in 0..50 {
        let (i, r) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(matches!(r, Err(Error::Fatal(_))), "batch {i}: {r:?}");
    }
    assert_eq!(wal.last_index(), LogIndex(0));
}

/// Issue 14, section 5: a panic inside a write turn used to drop the turn's callbacks without
/// calling them (the driver then waited for an answer that never came). Every callback of the
/// failed turn is called with `Fatal`, every later submission fails, and no fdatasync is issued
/// after the panic.
#[test]
fn a_panic_mid_turn_fails_every_callback_and_stops_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, faults) = open_with_faults(dir.path());
    append(&wal, 1, 10, 1, 100);

    // A blocking write that does the turn on its own thread.
    faults.panic_next_sync();
    let err = wal
        .write(WriteBatch {
            entries: entries(11, 11, 1, 100),
            ..WriteBatch::default()
        })
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Fatal, "{err}");
    assert!(err.to_string().contains("panicked"), "{err}");
    assert!(matches!(wal.failure(), Some(Error::Fatal(_))));
    let syncs_after_panic = faults.sync_count();

    let (tx, rx) = mpsc::channel();
    for i in 0..20u64 {
        let tx = tx.clone();
        wal.submit(
            WriteBatch {
                entries: entries(11 + i, 11 + i, 1, 10),
                ..WriteBatch::default()
            },
            Box::new(move |r| tx.send((i, r)).unwrap()),
        );
    }
    drop(tx);
    drop(wal);
    let results: Vec<_> = rx.iter().collect();
    assert_eq!(results.len(), 20, "callbacks not called: {results:?}");
    for (i, r) in &results {
        assert!(matches!(r, Err(Error::Fatal(_))), "batch {i}: {r:?}");
    }
    assert_eq!(
        faults.sync_count(),
        syncs_after_panic,
        "a sync after the panic"
    );
    let (wal, _) = Wal::open(dir.path(), small_options()).unwrap();
    assert!(wal.last_index() >= LogIndex(10));
    read_all(&wal);
}

/// The same panic in a turn done by the writer thread for queued submissions: every callback
/// of that turn (and of the ones after it) is called with `Fatal`.
#[test]
fn a_panic_in_the_writer_thread_fails_every_queued_callback() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, faults) = open_with_faults(dir.path());
    append(&wal, 1, 10, 1, 100);
    faults.panic_next_sync();
    let (tx, rx) = mpsc::channel();
    for i in 0..50u64 {
        let tx = tx.clone();
        wal.submit(
            WriteBatch {
                entries: entries(11 + i, 11 + i, 1, 10),
                ..WriteBatch::default()
            },
            Box::new(move |r| tx.send((i, r)).unwrap()),
        );
    }
    drop(tx);
    // Every callback runs before the writer thread exits (dropping the log joins it); a
    // callback dropped without being called would leave fewer than 50 results, not a hang.
    let first = rx.recv().unwrap();
    assert!(matches!(first.1, Err(Error::Fatal(_))), "{first:?}");
    let err = wal
        .write(WriteBatch {
            entries: entries(11, 11, 1, 10),
            ..WriteBatch::default()
        })
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Fatal, "{err}");
    drop(wal);
    let mut results = vec![first];
    results.extend(rx.iter());
    assert_eq!(results.len(), 50, "callbacks not called: {results:?}");
    for (i, r) in &results {
        assert!(matches!(r, Err(Error::Fatal(_))), "batch {i}: {r:?}");
    }
}
