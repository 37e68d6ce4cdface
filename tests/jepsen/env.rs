//! The environment variables of the Jepsen-style tests (`tests/jepsen.rs`,
//! `tests/jepsen_locks.rs`): numbers, flags and the seed, read the same way by both.

/// `name` as a number (decimal, or hex with `0x`); `None` if unset. A bad value panics naming
/// the variable.
pub fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    let value = value.trim();
    let parsed = match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => value.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={value:?} is not a number")))
}

/// Whether `name` is set to something other than empty or `0`.
pub fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `HAVEN_JEPSEN_SEED`, or a random seed (the caller prints it, so any run can be replayed).
pub fn seed() -> u64 {
    env_u64("HAVEN_JEPSEN_SEED").unwrap_or_else(|| {
        let mut bytes = [0u8; 8];
        getrandom::getrandom(&mut bytes).expect("random seed");
        u64::from_le_bytes(bytes)
    })
}
