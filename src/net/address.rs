//! Addresses: resolving `host:port`, and free loopback ports for local clusters (`haven demo`,
//! `haven bench cluster`, tests).

use crate::error::{Error, Result};
use crate::rng::SplitMix64;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};

/// Resolve `host:port` to one socket address (the first the resolver gives).
pub fn resolve_address(address: &str) -> Result<SocketAddr> {
    if let Ok(addr) = address.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let mut addrs = address.to_socket_addrs().map_err(|e| {
        Error::InvalidArgument(format!("{address:?} is not a host:port address: {e}"))
    })?;
    addrs
        .next()
        .ok_or_else(|| Error::InvalidArgument(format!("{address:?} resolves to no address")))
}

/// Where port picking starts, and the most it searches below the ephemeral range.
const LOW_PORT: u16 = 10_000;
const HIGH_PORT: u16 = 30_000;
/// Bounded search: after this many tries the kernel picks.
const TRIES: usize = 1000;

/// `n` distinct loopback addresses that were free a moment ago (each was bound, then released).
///
/// They are picked at random below the kernel's ephemeral range when it leaves room (ports
/// 10000-30000 by default), not by binding port 0: a port the kernel hands out for a listener
/// comes from the ephemeral range, the same range outgoing connections take their local ports
/// from, so between releasing it and the member binding it (or while a killed member is down)
/// a connection could take it and make the member's start fail with "address in use".
pub fn free_loopback_addrs(n: usize) -> std::io::Result<Vec<SocketAddr>> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let mut found: Vec<TcpListener> = Vec::with_capacity(n);
    if ephemeral_low > LOW_PORT + 1000 {
        let span = u64::from(ephemeral_low.min(HIGH_PORT) - LOW_PORT);
        let mut seed = [0u8; 8];
        getrandom::getrandom(&mut seed).map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut rng = SplitMix64::new(u64::from_le_bytes(seed));
        for _ in 0..TRIES {
            if found.len() == n {
                break;
            }
            let port = LOW_PORT + rng.below(span) as u16;
            if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
                found.push(listener);
            }
        }
    }
    while found.len() < n {
        found.push(TcpListener::bind("127.0.0.1:0")?);
    }
    found.iter().map(|l| l.local_addr()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_distinct_loopback_and_bindable() {
        let addrs = free_loopback_addrs(7).unwrap();
        let mut ports: Vec<u16> = addrs.iter().map(|a| a.port()).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 7);
        for addr in &addrs {
            assert!(addr.ip().is_loopback());
            TcpListener::bind(addr).unwrap();
        }
    }
}
