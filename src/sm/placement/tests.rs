//! Unit tests of the placement core; the randomized properties are in tests/placement.rs.

/// XXH64 (seed 0) reference values from python-xxhash 4.1.0.
pub(super) const XXH64_VECTORS: &[(&[u8], u64)] = &[
    (b"a", 0xD24E_C4F1_A98C_6E5B),
    (b"ab", 0x65F7_08CA_92D0_4A61),
    (b"abcd", 0xDE03_27B0_D25D_92CC),
    (b"abcdefg", 0x1860_940E_2902_822D),
    (b"user:42", 0xDC1F_EA7D_A8D2_D1C2),
    (b"0123456789abcdef", 0x5C5B_90C3_4E37_6D0B),
    (
        b"The quick brown fox jumps over the lazy dog",
        0x0B24_2D36_1FDA_71BC,
    ),
    (
        b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        0x92F0_DE5A_88A3_C094,
    ),
];
