//! The in-memory model of a sparse file and the model-based test that
//! checks every operation against it (feature `testing`).
//!
//! [`run`] creates a scratch file in a directory, applies random sequences
//! of write / punch / zero / collapse / insert / truncate / dig both to the
//! file (through this crate, with the strategies of a [`Config`]) and to a
//! [`Model`], and after every step checks that
//! - both agree on success, or fail with the same [`RangeProblem`] and the
//!   file is unchanged;
//! - the contents and sizes are equal;
//! - a forced strategy is the one reported;
//! - the file's allocation (`st_blocks`) never exceeds the blocks the
//!   model says may hold data, plus [`Config::alloc_slack_blocks`].
//!
//! `cargo test` runs it on the temporary directory; the test bench runs the
//! same function on every filesystem it mounts, with each strategy forced.
//!
//! ```no_run
//! use sparsekit_punch::model::{Config, Verdict, run};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! match run(std::path::Path::new("/mnt/xfs"), &Config::default())? {
//!     Verdict::Passed { cases, .. } => println!("{cases} cases passed"),
//!     Verdict::Unsupported { strategy, errno, .. } => println!("skip: {strategy}: {errno:?}"),
//! }
//! # Ok(()) }
//! ```

mod runner;
mod step;

pub use runner::{Config, ModelFailure, Verdict, run, run_ops, run_steps, run_with, trim_past_eof};
#[cfg(test)]
pub(crate) use step::fill_bytes;
pub use step::{Fill, Op, Step, steps};

use crate::RangeProblem;

/// A file as the operations should leave it: its bytes, and for each byte
/// whether its block may be allocated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Model {
    bytes: Vec<u8>,
    alloc: Vec<bool>,
}

/// How an allocation-changing step left its range, by the strategy that did it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Whole blocks freed (punch_hole).
    Freed,
    /// The range may now be allocated (zero_range, punch_and_allocate,
    /// write_zeros of zero, zero_range used for a punch).
    Allocated,
    /// Allocation unchanged (write_zeros over data only).
    Unchanged,
}

impl Model {
    /// An empty file.
    pub fn new() -> Self {
        Model::default()
    }

    /// The size.
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Whether the size is 0.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The content.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The most bytes the file may have allocated: every block holding a
    /// byte that may be allocated, counted whole.
    pub fn allocation_bound(&self, block: u64) -> u64 {
        let block = block as usize;
        self.alloc
            .chunks(block)
            .filter(|c| c.iter().any(|&a| a))
            .count() as u64
            * block as u64
    }

    /// What the library must answer for `op` on this content: `Ok` or the
    /// range problem it must report.
    pub fn check(&self, op: &Op, block: u64) -> Result<(), RangeProblem> {
        let size = self.len();
        let range = |offset: u64, length: u64| -> Result<u64, RangeProblem> {
            const MAX: u64 = i64::MAX as u64;
            if offset > MAX {
                return Err(RangeProblem::NegativeOffset);
            }
            if length > MAX {
                return Err(RangeProblem::NegativeLength);
            }
            if length == 0 {
                return Err(RangeProblem::Empty);
            }
            offset
                .checked_add(length)
                .filter(|e| *e <= MAX)
                .ok_or(RangeProblem::Overflow)
        };
        let aligned = |offset: u64, length: u64| {
            if offset % block != 0 || length % block != 0 {
                Err(RangeProblem::Unaligned { alignment: block })
            } else {
                Ok(())
            }
        };
        match *op {
            Op::Write { .. } | Op::Truncate { .. } | Op::Dig { .. } => Ok(()),
            Op::Punch { offset, length } | Op::Zero { offset, length } => {
                range(offset, length).map(|_| ())
            }
            Op::Collapse { offset, length } => {
                let end = range(offset, length)?;
                aligned(offset, length)?;
                if end >= size {
                    return Err(RangeProblem::ReachesEof { size });
                }
                Ok(())
            }
            Op::Insert { offset, length } => {
                range(offset, length)?;
                aligned(offset, length)?;
                if offset >= size {
                    return Err(RangeProblem::AtOrPastEof { size });
                }
                if size.checked_add(length).is_none_or(|s| s > i64::MAX as u64) {
                    return Err(RangeProblem::Overflow);
                }
                Ok(())
            }
        }
    }

    /// Applies a valid `op` (see [`check`](Self::check)); `effect` says how
    /// a punch or zero changed allocation, by the strategy that did it.
    pub fn apply(&mut self, op: &Op, block: u64, effect: Effect) {
        let size = self.len();
        match *op {
            Op::Write {
                offset,
                length,
                fill,
            } => {
                let end = (offset + length) as usize;
                if end > self.bytes.len() {
                    self.resize(end);
                }
                let data = step::fill_bytes(fill, offset, length);
                self.bytes[offset as usize..end].copy_from_slice(&data);
                self.alloc[offset as usize..end].fill(true);
            }
            Op::Punch { offset, length } | Op::Zero { offset, length } => {
                let start = offset.min(size) as usize;
                let end = (offset + length).min(size) as usize;
                self.bytes[start..end].fill(0);
                match effect {
                    Effect::Unchanged => {}
                    Effect::Allocated => self.alloc[start..end].fill(true),
                    Effect::Freed => {
                        let whole_start = offset.div_ceil(block) * block;
                        let whole_end = (offset + length) / block * block;
                        let ws = whole_start.min(size) as usize;
                        let we = whole_end.min(size) as usize;
                        // Whole blocks inside the range; a block straddling
                        // EOF counts when the range covers all of it.
                        if ws < we {
                            self.alloc[ws..we].fill(false);
                        }
                    }
                }
            }
            Op::Collapse { offset, length } => {
                let (a, b) = (offset as usize, (offset + length) as usize);
                self.bytes.drain(a..b);
                self.alloc.drain(a..b);
            }
            Op::Insert { offset, length } => {
                let a = offset as usize;
                let n = length as usize;
                self.bytes.splice(a..a, std::iter::repeat_n(0, n));
                self.alloc.splice(a..a, std::iter::repeat_n(false, n));
            }
            Op::Truncate { size } => self.resize(size as usize),
            Op::Dig { .. } => {}
        }
    }

    fn resize(&mut self, len: usize) {
        self.bytes.resize(len, 0);
        self.alloc.resize(len, false);
    }
}

#[cfg(test)]
mod tests;
