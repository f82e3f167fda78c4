//! What the caller can choose: [`CopyOptions`] and its enums.

use crate::interrupt::Interrupt;
use crate::report::Progress;
use sparsekit_extents::Method;
use std::fmt;
use std::sync::Arc;

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
        /// Keep the source's holes (and unwritten extents) as holes; copy
        /// data extents as they are, zeros included.
        #[default]
        Auto => "auto",
        /// Also turn all-zero blocks inside data extents into holes
        /// (destination block granularity). Needs the data in memory, so
        /// it implies the read/write strategy and no reflink.
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
        /// The first of `Direct`, `DontCache`, `Drop`, `Keep` that works on
        /// this side: each is probed with one small I/O before the copy,
        /// and an `EOPNOTSUPP` (or `EINVAL` for O_DIRECT) moves on.
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

/// A progress callback; see [`CopyOptions::progress`].
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Options for a copy; start from [`CopyOptions::new`], then
/// [`copy`](CopyOptions::copy) paths or [`copy_open`](CopyOptions::copy_open)
/// open files.
#[derive(Clone)]
pub struct CopyOptions {
    pub(crate) sparse: SparseMode,
    pub(crate) reflink: ReflinkMode,
    pub(crate) cache: CachePolicy,
    pub(crate) data: DataStrategy,
    pub(crate) holes: HoleMethod,
    pub(crate) staging: Staging,
    pub(crate) map_method: Method,
    pub(crate) sync: bool,
    pub(crate) verify: bool,
    pub(crate) buffer_size: usize,
    pub(crate) readers: usize,
    pub(crate) queue_depth: usize,
    pub(crate) progress: Option<ProgressFn>,
    pub(crate) interrupt: Option<Interrupt>,
    pub(crate) snapshot: bool,
    #[cfg(any(test, feature = "fault-injection"))]
    pub(crate) faults: crate::fault::Faults,
}

impl fmt::Debug for CopyOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CopyOptions")
            .field("sparse", &self.sparse)
            .field("reflink", &self.reflink)
            .field("cache", &self.cache)
            .field("data", &self.data)
            .field("holes", &self.holes)
            .field("staging", &self.staging)
            .field("map_method", &self.map_method)
            .field("sync", &self.sync)
            .field("verify", &self.verify)
            .field("buffer_size", &self.buffer_size)
            .field("readers", &self.readers)
            .field("queue_depth", &self.queue_depth)
            .field("progress", &self.progress.is_some())
            .field("interrupt", &self.interrupt)
            .field("snapshot", &self.snapshot)
            .finish_non_exhaustive()
    }
}

impl Default for CopyOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// Default request size: large enough that syscall and queue overhead
/// vanish next to the device time, small enough for a few in flight.
pub const DEFAULT_BUFFER_SIZE: usize = 2 << 20;

impl CopyOptions {
    /// Everything `Auto`, staging in the destination directory, fsync
    /// before success, 2 MiB requests, four readers, four buffers queued.
    pub fn new() -> Self {
        CopyOptions {
            sparse: SparseMode::Auto,
            reflink: ReflinkMode::Auto,
            cache: CachePolicy::Auto,
            data: DataStrategy::Auto,
            holes: HoleMethod::Auto,
            staging: Staging::Auto,
            map_method: Method::Auto,
            sync: true,
            verify: false,
            buffer_size: DEFAULT_BUFFER_SIZE,
            readers: 4,
            queue_depth: 4,
            progress: None,
            interrupt: None,
            snapshot: false,
            #[cfg(any(test, feature = "fault-injection"))]
            faults: crate::fault::Faults::default(),
        }
    }

    /// Copy from a snapshot of the source (default false): the source is
    /// first reflinked (`FICLONE`) into a nameless file in its own
    /// directory, and the copy reads that, so a file written meanwhile (a
    /// running VM's disk) is copied exactly as it was when the copy began,
    /// instead of failing with
    /// [`CopyError::SourceChanged`](crate::CopyError::SourceChanged). The
    /// snapshot shares all its extents with the source (no data copied,
    /// no space used until the source is written) and vanishes when the
    /// copy ends, however it ends. Where the filesystem cannot reflink the
    /// copy fails at once with
    /// [`CopyError::SnapshotUnsupported`](crate::CopyError::SnapshotUnsupported),
    /// before creating anything. Needs write access to the source's
    /// directory.
    pub fn snapshot(mut self, snapshot: bool) -> Self {
        self.snapshot = snapshot;
        self
    }

    /// Holes and zero blocks: see [`SparseMode`].
    pub fn sparse(mut self, mode: SparseMode) -> Self {
        self.sparse = mode;
        self
    }

    /// Extent sharing: see [`ReflinkMode`].
    pub fn reflink(mut self, mode: ReflinkMode) -> Self {
        self.reflink = mode;
        self
    }

