//! Byte comparison: where two buffers (or a buffer and zeros) differ, as
//! runs merged across short equal stretches.

use super::MERGE_GAP;
use std::ops::Range;

/// Collects differing runs in file order, merging a run that starts fewer
/// than [`MERGE_GAP`] bytes after the previous one ends, and stops wanting
/// more once it holds `max` runs.
#[derive(Debug)]
pub(crate) struct Runs {
    pub(crate) runs: Vec<Range<u64>>,
    max: usize,
}

impl Runs {
    pub(crate) fn new(max: usize) -> Self {
        Runs {
            runs: Vec::new(),
            max: max.max(1),
        }
    }

    /// Adds the run `r` (after every run added so far).
    pub(crate) fn push(&mut self, r: Range<u64>) {
        match self.runs.last_mut() {
            Some(last) if r.start < last.end.saturating_add(MERGE_GAP) => {
                last.end = last.end.max(r.end);
            }
            _ => self.runs.push(r),
        }
    }

    /// Whether `max` runs are known: the caller may stop (the last one may
    /// still grow, which only matters when it is reported).
    pub(crate) fn full(&self) -> bool {
        self.runs.len() >= self.max
    }
}

/// Block of the scan: any two differing bytes inside one block are fewer
/// than [`MERGE_GAP`] apart, so one run per block is exact.
const BLOCK: usize = MERGE_GAP as usize;

/// Adds to `out` where `a` differs from `b` (from zeros when `b` is
/// `None`); `base` is the file offset of `a[0]`. Stops early once `out` is
/// full. Equal blocks cost one `memcmp` (or one zero check) each.
pub(crate) fn diff(a: &[u8], b: Option<&[u8]>, base: u64, out: &mut Runs) {
    debug_assert!(b.is_none_or(|b| b.len() == a.len()));
    // The whole buffer at once first: memcmp runs at memory speed, and
    // equal data is the common case.
    let same = match b {
        Some(b) => a == b,
        None => sparsekit_extents::is_zero(a),
    };
    if same {
        return;
    }
    for start in (0..a.len()).step_by(BLOCK) {
        let end = (start + BLOCK).min(a.len());
        let x = &a[start..end];
        let (first, last) = match b {
            Some(b) => {
                let y = &b[start..end];
                if x == y {
                    continue;
                }
                let first = x.iter().zip(y).position(|(p, q)| p != q);
                let last = x.iter().zip(y).rposition(|(p, q)| p != q);
                (first, last)
            }
            None => {
                if sparsekit_extents::is_zero(x) {
                    continue;
                }
                (
                    x.iter().position(|&p| p != 0),
                    x.iter().rposition(|&p| p != 0),
                )
            }
        };
        if let (Some(first), Some(last)) = (first, last) {
            let at = base + start as u64;
            out.push(at + first as u64..at + last as u64 + 1);
            if out.full() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The definition, byte by byte.
    fn naive(a: &[u8], b: &[u8], base: u64) -> Vec<Range<u64>> {
        let mut runs = Runs::new(usize::MAX);
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            if x != y {
                runs.push(base + i as u64..base + i as u64 + 1);
            }
        }
        runs.runs
    }

    #[test]
    fn equal_buffers_have_no_runs() {
        let a = vec![7u8; 10_000];
        let mut r = Runs::new(10);
        diff(&a, Some(&a), 0, &mut r);
        assert!(r.runs.is_empty());
        let z = vec![0u8; 10_000];
        diff(&z, None, 0, &mut r);
        assert!(r.runs.is_empty());
    }

    #[test]
    fn one_byte_in_zeros_is_found_exactly() {
        let mut a = vec![0u8; 3 * BLOCK];
        a[5000] = 1;
        let mut r = Runs::new(10);
        diff(&a, None, 1 << 20, &mut r);
        assert_eq!(r.runs, vec![(1 << 20) + 5000..(1 << 20) + 5001]);
    }

    #[test]
    fn runs_close_together_merge_far_apart_do_not() {
        let a = vec![0u8; 5 * BLOCK];
        let mut b = a.clone();
        b[10] = 1;
        b[10 + MERGE_GAP as usize] = 1; // gap of MERGE_GAP - 1 equal bytes: merged
        b[3 * BLOCK] = 1; // far: a new run
        let mut r = Runs::new(10);
        diff(&a, Some(&b), 0, &mut r);
        assert_eq!(
            r.runs,
            vec![10..11 + MERGE_GAP, 3 * BLOCK as u64..3 * BLOCK as u64 + 1]
        );
    }

    #[test]
    fn stops_once_full() {
        let a = vec![0u8; 10 * BLOCK];
        let b: Vec<u8> = (0..a.len())
            .map(|i| u8::from(i % (2 * BLOCK) == 0))
            .collect();
        let mut r = Runs::new(2);
        diff(&a, Some(&b), 0, &mut r);
        assert_eq!(r.runs.len(), 2);
        assert!(r.full());
    }

    proptest! {
        #[test]
        fn agrees_with_the_byte_by_byte_definition(
            len in 0usize..40_000,
            flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..12),
            base in 0u64..1 << 40,
            against_zeros in any::<bool>(),
        ) {
            let a = vec![0u8; len];
            let mut b = a.clone();
            if len > 0 {
                for (i, v) in flips {
                    b[i.index(len)] = v;
                }
            }
            let mut r = Runs::new(usize::MAX);
            if against_zeros {
                diff(&b, None, base, &mut r);
            } else {
                diff(&a, Some(&b), base, &mut r);
            }
            prop_assert_eq!(r.runs, naive(&a, &b, base));
        }
    }
}
