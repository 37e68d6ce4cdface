//! The replicated state machine: key-value store with revisions, transactions, client sessions.
