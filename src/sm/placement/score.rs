//! How much a partition prefers an owner, per strategy: a `u128` where more is preferred, ties
//! going to the lower owner index (owners are sorted by id, so that too is independent of the
//! order they were given in). Integer arithmetic only, so every machine ranks identically.
//!
//! - Rendezvous (weighted highest random weight, Schindelhauer & Schomaker 2005): for
//!   partition p and owner o, `h = mix64(seed_o ^ mix64(p + 0x9E3779B97F4A7C15))` with
//!   `seed_o = key_hash(id)`, `x = (h >> 11) + 1` in `[1, 2^53]`, read as `u = x / 2^53` in
//!   `(0, 1]`. The score is `w / -log2(u)`, the weighted-HRW score `w / -ln(u)` up to the
//!   constant `ln 2`, which changes no ranking. `-log2(u) = 53 - log2(x)` is computed in Q32
//!   fixed point by [`log2_q32`]; the score is `(w << 80) / that`, and `u = 1` (`-log2 u = 0`)
//!   scores `u128::MAX`.
//! - Ring (Karger et al. 1997): owner o has `weight x vnodes_per_weight` virtual nodes at
//!   `key_hash(id ‖ "#" ‖ i)` (`i` in decimal ASCII, from 0); partition p sits at the middle of
//!   the p-th of P equal arcs, `((2p + 1) << 64) / 2P`. Walking clockwise from p meets owners in
//!   order of the distance to their first virtual node at or after p's point, so the score is
//!   `u64::MAX - that distance` and the top R scores are exactly the R distinct owners the walk
//!   meets first.

use super::hash::{key_hash, mix64};
use super::{Owner, Strategy};

/// Added to the partition number before mixing, so partition 0 does not mix to 0.
const PARTITION_SALT: u64 = 0x9E37_79B9_7F4A_7C15;

/// Entries of the log2 table: `LOG2_TABLE[i] = log2(1 + i / 1024)` in Q32, and one more for 2.
const LOG2_STEPS_BITS: u32 = 10;

/// `log2(1 + i / 2^LOG2_STEPS_BITS)` in Q32 for i in `0..=2^LOG2_STEPS_BITS`, each computed
/// exactly to 32 bits by repeated squaring (one bit per squaring), at compile time.
static LOG2_TABLE: [u64; (1 << LOG2_STEPS_BITS) + 1] = log2_table();

const fn log2_table() -> [u64; (1 << LOG2_STEPS_BITS) + 1] {
    let mut table = [0u64; (1 << LOG2_STEPS_BITS) + 1];
    let mut i = 0;
    while i <= 1 << LOG2_STEPS_BITS {
        // y in [1, 2] as Q62.
        let one: u128 = 1 << 62;
        let mut y: u128 = one + ((i as u128) << (62 - LOG2_STEPS_BITS));
        let mut result: u64 = 0;
        if y >= 2 * one {
            result = 1 << 32;
        } else {
            let mut bit = 0;
            while bit < 32 {
                y = (y * y) >> 62;
                if y >= 2 * one {
                    y >>= 1;
                    result |= 1 << (31 - bit);
                }
                bit += 1;
            }
        }
        table[i] = result;
        i += 1;
    }
    table
}

/// `log2(x)` in Q32 fixed point for `x >= 1`: the integer part from the leading bit, the
/// fraction from [`LOG2_TABLE`] with linear interpolation (error below 2e-7).
pub fn log2_q32(x: u64) -> u64 {
    debug_assert!(x >= 1);
    let x = x.max(1);
    let exponent = 63 - u64::from(x.leading_zeros());
    // The bits below the leading one, as a Q63 fraction of [0, 1).
    let fraction = (x << x.leading_zeros()) & !(1u64 << 63);
    let below = 63 - LOG2_STEPS_BITS;
    let index = (fraction >> below) as usize;
    let rest = u128::from(fraction & ((1u64 << below) - 1));
    let low = LOG2_TABLE[index];
    let high = LOG2_TABLE[index + 1];
    let step = ((u128::from(high - low) * rest) >> below) as u64;
    (exponent << 32) + low + step
}

/// Precomputed per-owner inputs of one strategy over one owner list.
pub(super) enum Scorer {
    Rendezvous {
        seeds: Vec<u64>,
        weights: Vec<u64>,
    },
    Ring {
        /// Per owner, its virtual nodes' positions in ascending order.
        vnodes: Vec<Vec<u64>>,
        partitions: u32,
    },
}

