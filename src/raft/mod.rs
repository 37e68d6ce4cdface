//! The Raft consensus core: pure (no IO, no clock, no threads, injected randomness).
