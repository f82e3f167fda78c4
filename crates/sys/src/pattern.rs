//! Test data: deterministic, incompressible bytes.
//!
//! Here, in the crate every other sparsekit crate and the bench depend on,
//! because caps writes it on scratch files at run time (so it cannot be
//! test-only code) and the tests of every crate want the same thing.

/// `len` deterministic, incompressible bytes (xorshift64*) from `seed`:
/// compression (btrfs `compress`) cannot shrink what allocation checks
/// count, a misplaced block shows in a content check, and no 512-byte
/// block is all zeros (a zero detector would take it for a hole).
pub fn pattern(seed: u64, len: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len as usize + 8);
    while (out.len() as u64) < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len as usize);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_seeded_and_never_a_zero_block() {
        assert_eq!(pattern(1, 100), pattern(1, 100));
        assert_ne!(pattern(1, 100), pattern(2, 100));
        assert_eq!(pattern(3, 13).len(), 13);
        for seed in 0..16 {
            let data = pattern(seed, 1 << 20);
            assert!(data.chunks(512).all(|b| b.iter().any(|&x| x != 0)));
        }
    }
}
