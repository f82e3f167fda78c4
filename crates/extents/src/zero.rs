//! The zero detector: is this buffer all zeros, and which blocks of it are?
//!
//! Used by the `Scan` method here, by `sparsekit-punch`'s dig and by
//! `sparsekit-copy`'s `--sparse always`. It compares 16-byte words eight at a
//! time with an OR-reduction that the compiler turns into SIMD, and exits
//! early on the first non-zero 128-byte chunk, so a data block costs a few
//! nanoseconds and a zero block runs at memory bandwidth.

use std::ops::Range;

/// Bytes compared per step of the fast path.
const CHUNK: usize = 128;

/// Whether every byte of `buf` is zero.
///
/// ```
/// assert!(sparsekit_extents::is_zero(&[0u8; 4096]));
/// let mut b = [0u8; 4096];
/// b[4095] = 1;
/// assert!(!sparsekit_extents::is_zero(&b));
/// ```
#[inline]
pub fn is_zero(buf: &[u8]) -> bool {
    // Data blocks usually differ from zero in their first bytes: check them
    // before setting up the wide loop.
    let probe = buf.len().min(16);
    if buf[..probe].iter().any(|&b| b != 0) {
        return false;
    }
    let mut chunks = buf.chunks_exact(CHUNK);
    for chunk in &mut chunks {
        if !chunk_is_zero(chunk.try_into().expect("chunks_exact")) {
            return false;
        }
    }
    chunks.remainder().iter().all(|&b| b == 0)
}

#[inline(always)]
fn chunk_is_zero(chunk: &[u8; CHUNK]) -> bool {
    let mut acc = 0u128;
    for word in chunk.chunks_exact(16) {
        acc |= u128::from_ne_bytes(word.try_into().expect("16 bytes"));
    }
    acc == 0
}

/// Splits `buf` into runs of whole `block`-sized pieces that are all zero or
/// not (the last piece may be short), yielding `(range, is_zero)` with
/// adjacent pieces of the same kind merged.
///
/// ```
/// use sparsekit_extents::zero_runs;
/// let mut buf = vec![0u8; 4 * 512];
/// buf[600] = 7; // block 1
/// let runs: Vec<_> = zero_runs(&buf, 512).collect();
/// assert_eq!(runs, vec![(0..512, true), (512..1024, false), (1024..2048, true)]);
/// ```
///
/// # Panics
/// If `block` is zero.
pub fn zero_runs(buf: &[u8], block: usize) -> ZeroRuns<'_> {
    assert!(block > 0, "zero_runs: block size 0");
    ZeroRuns { buf, block, pos: 0 }
}

/// Iterator returned by [`zero_runs`].
#[derive(Debug, Clone)]
pub struct ZeroRuns<'a> {
    buf: &'a [u8],
    block: usize,
    pos: usize,
}

impl Iterator for ZeroRuns<'_> {
    type Item = (Range<usize>, bool);

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let start = self.pos;
        let piece = |at: usize| &self.buf[at..(at + self.block).min(self.buf.len())];
        let kind = is_zero(piece(start));
        let mut end = (start + self.block).min(self.buf.len());
        while end < self.buf.len() && is_zero(piece(end)) == kind {
            end = (end + self.block).min(self.buf.len());
        }
        self.pos = end;
        Some((start..end, kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn empty_and_tiny_buffers() {
        assert!(is_zero(&[]));
        assert!(is_zero(&[0]));
        assert!(!is_zero(&[1]));
        assert_eq!(zero_runs(&[], 512).count(), 0);
    }

    #[test]
    fn short_last_block_is_its_own_piece() {
        let mut buf = vec![0u8; 1000];
        buf[999] = 1;
        let runs: Vec<_> = zero_runs(&buf, 512).collect();
        assert_eq!(runs, vec![(0..512, true), (512..1000, false)]);
    }

    proptest! {
        #[test]
        fn agrees_with_the_naive_check(len in 0usize..2000, at in any::<prop::sample::Index>(), v in 1u8..=255, misalign in 0usize..16) {
            let mut backing = vec![0u8; len + misalign];
            let buf = &mut backing[misalign..];
            prop_assert!(is_zero(buf));
            if len > 0 {
                let i = at.index(len);
                buf[i] = v;
                prop_assert!(!is_zero(buf));
            }
        }

        #[test]
        fn runs_cover_the_buffer_and_alternate(blocks in prop::collection::vec(any::<bool>(), 0..40), tail in 0usize..512) {
            let block = 512;
            let mut buf = vec![0u8; blocks.len() * block + tail];
            for (i, &data) in blocks.iter().enumerate() {
                if data { buf[i * block + (i * 37) % block] = 0xff; }
            }
            let runs: Vec<_> = zero_runs(&buf, block).collect();
            let mut pos = 0;
            let mut last: Option<bool> = None;
            for (r, z) in &runs {
                prop_assert_eq!(r.start, pos);
                prop_assert!(r.end > r.start);
                prop_assert_ne!(Some(*z), last);
                prop_assert_eq!(*z, is_zero(&buf[r.clone()]));
                last = Some(*z);
                pos = r.end;
            }
            prop_assert_eq!(pos, buf.len());
        }
    }
}
