//! What the caller can choose: [`CopyOptions`] (its enums are in
//! [`modes`](crate::modes)).

use crate::interrupt::Interrupt;
use crate::modes::{CachePolicy, DataStrategy, HoleMethod, ReflinkMode, SparseMode, Staging};
use crate::report::Progress;
use sparsekit_extents::Method;
use std::fmt;
use std::sync::Arc;

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
    pub(crate) progress_total: bool,
    pub(crate) interrupt: Option<Interrupt>,
    pub(crate) snapshot: bool,
    pub(crate) destination_is_zero: bool,
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
            .field("progress_total", &self.progress_total)
            .field("interrupt", &self.interrupt)
            .field("snapshot", &self.snapshot)
            .field("destination_is_zero", &self.destination_is_zero)
            .finish_non_exhaustive()
    }
}

impl Default for CopyOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// Default request size of a copy: large enough that syscall and queue
/// overhead vanish next to the device time, small enough for many in
/// flight within the memory bound.
///
/// What the device gets in flight decides the speed of large extents:
/// measured ext4 → xfs on loop devices with direct I/O (2 GiB of data in
/// 4–64 MiB runs, five rotating rounds, each synced), 2 MiB × 4 readers
/// × 4 queued took 2.73 s (median), 4 MiB × 8 readers × 2 queued 2.24 s,
/// 4 MiB × 8 × 4 2.45 s, 4 MiB × 12 × 2 2.43 s; `qemu-img convert -t none
/// -T none` 3.18 s. 8 MiB × 8 × 8 was faster still (1.9 s) but holds
/// 136 MiB of buffers, over the 64 MiB a copy may use (issue #16).
pub const DEFAULT_BUFFER_SIZE: usize = 4 << 20;

/// Default reader threads and buffers queued for the writer: with
/// [`DEFAULT_BUFFER_SIZE`], 11 buffers (readers + queue + the writer's),
/// 44 MiB.
const DEFAULT_READERS: usize = 8;
const DEFAULT_QUEUE_DEPTH: usize = 2;

impl CopyOptions {
    /// Everything `Auto`, staging in the destination directory, fsync
    /// before success, 4 MiB requests, eight readers, two buffers queued.
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
            readers: DEFAULT_READERS,
            queue_depth: DEFAULT_QUEUE_DEPTH,
            progress: None,
            progress_total: true,
            interrupt: None,
            snapshot: false,
            destination_is_zero: false,
        }
    }

    /// The caller vouches that the destination already reads as zeros
    /// (default false), as nbdcopy's `--destination-is-zero` and
    /// `qemu-img convert --target-is-zero`: the source's holes (and, when
    /// detected, its zero blocks) are skipped instead of punched, zeroed
    /// or discarded on a block device or an existing file written in
    /// place. Refused with [`CopyError::InvalidOptions`](crate::CopyError::InvalidOptions)
    /// for a new or empty file (a staged replacement included), where it
    /// means nothing. [`SparseMode::Never`](crate::SparseMode::Never)
    /// still writes every zero.
    pub fn destination_is_zero(mut self, yes: bool) -> Self {
        self.destination_is_zero = yes;
        self
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

    /// Reader threads of the read/write pipeline (1–16, default 8: a
    /// device answers each request with some latency, so several in
    /// flight keep it busy).
    pub fn readers(mut self, n: usize) -> Self {
        self.readers = n.clamp(1, 16);
        self
    }

    /// Filled buffers that may wait for the writer (1–64, default 2).
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

    /// Whether [`Progress::data_total`] counts the source's data before the
    /// copy starts (default `true`): a walk of its extent map, one
    /// `SEEK_DATA`/`SEEK_HOLE` pair per extent, a few seconds on an image
    /// of a million extents. With `false` it is the source's size: for a
    /// callback that only wants to know that the copy moves (a watchdog),
    /// not how far it is.
    pub fn progress_total(mut self, count: bool) -> Self {
        self.progress_total = count;
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
}
