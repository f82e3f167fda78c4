//! The strategy enums every operation can be forced with, and the
//! [`Report`] each returns.

use crate::Operation;
use std::fmt;
use std::ops::Range;

/// A strategy enum: `Auto` plus the concrete strategies of one operation,
/// tried in [`chain`](Strategy::chain) order.
pub trait Strategy: Copy + Eq + fmt::Debug + fmt::Display + 'static {
    /// The concrete strategies, in the order `Auto` tries them (best first).
    const CHAIN: &'static [Self];

    /// Lowercase name, as on the command line (`"punch_hole"`).
    fn as_str(self) -> &'static str;

    /// Whether this is the `Auto` value.
    fn is_auto(self) -> bool;

    /// The strategies to try: the whole chain for `Auto`, else just `self`.
    fn chain(self) -> &'static [Self] {
        if self.is_auto() {
            Self::CHAIN
        } else {
            let i = Self::CHAIN
                .iter()
                .position(|s| *s == self)
                .expect("every strategy but Auto is in CHAIN");
            &Self::CHAIN[i..=i]
        }
    }
}

macro_rules! strategy_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $(#[$auto_meta:meta])*
            Auto,
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
        pub enum $name {
            $(#[$auto_meta])*
            #[default]
            Auto,
            $( $(#[$vmeta])* $variant, )+
        }

        impl Strategy for $name {
            const CHAIN: &'static [Self] = &[$($name::$variant),+];

            fn as_str(self) -> &'static str {
                match self {
                    $name::Auto => "auto",
                    $( $name::$variant => $text, )+
                }
            }

            fn is_auto(self) -> bool {
                self == $name::Auto
            }
        }

        impl $name {
            /// Parses a name as returned by `as_str` (`"auto"` included).
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    "auto" => Some($name::Auto),
                    $( $text => Some($name::$variant), )+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

strategy_enum! {
    /// How [`punch_hole`](crate::punch_hole) makes a range read as zeros and
    /// frees its whole blocks.
    pub enum PunchStrategy {
        /// Try `PunchHole`, then `ZeroRange`, then `WriteZeros`.
        Auto,
        /// `fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)` (Linux
        /// 2.6.38): partial edge blocks zeroed, whole blocks freed.
        PunchHole => "punch_hole",
        /// `fallocate(FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE)` (Linux
        /// 3.15) over the part inside the file: reads as zeros, nothing freed.
        ZeroRange => "zero_range",
        /// `pwrite` zeros over the data extents inside the file (holes are
        /// left alone): reads as zeros, nothing freed.
        WriteZeros => "write_zeros",
    }
}

strategy_enum! {
    /// How [`zero_range`](crate::zero_range) makes a range read as zeros
    /// while keeping it allocated.
    pub enum ZeroStrategy {
        /// Try `ZeroRange`, then `PunchAndAllocate`, then `WriteZeros`.
        Auto,
        /// `fallocate(FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE)` (Linux 3.15).
        ZeroRange => "zero_range",
        /// `fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)` then
        /// `fallocate(FALLOC_FL_KEEP_SIZE)` to allocate the range again.
        PunchAndAllocate => "punch_and_allocate",
        /// `pwrite` zeros over the whole range inside the file.
        WriteZeros => "write_zeros",
    }
}

strategy_enum! {
    /// How [`collapse_range`](crate::collapse_range) and
    /// [`insert_range`](crate::insert_range) shift the rest of the file.
    pub enum ShiftStrategy {
        /// Try `Native`, then `MoveData`.
        Auto,
        /// `fallocate(FALLOC_FL_COLLAPSE_RANGE)` (Linux 3.15) or
        /// `fallocate(FALLOC_FL_INSERT_RANGE)` (Linux 4.1): extents are
        /// remapped, no data moves.
        Native => "native",
        /// Move the data in bounded chunks in the direction that never
        /// overwrites unread data, driven by the extent map so holes stay
        /// holes, then truncate or extend.
        MoveData => "move_data",
    }
}

/// A strategy `Auto` tried and left, with the errno that showed it
/// unsupported: the record every sparsekit crate uses.
pub type Fallback<S> = sparsekit_sys::Fallback<S>;

/// What a range operation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report<S> {
    /// The operation.
    pub operation: Operation,
    /// The strategy that did it (never `Auto`).
    pub strategy: S,
    /// The strategies tried before it, and why each was left.
    pub fallbacks: Vec<Fallback<S>>,
    /// The offset asked for.
    pub offset: u64,
    /// The length asked for.
    pub length: u64,
    /// The filesystem block size used for alignment (from `fstatfs`).
    pub block_size: u64,
    /// `st_size` before.
    pub size_before: u64,
    /// `st_size` after.
    pub size_after: u64,
    /// `st_blocks * 512` before.
    pub allocated_before: u64,
    /// `st_blocks * 512` after.
    pub allocated_after: u64,
    /// Bytes written by `pwrite` (zeros, or data moved); 0 for the native
    /// strategies.
    pub bytes_written: u64,
}

impl<S> Report<S> {
    /// Bytes of storage released (`allocated_before - allocated_after`, or 0).
    pub fn freed(&self) -> u64 {
        self.allocated_before.saturating_sub(self.allocated_after)
    }

    /// The range asked for, `offset..offset + length`.
    pub fn range(&self) -> Range<u64> {
        self.offset..self.offset + self.length
    }

    /// The whole blocks inside the range asked for: what a punch
    /// deallocates (the partial blocks at the edges are only zeroed).
    /// Empty when the range covers no whole block.
    pub fn whole_blocks(&self) -> Range<u64> {
        let b = self.block_size.max(1);
        let start = self.offset.div_ceil(b).saturating_mul(b);
        let end = (self.offset + self.length) / b * b;
        if start < end {
            start..end
        } else {
            start..start
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_and_names() {
        assert_eq!(
            PunchStrategy::Auto.chain(),
            &[
                PunchStrategy::PunchHole,
                PunchStrategy::ZeroRange,
                PunchStrategy::WriteZeros
            ]
        );
        assert_eq!(
            ZeroStrategy::WriteZeros.chain(),
            &[ZeroStrategy::WriteZeros]
        );
        assert_eq!(ShiftStrategy::Native.chain(), &[ShiftStrategy::Native]);
        for s in PunchStrategy::CHAIN {
            assert_eq!(PunchStrategy::from_name(s.as_str()), Some(*s));
        }
        for s in ZeroStrategy::CHAIN {
            assert_eq!(ZeroStrategy::from_name(s.as_str()), Some(*s));
        }
        for s in ShiftStrategy::CHAIN {
            assert_eq!(ShiftStrategy::from_name(s.as_str()), Some(*s));
        }
        assert_eq!(ShiftStrategy::from_name("auto"), Some(ShiftStrategy::Auto));
        assert_eq!(ShiftStrategy::from_name("bogus"), None);
    }

    #[test]
    fn whole_blocks_are_the_aligned_inside() {
        let r = Report {
            operation: Operation::Punch,
            strategy: PunchStrategy::PunchHole,
            fallbacks: vec![],
            offset: 100,
            length: 9000,
            block_size: 4096,
            size_before: 0,
            size_after: 0,
            allocated_before: 8192,
            allocated_after: 4096,
            bytes_written: 0,
        };
        assert_eq!(r.whole_blocks(), 4096..8192);
        assert_eq!(r.freed(), 4096);
        let small = Report {
            offset: 100,
            length: 200,
            ..r
        };
        assert!(small.whole_blocks().is_empty());
    }
}
