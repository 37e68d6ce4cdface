//! The durable, log-structured Raft log: segments, checksums, group commit, recovery.