    /// Page cache: see [`CachePolicy`]. A policy other than `Auto` is
    /// forced on both sides: if either cannot use it, the copy fails with
    /// [`CopyError::CacheUnsupported`](crate::CopyError::CacheUnsupported)
    /// before touching the destination.
    pub fn cache(mut self, policy: CachePolicy) -> Self {
        self.cache = policy;
        self
    }

    /// Data movement when no whole-file reflink happened: see [`DataStrategy`].
    pub fn data_strategy(mut self, strategy: DataStrategy) -> Self {
        self.data = strategy;
        self
    }

    /// Hole making in an existing destination: see [`HoleMethod`].
    pub fn hole_method(mut self, method: HoleMethod) -> Self {
        self.holes = method;
        self
    }

    /// Where a regular destination is written: see [`Staging`].
    pub fn staging(mut self, staging: Staging) -> Self {
        self.staging = staging;
        self
    }

    /// How the source is mapped (default `Auto`: SEEK_DATA/SEEK_HOLE first,
    /// so unwritten extents are holes).
    pub fn map_method(mut self, method: Method) -> Self {
        self.map_method = method;
        self
    }

    /// Whether to `fsync` the destination (and its directory) before
    /// reporting success (default true).
    pub fn sync(mut self, sync: bool) -> Self {
        self.sync = sync;
        self
    }

    /// After the copy and its fsync, read the destination back from the
    /// device (`O_DIRECT`, or buffered after dropping its pages) and
    /// compare it with the source the way [`compare`](crate::compare)
    /// does (default false). A mismatch is
    /// [`CopyError::VerifyMismatch`](crate::CopyError::VerifyMismatch),
    /// handled like any failure: a staged destination is never renamed
    /// into place (a new one does not appear, an existing one is left as
    /// it was), an in-place one loses what makes it look complete. With
    /// [`sync(false)`](Self::sync) the destination is still written back
    /// before it is read. The result is in
    /// [`CopyReport::verified`](crate::CopyReport::verified).
    pub fn verify(mut self, on: bool) -> Self {
        self.verify = on;
        self
    }

    /// Bytes per request and per pipeline buffer (rounded up to 64 KiB,
    /// at least 64 KiB; default [`DEFAULT_BUFFER_SIZE`]).
    pub fn buffer_size(mut self, bytes: usize) -> Self {
        self.buffer_size = bytes.max(64 << 10).next_multiple_of(64 << 10);
        self
    }

    /// Reader threads of the read/write pipeline (1–16, default 4: a
    /// loop or network device answers each request with some latency, so
    /// a few in flight keep it busy).
    pub fn readers(mut self, n: usize) -> Self {
        self.readers = n.clamp(1, 16);
        self
    }

    /// Filled buffers that may wait for the writer (1–64, default 4).
    pub fn queue_depth(mut self, n: usize) -> Self {
        self.queue_depth = n.clamp(1, 64);
        self
    }

    /// Calls `f` from the copying thread after each request with the data
    /// bytes done so far. Keep it cheap; rate-limit any drawing yourself.
    pub fn progress(mut self, f: impl Fn(&Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(f));
        self
    }

    /// Stops the copy soon after `interrupt` is triggered (by a signal
    /// handler, another thread…): it fails with
    /// [`CopyError::Interrupted`](crate::CopyError::Interrupted) and cleans
    /// up like any other failure.
    pub fn interrupt(mut self, interrupt: Interrupt) -> Self {
        self.interrupt = Some(interrupt);
        self
    }

    /// Cache policies a test pretends are unsupported.
    pub(crate) fn fake_unsupported_cache(&self) -> &[CachePolicy] {
        #[cfg(any(test, feature = "fault-injection"))]
        return &self.faults.unsupported_cache;
        #[cfg(not(any(test, feature = "fault-injection")))]
        return &[];
    }

    /// Reads fault hooks from `SPARSEKIT_TEST_FAULTS` (see
    /// `fault::Faults::parse`) when built with the `fault-injection`
    /// feature, as the CLI's own tests are; otherwise returns `self`
    /// unchanged, whatever the environment says.
    #[doc(hidden)]
    pub fn faults_from_env(self) -> Result<Self, String> {
        #[cfg(feature = "fault-injection")]
        if let Some(spec) = std::env::var_os("SPARSEKIT_TEST_FAULTS") {
            let spec = spec.to_string_lossy().into_owned();
            return Ok(self.faults(crate::fault::Faults::parse(&spec)?));
        }
        Ok(self)
    }

    /// Test hooks: make chosen I/O fail or slow down (feature
    /// `fault-injection`).
    #[cfg(any(test, feature = "fault-injection"))]
    #[doc(hidden)]
    pub fn faults(mut self, faults: crate::fault::Faults) -> Self {
        self.faults = faults;
        self
    }
}
