//! The caller's choices, one enum each: [`SparseMode`], [`ReflinkMode`],
//! [`CachePolicy`], [`DataStrategy`], [`HoleMethod`], [`Staging`]. A leaf
//! module: the options, the report, the errors and the test seam all name
//! them, and it names none of them.

use std::fmt;

macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
        #[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// The lowercase name used on the command line and in JSON.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
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

named_enum! {
    /// What becomes of the source's holes and zero blocks.
    SparseMode {
        /// Keep the source's holes (and unwritten extents) as holes, and
        /// turn all-zero blocks inside data extents into holes wherever the
        /// data passes through memory anyway (the read/write pipeline, as
        /// qemu-img's default). A reflink or `copy_file_range`, which move
        /// data without reading it, keep written zeros as data
        /// ([`CopyReport::zero_detection`](crate::CopyReport::zero_detection)
        /// says which happened).
        #[default]
        Auto => "auto",
        /// Turn all-zero blocks inside data extents into holes
        /// (destination block granularity) whatever it costs: needs the
        /// data in memory, so it implies the read/write strategy and no
        /// reflink.
        Always => "always",
        /// Write every byte: holes become written zeros, the destination
        /// is fully allocated. Excludes reflink.
        Never => "never",
    }
}

named_enum! {
    /// Whether the destination may share extents with the source.
    ReflinkMode {
        /// Try a whole-file `FICLONE` first; copy data when it is unsupported.
        #[default]
        Auto => "auto",
        /// `FICLONE` or fail with [`CopyError::ReflinkUnsupported`](crate::CopyError::ReflinkUnsupported).
        Always => "always",
        /// Never share: no `FICLONE`, and no `copy_file_range` either, since
        /// xfs and btrfs implement it by sharing extents.
        Never => "never",
    }
}

named_enum! {
    /// How the copy treats the page cache. Each side (source reads,
    /// destination writes) resolves it separately, and the report says what
    /// each used.
    CachePolicy {
        /// For the source, the first of `Direct`, `DontCache`, `Drop`,
        /// `Keep` that works: each is probed with one small I/O before the
        /// copy, and an `EOPNOTSUPP` (or `EINVAL` for O_DIRECT) moves on.
        /// For the destination, `Drop` (write-behind queues more writes
        /// than one writer's O_DIRECT writes, and leaves nothing cached
        /// either).
        #[default]
        Auto => "auto",
        /// Plain buffered I/O: everything copied stays cached until the
        /// kernel needs the memory.
        Keep => "keep",
        /// Buffered I/O, then `sync_file_range` windows a few MiB behind the
        /// write head and `POSIX_FADV_DONTNEED` (the technique of nbdcopy);
        /// source pages the copy brought in are dropped after reading,
        /// pages that were cached before are left alone.
        Drop => "drop",
        /// `O_DIRECT` with the alignment from `statx(STATX_DIOALIGN)` (Linux
        /// 6.1; `st_blksize` when not reported); unaligned heads and tails
        /// are widened to aligned blocks read from the source, the final
        /// partial block is padded and the size set with `ftruncate`.
        Direct => "direct",
        /// `preadv2`/`pwritev2` with `RWF_DONTCACHE` (Linux 6.14, per
        /// filesystem): buffered I/O whose pages the kernel drops once done.
        DontCache => "dontcache",
    }
}

named_enum! {
    /// How data extents are moved. Forcing one (anything but `Auto`) also
    /// skips the whole-file reflink of [`ReflinkMode::Auto`].
    DataStrategy {
        /// `ReadWrite`, except with [`CachePolicy::Keep`] or
        /// [`CachePolicy::Drop`] asked for explicitly, when
        /// `copy_file_range` is tried first (the kernel's splice path fills
        /// the page cache, so it cannot honour `DontCache` or `Direct`).
        #[default]
        Auto => "auto",
        /// `copy_file_range(2)` per data extent, in the kernel. Falls back to
        /// `ReadWrite` only under `Auto` and only before anything was
        /// copied (`EXDEV`, `EOPNOTSUPP`, `ENOSYS`, `EINVAL`…); an
        /// `EOVERFLOW` later copies that piece with read/write.
        CopyFileRange => "copy_file_range",
        /// A pipeline of reader threads and a writer with MiB-sized
        /// buffers; the only strategy that sees the bytes (zero detection,
        /// every cache policy).
        ReadWrite => "read_write",
    }
}

named_enum! {
    /// How the source's holes are made in a destination that may hold old
    /// data (an existing file written in place, a block device). A fresh
    /// destination file needs nothing: its holes are skipped.
    HoleMethod {
        /// Regular file: `Punch` → `ZeroRange` → `WriteZeros`; block device:
        /// `Discard` (only once seen to zero) → `Punch` → `ZeroOut` →
        /// `WriteZeros`.
        #[default]
        Auto => "auto",
        /// `fallocate(PUNCH_HOLE | KEEP_SIZE)`: frees the blocks (on a block
        /// device: WRITE ZEROES with unmap, only where zeros are guaranteed).
        Punch => "punch",
        /// `fallocate(ZERO_RANGE | KEEP_SIZE)`: unwritten, reads as zeros.
        ZeroRange => "zero_range",
        /// `ioctl(BLKZEROOUT)` on a block device: zeros, blocks stay allocated.
        ZeroOut => "zero_out",
        /// Write zeros.
        WriteZeros => "write_zeros",
        /// `ioctl(BLKDISCARD)` on a block device, used only after a trial
        /// showed that discarded blocks read back as zeros here (and each
        /// discarded range is checked again); pieces under the discard
        /// granularity are written with zeros.
        Discard => "discard",
    }
}

named_enum! {
    /// Where a regular destination is written, which decides what a failure
    /// leaves behind.
    Staging {
        /// `Unnamed` where the filesystem has `O_TMPFILE`, else `Named`.
        #[default]
        Auto => "auto",
        /// An `O_TMPFILE` inode in the destination's directory, linked and
        /// renamed over the destination only after success (and fsync). A
        /// failure, a signal or even `SIGKILL` leaves nothing.
        Unnamed => "o_tmpfile",
        /// A hidden `.NAME.sparsekit-PID-N.tmp` file next to the destination,
        /// renamed over it after success and removed on failure. Only
        /// `SIGKILL` or a crash can leave it behind, under its temporary name.
        Named => "named_temp",
        /// Write into the existing destination (keeps its inode, owner and
        /// hard links); always used for block devices. Its first MiB is
        /// invalidated first and written last, and a failed copy truncates
        /// a regular file to zero length, so it never looks complete.
        InPlace => "in_place",
    }
}