impl Scorer {
    pub(super) fn new(owners: &[Owner], strategy: Strategy, partitions: u32) -> Scorer {
        match strategy {
            Strategy::Rendezvous => Scorer::Rendezvous {
                seeds: owners.iter().map(|o| key_hash(o.id.0.as_bytes())).collect(),
                weights: owners.iter().map(|o| u64::from(o.weight)).collect(),
            },
            Strategy::Ring { vnodes_per_weight } => Scorer::Ring {
                vnodes: owners
                    .iter()
                    .map(|o| vnode_positions(&o.id.0, o.weight * vnodes_per_weight))
                    .collect(),
                partitions,
            },
        }
    }

    /// The per-partition value every owner's score for `partition` starts from.
    #[inline]
    pub(super) fn partition_seed(&self, partition: u32) -> u64 {
        match self {
            Scorer::Rendezvous { .. } => mix64(u64::from(partition).wrapping_add(PARTITION_SALT)),
            Scorer::Ring { partitions, .. } => ring_point(partition, *partitions),
        }
    }

    /// How much the partition with `partition_seed` prefers `owner` (more is preferred).
    #[inline]
    pub(super) fn score(&self, partition_seed: u64, owner: usize) -> u128 {
        match self {
            Scorer::Rendezvous { seeds, weights } => {
                let h = mix64(seeds[owner] ^ partition_seed);
                let x = (h >> 11) + 1;
                let neg_log2 = (53u64 << 32) - log2_q32(x);
                if neg_log2 == 0 {
                    u128::MAX
                } else {
                    (u128::from(weights[owner]) << 80) / u128::from(neg_log2)
                }
            }
            Scorer::Ring { vnodes, .. } => {
                let positions = &vnodes[owner];
                let at = positions.partition_point(|&v| v < partition_seed);
                let first = positions.get(at).or(positions.first());
                match first {
                    Some(&v) => u128::from(u64::MAX - v.wrapping_sub(partition_seed)),
                    None => 0,
                }
            }
        }
    }
}

/// The point of `partition` on the ring: the middle of the partition-th of `partitions` equal
/// arcs.
pub(super) fn ring_point(partition: u32, partitions: u32) -> u64 {
    let numerator = (2 * u128::from(partition) + 1) << 64;
    (numerator / (2 * u128::from(partitions.max(1)))) as u64
}

/// The sorted ring positions of `count` virtual nodes of the owner `id`.
pub(super) fn vnode_positions(id: &str, count: u32) -> Vec<u64> {
    let mut name = Vec::with_capacity(id.len() + 11);
    name.extend_from_slice(id.as_bytes());
    name.push(b'#');
    let stem = name.len();
    let mut positions: Vec<u64> = (0..count)
        .map(|i| {
            name.truncate(stem);
            push_decimal(&mut name, i);
            key_hash(&name)
        })
        .collect();
    positions.sort_unstable();
    positions
}

fn push_decimal(out: &mut Vec<u8>, mut value: u32) {
    let mut digits = [0u8; 10];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (value % 10) as u8;
        len += 1;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend(digits[..len].iter().rev());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log2_is_exact_at_powers_of_two_and_close_between() {
        for e in 0..64 {
            assert_eq!(log2_q32(1u64 << e), (e as u64) << 32, "2^{e}");
        }
        // log2(3) = 1.584962500721156; log2(10) = 3.321928094887362 (to Q32, +-1e-6).
        let close = |x: u64, want_q32: u64| {
            let got = log2_q32(x);
            assert!(
                got.abs_diff(want_q32) < 1 << 12,
                "log2({x}): {got} vs {want_q32}"
            );
        };
        close(3, 6_807_362_106);
        close(10, 14_267_572_527);
        close(1_000_000_007, 128_408_152_788);
    }

    #[test]
    fn log2_is_monotonic() {
        let mut last = 0;
        for x in (1u64..200_000).chain((0..2000).map(|i| u64::MAX - i * 1_000_003)) {
            let got = log2_q32(x);
            if x < 200_000 {
                assert!(got >= last, "log2({x}) went down");
                last = got;
            }
        }
    }

    #[test]
    fn decimal_names_match_format() {
        let mut out = Vec::new();
        for (value, want) in [
            (0, "0"),
            (7, "7"),
            (10, "10"),
            (4_294_967_295, "4294967295"),
        ] {
            out.clear();
            push_decimal(&mut out, value);
            assert_eq!(out, want.as_bytes());
        }
    }

    #[test]
    fn ring_points_split_the_circle_evenly() {
        assert_eq!(ring_point(0, 1), 1 << 63);
        assert_eq!(ring_point(0, 2), 1 << 62);
        assert_eq!(ring_point(1, 2), 3 << 62);
    }
}
