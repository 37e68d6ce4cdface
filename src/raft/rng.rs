//! The core's only source of randomness: [`SplitMix64`], seeded from
//! [`Config::seed`](super::Config::seed). The runtime draws the seed from the OS once, the
//! simulator derives it from the test seed. Nothing else in `src/raft` is random, so the same
//! inputs and seed give the same outputs.

pub use crate::rng::SplitMix64;
