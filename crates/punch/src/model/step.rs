//! Random steps, and the concrete operations they resolve to.

use super::Model;
use proptest::prelude::*;
use proptest::sample::Index;

/// What a write writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fill {
    /// Explicit zeros (what dig must find).
    Zeros,
    /// A non-zero pattern derived from the seed and the offset.
    Pattern(u8),
}

/// A random step, resolved against the model's current size when it runs
/// (so a shrunk sequence stays meaningful).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Step {
    /// Write up to three blocks anywhere up to two blocks past the end.
    Write {
        /// Where, as a fraction of the reachable offsets.
        at: Index,
        /// Length seed.
        len: u32,
        /// Zeros or a pattern.
        fill: Fill,
    },
    /// Punch up to four blocks at any byte offset, sometimes past the end
    /// or with length 0.
    Punch {
        /// Where.
        at: Index,
        /// Length seed (every 20th is 0).
        len: u32,
    },
    /// Zero, as `Punch`.
    Zero {
        /// Where.
        at: Index,
        /// Length seed.
        len: u32,
    },
    /// Collapse one to four blocks, sometimes misaligned.
    Collapse {
        /// Where.
        at: Index,
        /// Block count seed.
        blocks: u32,
        /// Every tenth misaligns the offset.
        misalign: u32,
    },
    /// Insert one to four blocks, sometimes misaligned.
    Insert {
        /// Where.
        at: Index,
        /// Block count seed.
        blocks: u32,
        /// Every tenth misaligns the offset.
        misalign: u32,
    },
    /// Truncate to any size up to the maximum, half the time block-aligned.
    Truncate {
        /// The new size, as a fraction of the maximum.
        to: Index,
        /// Whether to align it.
        aligned: bool,
    },
    /// Dig holes of at least one to four blocks.
    Dig {
        /// Minimum hole in blocks.
        min_blocks: u32,
    },
}

/// A concrete operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `pwrite`.
    Write {
        /// Offset.
        offset: u64,
        /// Length.
        length: u64,
        /// What.
        fill: Fill,
    },
    /// [`punch_hole`](crate::punch_hole).
    Punch {
        /// Offset.
        offset: u64,
        /// Length.
        length: u64,
    },
    /// [`zero_range`](crate::zero_range).
    Zero {
        /// Offset.
        offset: u64,
        /// Length.
        length: u64,
    },
    /// [`collapse_range`](crate::collapse_range).
    Collapse {
        /// Offset.
        offset: u64,
        /// Length.
        length: u64,
    },
    /// [`insert_range`](crate::insert_range).
    Insert {
        /// Offset.
        offset: u64,
        /// Length.
        length: u64,
    },
    /// `ftruncate`.
    Truncate {
        /// The new size.
        size: u64,
    },
    /// [`dig_holes`](crate::dig_holes).
    Dig {
        /// Minimum hole in bytes.
        min_hole: u64,
    },
}

impl Step {
    /// The operation this step means for a file like `model`, with blocks
    /// of `block` bytes and sizes kept near `max_size`.
    pub fn resolve(&self, model: &Model, block: u64, max_size: u64) -> Op {
        let size = model.len();
        let b = block;
        match *self {
            Step::Write { at, len, fill } => {
                let offset = at.index((size + 2 * b).min(max_size - 1) as usize) as u64;
                let length = (1 + len as u64 % (3 * b)).min(max_size - offset);
                Op::Write {
                    offset,
                    length,
                    fill,
                }
            }
            Step::Punch { at, len } | Step::Zero { at, len } => {
                let offset = at.index((size + b + 1) as usize) as u64;
                let length = if len % 20 == 0 {
                    0
                } else {
                    1 + len as u64 % (4 * b)
                };
                if matches!(self, Step::Punch { .. }) {
                    Op::Punch { offset, length }
                } else {
                    Op::Zero { offset, length }
                }
            }
            Step::Collapse {
                at,
                blocks,
                misalign,
            }
            | Step::Insert {
                at,
                blocks,
                misalign,
            } => {
                let mut offset = at.index(size as usize + 1) as u64 / b * b;
                if misalign % 10 == 0 {
                    offset += 1 + misalign as u64 % (b - 1);
                }
                let length = (1 + blocks as u64 % 4) * b;
                if matches!(self, Step::Collapse { .. }) {
                    Op::Collapse { offset, length }
                } else {
                    Op::Insert { offset, length }
                }
            }
            Step::Truncate { to, aligned } => {
                let mut size = to.index(max_size as usize + 1) as u64;
                if aligned {
                    size = size / b * b;
                }
                Op::Truncate { size }
            }
            Step::Dig { min_blocks } => Op::Dig {
                min_hole: (1 + min_blocks as u64 % 4) * b,
            },
        }
    }
}

/// Random sequences of up to `max_steps` steps, writes most often.
pub fn steps(max_steps: usize) -> impl Strategy<Value = Vec<Step>> {
    let fill = prop_oneof![
        1 => Just(Fill::Zeros),
        3 => any::<u8>().prop_map(Fill::Pattern),
    ];
    let step = prop_oneof![
        5 => (any::<Index>(), any::<u32>(), fill).prop_map(|(at, len, fill)| Step::Write { at, len, fill }),
        3 => (any::<Index>(), any::<u32>()).prop_map(|(at, len)| Step::Punch { at, len }),
        2 => (any::<Index>(), any::<u32>()).prop_map(|(at, len)| Step::Zero { at, len }),
        2 => (any::<Index>(), any::<u32>(), any::<u32>())
            .prop_map(|(at, blocks, misalign)| Step::Collapse { at, blocks, misalign }),
        2 => (any::<Index>(), any::<u32>(), any::<u32>())
            .prop_map(|(at, blocks, misalign)| Step::Insert { at, blocks, misalign }),
        1 => (any::<Index>(), any::<bool>()).prop_map(|(to, aligned)| Step::Truncate { to, aligned }),
        1 => any::<u32>().prop_map(|min_blocks| Step::Dig { min_blocks }),
    ];
    prop::collection::vec(step, 1..=max_steps)
}

/// The bytes a write writes: never zero for a pattern, so writes are data.
pub(crate) fn fill_bytes(fill: Fill, offset: u64, length: u64) -> Vec<u8> {
    match fill {
        Fill::Zeros => vec![0; length as usize],
        Fill::Pattern(seed) => (offset..offset + length)
            .map(|i| ((i.wrapping_mul(31) as u8) ^ seed) | 1)
            .collect(),
    }
}
