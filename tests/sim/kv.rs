//! The simulator's replicated state machine: a key-value model with compare-and-swap and
//! per-client deduplication (client id + sequence number, Raft dissertation 6.3).

use std::collections::BTreeMap;

/// A write command as it travels in a log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Write { key: u64, value: u64 },
    Cas { key: u64, expected: u64, new: u64 },
}

/// A command with its client session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub client: u64,
    pub seq: u64,
    pub command: Command,
}

/// What applying a command returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Written,
    Cas(bool),
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        let (tag, key, a, b) = match self.command {
            Command::Write { key, value } => (1u8, key, value, 0),
            Command::Cas { key, expected, new } => (2u8, key, expected, new),
        };
        let mut out = Vec::with_capacity(41);
        out.push(tag);
        for v in [self.client, self.seq, key, a, b] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Request> {
        if bytes.len() != 41 {
            return None;
        }
        let word = |k: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[1 + 8 * k..9 + 8 * k]);
            u64::from_le_bytes(w)
        };
        let command = match bytes[0] {
            1 => Command::Write {
                key: word(2),
                value: word(3),
            },
            2 => Command::Cas {
                key: word(2),
                expected: word(3),
                new: word(4),
            },
            _ => return None,
        };
        Some(Request {
            client: word(0),
            seq: word(1),
            command,
        })
    }
}

/// The model state (also the simulator's snapshot data).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Kv {
    pub data: BTreeMap<u64, u64>,
    /// Per client: last applied sequence number and its outcome.
    sessions: BTreeMap<u64, (u64, Outcome)>,
}

impl Kv {
    pub fn get(&self, key: u64) -> Option<u64> {
        self.data.get(&key).copied()
    }

    /// Apply a request; a duplicate (already applied sequence number) returns the remembered
    /// outcome without applying again.
    pub fn apply(&mut self, r: &Request) -> Outcome {
        if let Some(&(seq, outcome)) = self.sessions.get(&r.client) {
            if r.seq <= seq {
                return outcome;
            }
        }
        let outcome = match r.command {
            Command::Write { key, value } => {
                self.data.insert(key, value);
                Outcome::Written
            }
            Command::Cas { key, expected, new } => {
                if self.data.get(&key) == Some(&expected) {
                    self.data.insert(key, new);
                    Outcome::Cas(true)
                } else {
                    Outcome::Cas(false)
                }
            }
        };
        self.sessions.insert(r.client, (r.seq, outcome));
        outcome
    }
}
