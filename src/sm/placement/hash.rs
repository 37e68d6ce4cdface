//! The fixed hashes placement is built on. Every member must compute the same values on every
//! machine and every build, so nothing here depends on `std`'s randomized `Hasher`, on the
//! platform's endianness or on floating point.
//!
//! - [`key_hash`] is XXH64 (Yann Collet's xxHash, 64-bit variant) with seed 0, written out here
//!   from the published specification (`doc/xxhash_spec.md` in the xxHash repository). It is fast
//!   on short keys (one or two multiply rounds below 32 bytes), has public test vectors, and is
//!   ~60 lines, so a dependency would buy nothing but a supply-chain link.
//! - [`mix64`] is the 64-bit finalizer of MurmurHash3 (`fmix64`): a bijection on `u64` with full
//!   avalanche, used to derive per-partition and per-(partition, owner) values from hashes that
//!   are already uniform.

const PRIME64_1: u64 = 0x9E37_79B1_85EB_CA87;
const PRIME64_2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const PRIME64_3: u64 = 0x1656_67B1_9E37_79F9;
const PRIME64_4: u64 = 0x85EB_CA77_C2B2_AE63;
const PRIME64_5: u64 = 0x27D4_EB2F_1656_67C5;

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

fn read_u32(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u64::from(u32::from_le_bytes(word))
}

fn round(acc: u64, lane: u64) -> u64 {
    acc.wrapping_add(lane.wrapping_mul(PRIME64_2))
        .rotate_left(31)
        .wrapping_mul(PRIME64_1)
}

fn merge_round(acc: u64, val: u64) -> u64 {
    (acc ^ round(0, val))
        .wrapping_mul(PRIME64_1)
        .wrapping_add(PRIME64_4)
}

/// XXH64 of `input` with `seed`. Indexing below stays inside `input`: every read is guarded by
/// the remaining length.
pub fn xxh64(input: &[u8], seed: u64) -> u64 {
    let len = input.len();
    let mut at = 0;
    let mut acc = if len >= 32 {
        let mut v1 = seed.wrapping_add(PRIME64_1).wrapping_add(PRIME64_2);
        let mut v2 = seed.wrapping_add(PRIME64_2);
        let mut v3 = seed;
        let mut v4 = seed.wrapping_sub(PRIME64_1);
        while at + 32 <= len {
            v1 = round(v1, read_u64(input, at));
            v2 = round(v2, read_u64(input, at + 8));
            v3 = round(v3, read_u64(input, at + 16));
            v4 = round(v4, read_u64(input, at + 24));
            at += 32;
        }
        let mut acc = v1
            .rotate_left(1)
            .wrapping_add(v2.rotate_left(7))
            .wrapping_add(v3.rotate_left(12))
            .wrapping_add(v4.rotate_left(18));
        acc = merge_round(acc, v1);
        acc = merge_round(acc, v2);
        acc = merge_round(acc, v3);
        merge_round(acc, v4)
    } else {
        seed.wrapping_add(PRIME64_5)
    };
    acc = acc.wrapping_add(len as u64);
    while at + 8 <= len {
        acc ^= round(0, read_u64(input, at));
        acc = acc
            .rotate_left(27)
            .wrapping_mul(PRIME64_1)
            .wrapping_add(PRIME64_4);
        at += 8;
    }
    if at + 4 <= len {
        acc ^= read_u32(input, at).wrapping_mul(PRIME64_1);
        acc = acc
            .rotate_left(23)
            .wrapping_mul(PRIME64_2)
            .wrapping_add(PRIME64_3);
        at += 4;
    }
    while at < len {
        acc ^= u64::from(input[at]).wrapping_mul(PRIME64_5);
        acc = acc.rotate_left(11).wrapping_mul(PRIME64_1);
        at += 1;
    }
    acc ^= acc >> 33;
    acc = acc.wrapping_mul(PRIME64_2);
    acc ^= acc >> 29;
    acc = acc.wrapping_mul(PRIME64_3);
    acc ^ (acc >> 32)
}

/// The 64-bit hash of a key: XXH64 with seed 0. Part of the replicated format (docs/FORMAT.md,
/// "Partition map: key hash and placement"): changing it moves every key.
#[inline]
pub fn key_hash(key: &[u8]) -> u64 {
    xxh64(key, 0)
}

/// The partition of `key` in a map of `partitions` partitions: `key_hash(key) % partitions`.
/// `partitions` must be at least 1 (a map validates it at creation).
#[inline]
pub fn partition_of(key: &[u8], partitions: u32) -> u32 {
    debug_assert!(partitions >= 1, "a map has at least one partition");
    (key_hash(key) % u64::from(partitions.max(1))) as u32
}

/// MurmurHash3's `fmix64`: a bijective avalanche of a 64-bit value.
#[inline]
pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x ^= x >> 33;
    x = x.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    x ^ (x >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference values from the xxHash project (`xxhsum -H1`, python-xxhash 4.1.0), covering
    /// every tail path: empty, 1..3 bytes, 4..7, 8..31 and the 32-byte stripes.
    #[test]
    fn xxh64_matches_the_reference_implementation() {
        assert_eq!(xxh64(b"", 0), 0xEF46_DB37_51D8_E999);
        assert_eq!(xxh64(b"abc", 0), 0x44BC_2CF5_AD77_0999);
        for (input, want) in crate::sm::placement::tests::XXH64_VECTORS {
            assert_eq!(
                xxh64(input, 0),
                *want,
                "xxh64({:?})",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn partition_of_is_key_hash_modulo_partitions() {
        for key in [
            &b""[..],
            b"a",
            b"user:42",
            b"a longer key that spans the stripes!!",
        ] {
            assert_eq!(partition_of(key, 4096), (key_hash(key) % 4096) as u32);
            assert_eq!(partition_of(key, 1), 0);
            assert!(partition_of(key, 7) < 7);
        }
    }
}
