//! WAL behaviour across restarts: appends, reads, truncation, compaction, hard state, limits.

mod wal_common;

use haven::wal::{Wal, WalOptions, WriteBatch};
use haven::{Error, LogIndex, NodeId, Term};
use std::sync::mpsc;
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
