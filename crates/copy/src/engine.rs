//! The copy itself, between two open files: option checks, reflink,
//! cache-policy resolution, the passes (body, then header for in-place
//! destinations), sync, cache sweep and the report.

use crate::buffer::Pool;
use crate::cache::{
    self, Behaviour, DestCache, Residency, Side, SidePolicy, SourceCache, set_direct,
};
use crate::cfr::{CopyFileRange, Outcome};
use crate::endpoint::{Dest, DestSettings, Source};
use crate::error::CopyError;
use crate::interrupt::Interrupt;
use crate::modes::{CachePolicy, DataStrategy, ReflinkMode, SparseMode, Staging};
use crate::options::CopyOptions;
use crate::pipeline::Pipeline;
use crate::plan::{Planner, READ_THROUGH};
use crate::report::{CopyReport, DestinationKind, Fallback, PageCacheUse, Strategy};
use rustix::fd::{AsFd, BorrowedFd};
use rustix::fs::{FileType, Stat, fstat, fsync, ftruncate};
use rustix::io::Errno;
use sparsekit_extents::{ExtentKind, MapOptions, Method};
use std::fs::File;
use std::ops::Range;
use std::path::Path;
use std::time::Instant;

/// The region an in-place copy invalidates first and writes last, so an
/// interrupted copy never carries a valid partition table, superblock or
/// image header: a crash mid-copy leaves a device or file that does not
/// look like the source.
pub(crate) const HEADER: u64 = 1 << 20;

/// The largest `st_blksize` taken as the zero-detection granule; above it
/// the value is a transfer size (NFS), not an allocation unit.
const MAX_ZERO_GRANULE: u64 = 64 << 10;

/// The destination as the staging layer prepared it.
pub(crate) struct Target<'a> {
    pub(crate) file: &'a File,
    /// The name errors and the report use (the final name when staged).
    pub(crate) path: &'a Path,
    pub(crate) kind: DestinationKind,
    /// Never `Auto`.
    pub(crate) staging: Staging,
}

/// The parts of `fstat` that say whether a file changed.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    size: i64,
    mtime: (i64, i64),
}

// The stat field types differ between targets; the casts are no-ops on some.
#[allow(clippy::unnecessary_cast)]
fn fingerprint(st: &Stat) -> Fingerprint {
    Fingerprint {
        size: st.st_size as i64,
        mtime: (st.st_mtime as i64, st.st_mtime_nsec as i64),
    }
}

pub(crate) fn check_options(opts: &CopyOptions) -> Result<(), CopyError> {
    let bad = |m| Err(CopyError::InvalidOptions(m));
    if opts.data == DataStrategy::CopyFileRange {
        if opts.reflink == ReflinkMode::Never {
            return bad(
                "copy_file_range may share extents, so it cannot be forced with reflink never",
            );
        }
        if opts.sparse == SparseMode::Always {
            return bad("sparse always must see the data; use the read_write strategy");
        }
        if !Behaviour::of(opts.cache).buffered() {
            return bad("copy_file_range goes through the page cache; use cache keep or drop");
        }
    }
    if opts.reflink == ReflinkMode::Always && opts.sparse != SparseMode::Auto {
        return bad("a reflink keeps the source's blocks and holes as they are; use sparse auto");
    }
    if opts.reflink == ReflinkMode::Always && opts.data != DataStrategy::Auto {
        return bad("reflink always copies no data; leave the data strategy on auto");
    }
    Ok(())
}

/// Why `destination_is_zero` is refused for a new (or empty) file.
pub(crate) const ZERO_MEANS_NOTHING: &str = "destination is zero means nothing for a new or empty file, which has no old data to keep out; use it for a block device or an existing file copied in place";

/// Refuses `destination_is_zero` where the destination is new.
pub(crate) fn check_destination_is_zero(
    opts: &CopyOptions,
    kind: DestinationKind,
) -> Result<(), CopyError> {
    if opts.destination_is_zero && kind == DestinationKind::NewFile {
        return Err(CopyError::InvalidOptions(ZERO_MEANS_NOTHING));
    }
    Ok(())
}

/// Size of a regular file or block device.
pub(crate) fn file_size(fd: BorrowedFd<'_>, st: &Stat, path: &Path) -> Result<u64, CopyError> {
    if FileType::from_raw_mode(st.st_mode) == FileType::BlockDevice {
        sparsekit_sys::blkdev::blkgetsize64(fd).map_err(|errno| CopyError::Io {
            path: path.to_owned(),
            op: "ioctl(BLKGETSIZE64)",
            offset: None,
            errno,
        })
    } else {
        Ok(st.st_size as u64)
    }
}

/// Data bytes of `range` by a cheap map (SEEK_DATA or FIEMAP), or `None`
/// when only scanning could tell.
fn count_data(src: &File, method: Method, range: Range<u64>) -> Option<u64> {
    let map = MapOptions::new()
        .method(method)
        .range(range)
        .map(src)
        .ok()?;
    if !matches!(
        map.method(),
        Method::Seek | Method::Fiemap | Method::AllData
    ) {
        return None;
    }
    let mut total = 0;
    for e in map {
        let e = e.ok()?;
        if e.kind == ExtentKind::Data {
            total += e.length;
        }
    }
    Some(total)
}

/// Restores the O_DIRECT state of both descriptors however the copy ends
/// (they may belong to the caller).
struct FlagGuard<'a> {
    fds: [(BorrowedFd<'a>, bool); 2],
}

impl Drop for FlagGuard<'_> {
    fn drop(&mut self) {
        for (fd, direct) in self.fds {
            let _ = set_direct(fd, direct);
        }
    }
}

fn is_direct(fd: BorrowedFd<'_>) -> bool {
    rustix::fs::fcntl_getfl(fd).is_ok_and(|f| f.contains(rustix::fs::OFlags::DIRECT))
}

/// Copies `src` into `target`. For in-place targets a failure clears what
/// makes the destination look complete (see [`cleanup_in_place`]).
///
/// The phases, in order: [`Run::measure`] (sizes, the empty report),
/// [`Run::reflink`], [`Run::prepare_destination`],
/// [`Run::resolve_policies`], [`Run::passes`], [`Run::sweep`], then
/// [`Run::finish`] (fsync, the destination's pages) and the report
/// ([`Run::conclude`]).
pub(crate) fn copy(
    opts: &CopyOptions,
    src: &File,
    src_path: &Path,
    target: Target<'_>,
    fallbacks: Vec<Fallback>,
) -> Result<CopyReport, CopyError> {
    let started = Instant::now();
    check_options(opts)?;
    check_destination_is_zero(opts, target.kind)?;
    let (src_fd, dst_fd) = (src.as_fd(), target.file.as_fd());
    let _flags = FlagGuard {
        fds: [(src_fd, is_direct(src_fd)), (dst_fd, is_direct(dst_fd))],
    };
    let mut run = Run::measure(opts, src, src_path, &target, fallbacks)?;
    let result = run.transfer();
    let mut report = run.conclude(result)?;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// One copy between two open files: what its phases share.
struct Run<'a> {
    opts: &'a CopyOptions,
    src: &'a File,
    src_path: &'a Path,
    target: &'a Target<'a>,
    src_st: Stat,
    dst_st: Stat,
    /// The source's size (what the destination becomes).
    size: u64,
    /// Bytes of old content in the destination (0 for a new file).
    old_size: u64,
    /// Source bytes in the page cache before the copy.
    source_before: Option<u64>,
    report: CopyReport,
    fallbacks: Vec<Fallback>,
}

/// What [`Run::resolve_policies`] decided.
struct Policies {
    src: SidePolicy,
    dst: SidePolicy,
    /// Whether `copy_file_range` is tried first.
    cfr: bool,
}

impl<'a> Run<'a> {
    /// Phase 0: both files' stat, the sizes, a block device's room, and
    /// the report as it stands before anything moved.
    fn measure(
        opts: &'a CopyOptions,
        src: &'a File,
        src_path: &'a Path,
        target: &'a Target<'a>,
        fallbacks: Vec<Fallback>,
    ) -> Result<Self, CopyError> {
        let (src_fd, dst_fd) = (src.as_fd(), target.file.as_fd());
        let src_st = fstat(src_fd).map_err(|e| io(src_path, "fstat", e))?;
        let size = file_size(src_fd, &src_st, src_path)?;
        let dst_st = fstat(dst_fd).map_err(|e| io(target.path, "fstat", e))?;
        let old_size = match target.kind {
            DestinationKind::NewFile => 0,
            DestinationKind::ExistingFile => dst_st.st_size as u64,
            DestinationKind::BlockDevice => {
                let have = file_size(dst_fd, &dst_st, target.path)?;
                if have < size {
                    return Err(CopyError::DestinationTooSmall {
                        path: target.path.to_owned(),
                        have,
                        need: size,
                    });
                }
                have
            }
        };
        let report = CopyReport {
            strategy: Strategy::ReadWrite,
            cache_source: None,
            cache_destination: None,
            holes: None,
            staging: target.staging,
            destination: target.kind,
            map_method: opts.map_method,
            snapshot: opts.snapshot,
            size,
            bytes_copied: 0,
            bytes_skipped_as_holes: 0,
            zero_bytes_detected: 0,
            zero_detection: false,
            zero_bytes_written: 0,
            synced: false,
            elapsed: Default::default(),
            page_cache: None,
            fallbacks: Vec::new(),
            verified: None,
        };
        Ok(Run {
            opts,
            src,
            src_path,
            target,
            src_st,
            dst_st,
            size,
            old_size,
            source_before: cache::cached_bytes(src_fd, size),
            report,
            fallbacks,
        })
    }

    fn in_place(&self) -> bool {
        self.target.staging == Staging::InPlace
    }

    fn dst_fd(&self) -> BorrowedFd<'a> {
        self.target.file.as_fd()
    }

    /// Everything that moves data, in phase order.
    fn transfer(&mut self) -> Result<(), CopyError> {
        // A source whose size does not describe its content is read to its
        // end: no map, no reflink, no copy_file_range.
        if crate::stream::needed(self.src.as_fd(), &self.src_st).is_some() {
            return copy_streamed(
                self.opts,
                self.src.as_fd(),
                self.src_path,
                self.target,
                &mut self.report,
            );
        }
        if self.reflink()? {
            return self.finish(None);
        }
        let hot = self.residency_before()?;
        let mut dst = self.prepare_destination()?;
        let policies = self.resolve_policies()?;
        dst.set_cache(DestCache::new(policies.dst, self.opts.buffer_size));
        let source = Source {
            fd: self.src.as_fd(),
            path: self.src_path,
            size: self.size,
            cache: SourceCache::new(policies.src, hot),
        };
        let strategy = self.passes(&source, &mut dst, &policies)?;
        dst.finish()?;
        self.sweep(&source)?;
        let r = &mut self.report;
        r.strategy = strategy;
        r.cache_source = Some(source.cache.policy());
        r.cache_destination = Some(dst.cache().policy());
        r.holes = dst.hole_method();
        r.bytes_copied = dst.counts.copied;
        r.bytes_skipped_as_holes = dst.counts.skipped;
        r.zero_bytes_detected = dst.counts.detected;
        r.zero_detection = strategy == Strategy::ReadWrite && self.opts.sparse != SparseMode::Never;
        r.zero_bytes_written = dst.counts.zeros_written;
        self.fallbacks.append(&mut dst.fallbacks);
        self.finish(Some(dst.cache()))
    }

    /// Phase 1: a whole-file reflink, where it may apply. `Ok(true)`: the
    /// destination now shares the source's extents and the report says so.
    fn reflink(&mut self) -> Result<bool, CopyError> {
        let (opts, target) = (self.opts, self.target);
        let wanted = match opts.reflink {
            ReflinkMode::Never => false,
            ReflinkMode::Always => true,
            // A forced data strategy means "move the data that way".
            ReflinkMode::Auto => {
                opts.sparse == SparseMode::Auto
                    && opts.data == DataStrategy::Auto
                    && target.kind != DestinationKind::BlockDevice
            }
        };
        if !wanted {
            return Ok(false);
        }
        let dst_fd = self.dst_fd();
        if target.kind == DestinationKind::ExistingFile && self.old_size > self.size {
            // The copy truncates to the source's size anyway; doing it
            // first lets FICLONE replace the whole file.
            ftruncate(dst_fd, self.size).map_err(|e| io(target.path, "ftruncate", e))?;
            self.old_size = self.size;
        }
        match sparsekit_clone::clone_file(self.src.as_fd(), dst_fd) {
            Ok(()) => {
                let r = &mut self.report;
                r.strategy = Strategy::Reflink;
                r.map_method = Method::Seek;
                let data = count_data(self.src, Method::Seek, 0..self.size);
                r.bytes_copied = data.unwrap_or(self.size);
                r.bytes_skipped_as_holes = self.size - r.bytes_copied;
                Ok(true)
            }
            Err(sparsekit_clone::CloneError::Os { errno, .. }) => {
                Err(io(target.path, "ioctl(FICLONE)", errno))
            }
            // Unsupported, or a precondition of FICLONE not met (not a
            // regular file, …): reflink is not possible here.
            Err(e) => {
                let errno = e.errno().unwrap_or(Errno::INVAL);
                if opts.reflink == ReflinkMode::Always {
                    return Err(CopyError::ReflinkUnsupported {
                        src: self.src_path.to_owned(),
                        dst: target.path.to_owned(),
                        errno,
                    });
                }
                self.fallbacks.push(Fallback::new("reflink", errno));
                Ok(false)
            }
        }
    }

    /// Which source pages were cached before anything here read it: they
    /// stay, everything else this copy brings in goes (unless Keep). Taken
    /// only after the reflink, which reads nothing, and before the policy
    /// probes, which read.
    fn residency_before(&self) -> Result<Residency, CopyError> {
        if self.opts.cache == CachePolicy::Keep || self.source_before == Some(0) {
            return Ok(Residency::Known(Vec::new()));
        }
        // Its only error is the interrupt (an unknown residency is a value).
        Residency::snapshot(self.src.as_fd(), self.size, self.opts.interrupt.as_ref()).map_err(
            |_| CopyError::Interrupted {
                path: self.src_path.to_owned(),
            },
        )
    }

    /// Phase 2: the destination writer (buffered until the policies are
    /// resolved); an in-place destination loses its header first.
    fn prepare_destination(&self) -> Result<Dest<'a>, CopyError> {
        let (opts, target) = (self.opts, self.target);
        let dst_fd = self.dst_fd();
        let block = if target.kind == DestinationKind::BlockDevice {
            rustix::fs::ioctl_blksszget(dst_fd)
                .map(u64::from)
                .unwrap_or(512)
        } else {
            512
        };
        let mut dst = Dest::new(
            dst_fd,
            target.path,
            DestSettings {
                size: self.size,
                kind: target.kind,
                old_size: self.old_size,
                sparse: opts.sparse,
                holes: opts.holes,
                assume_zero: opts.destination_is_zero,
                block,
                buf_size: opts.buffer_size,
                interrupt: opts.interrupt.clone(),
            },
        );
        if self.in_place() {
            dst.clear(0..HEADER.min(self.old_size))?;
        }
        Ok(dst)
    }

    /// Phase 3: the data strategy and each side's cache policy (probed
    /// with one small I/O each; a new destination is truncated back).
    fn resolve_policies(&mut self) -> Result<Policies, CopyError> {
        let opts = self.opts;
        let cfr = match opts.data {
            DataStrategy::CopyFileRange => true,
            DataStrategy::ReadWrite => false,
            DataStrategy::Auto => {
                opts.reflink != ReflinkMode::Never
                    && opts.sparse != SparseMode::Always
                    // Asked for explicitly, and one the kernel's copy
                    // (through the page cache) can honour.
                    && opts.cache != CachePolicy::Auto
                    && Behaviour::of(opts.cache).buffered()
            }
        };
        let (src, dst) = if cfr {
            // Nothing to probe: the kernel's copy is buffered I/O.
            let p = if opts.cache == CachePolicy::Keep {
                SidePolicy::KEEP
            } else {
                SidePolicy::DROP
            };
            (p, p)
        } else {
            resolve_sides(
                opts,
                (self.src.as_fd(), self.src_path),
                (self.dst_fd(), self.target.path),
                self.size,
                &mut self.fallbacks,
            )?
        };
        if self.target.kind == DestinationKind::NewFile {
            // Undo the probe writes.
            ftruncate(self.dst_fd(), 0).map_err(|e| io(self.target.path, "ftruncate", e))?;
        }
        Ok(Policies { src, dst, cfr })
    }

    /// Phase 4: the size, then one pass over the whole file, or body then
    /// header (in place, so the header that makes it valid comes last).
    /// Returns the strategy that moved the data.
    fn passes(
        &mut self,
        source: &Source<'_>,
        dst: &mut Dest<'_>,
        policies: &Policies,
    ) -> Result<Strategy, CopyError> {
        let (opts, size) = (self.opts, self.size);
        if self.target.kind != DestinationKind::BlockDevice {
            ftruncate(self.dst_fd(), size).map_err(|e| io(self.target.path, "ftruncate", e))?;
        }
        let passes: Vec<Range<u64>> = if self.in_place() && size > HEADER {
            vec![HEADER..size, 0..HEADER]
        } else {
            std::iter::once(0..size).collect()
        };
        let data_total = match &opts.progress {
            Some(_) if opts.progress_total => {
                count_data(self.src, opts.map_method, 0..size).unwrap_or(size)
            }
            Some(_) => size,
            None => 0,
        };
        let align = policies.src.align.max(policies.dst.align);
        let pool = Pool::new(opts.readers + opts.queue_depth + 1, opts.buffer_size);
        let pipeline = Pipeline {
            readers: opts.readers,
            queue_depth: opts.queue_depth,
            zero_granule: self.zero_granule(align),
            eof: size,
            progress: opts.progress.as_ref(),
            data_total,
            interrupt: opts.interrupt.as_ref(),
        };
        let cfr = CopyFileRange {
            progress: opts.progress.as_ref(),
            data_total,
            interrupt: opts.interrupt.as_ref(),
        };
        let mut use_cfr = policies.cfr;
        let mut copied_any = false;
        let mut data_done = 0;
        for (i, range) in passes.into_iter().enumerate() {
            if i > 0 && opts.sync {
                // The body is durable before the header that makes it valid.
                dst.finish()?;
                fsync(self.dst_fd()).map_err(|e| io(self.target.path, "fsync", e))?;
            }
            if use_cfr {
                let planner = self.planner(range.clone(), 64 << 20, 1)?;
                match cfr.run(planner, source, dst, &mut copied_any, &mut data_done)? {
                    Outcome::Done => continue,
                    Outcome::Unsupported(errno) if opts.data == DataStrategy::Auto => {
                        self.fallbacks.push(Fallback::new("copy_file_range", errno));
                        use_cfr = false;
                    }
                    Outcome::Unsupported(errno) => {
                        return Err(CopyError::StrategyUnsupported {
                            src: self.src_path.to_owned(),
                            dst: self.target.path.to_owned(),
                            strategy: DataStrategy::CopyFileRange,
                            errno,
                        });
                    }
                }
            }
            let planner = self
                .planner(range, opts.buffer_size, align)?
                .read_through(READ_THROUGH);
            pipeline.run(planner, source, dst, &pool, &mut data_done)?;
        }
        Ok(if use_cfr {
            Strategy::CopyFileRange
        } else {
            Strategy::ReadWrite
        })
    }

    /// The zero-detection granule of the read/write pipeline (the
    /// destination's block, at least the O_DIRECT alignment): on in `auto`
    /// as in `always`, since the data passes through memory anyway (as
    /// qemu-img's default); 0 for `never`, which writes every byte.
    fn zero_granule(&self, align: u64) -> u64 {
        if self.opts.sparse == SparseMode::Never {
            return 0;
        }
        // st_blksize is the allocation unit of a local filesystem, but NFS
        // reports its transfer size there (wsize, 1 MiB): zero runs shorter
        // than that would be written and allocated on the server, whose
        // unit the client cannot see; 4 KiB is the common one.
        let blksize = (self.dst_st.st_blksize as u64).max(512);
        let g = if blksize.is_power_of_two() && blksize <= MAX_ZERO_GRANULE {
            blksize
        } else {
            4096
        };
        g.max(align)
    }

    /// A planner over the source's map of `range`; records the map method.
    fn planner(
        &mut self,
        range: Range<u64>,
        buf: usize,
        align: u64,
    ) -> Result<Planner<'a>, CopyError> {
        let map = MapOptions::new()
            .method(self.opts.map_method)
            .range(range)
            .map(self.src)
            .map_err(|e| CopyError::Map {
                path: self.src_path.to_owned(),
                source: e,
            })?;
        self.report.map_method = map.method();
        Ok(Planner::new(map, buf, align))
    }

    /// Phase 5: the source's page cache as it was. Readahead (ours, or
    /// started by other processes' reads, whose markers survive in the
    /// page cache) fills pages past the extents read, into the holes after
    /// them, which neither RWF_DONTCACHE nor the per-read fadvise covers
    /// (observed on ext4, 6.18): every source page that was not cached
    /// before goes, and those that were and got evicted are read back
    /// ([`SourceCache::sweep`]). Readahead itself stays on; turning it off
    /// (POSIX_FADV_RANDOM) cost 10-15 % in the bench.
    fn sweep(&self, source: &Source<'_>) -> Result<(), CopyError> {
        source
            .cache
            .sweep(self.src.as_fd(), self.size, false)
            .map_err(|e| io(self.src_path, "fcntl(F_SETFL)", e))
    }

    /// Phase 6: fsync (unless disabled) and the destination's pages.
    fn finish(&mut self, dst: Option<&DestCache>) -> Result<(), CopyError> {
        finish(self.opts, self.target, self.size, dst, &mut self.report)
    }

    /// The report, or the error after an in-place destination was made to
    /// look incomplete. A source that changed under the copy is an error.
    fn conclude(self, result: Result<(), CopyError>) -> Result<CopyReport, CopyError> {
        let Run {
            src,
            src_path,
            target,
            src_st,
            size,
            source_before,
            mut report,
            fallbacks,
            ..
        } = self;
        report.fallbacks = fallbacks;
        let in_place = target.staging == Staging::InPlace;
        let fail = |e| {
            if in_place {
                cleanup_in_place(target, size);
            }
            Err(e)
        };
        if let Err(e) = result {
            return fail(e);
        }
        let now = fstat(src).map_err(|e| io(src_path, "fstat", e))?;
        if fingerprint(&now) != fingerprint(&src_st) {
            return fail(CopyError::SourceChanged {
                path: src_path.to_owned(),
            });
        }
        report.page_cache = match (
            source_before,
            cache::cached_bytes(src.as_fd(), size),
            cache::cached_bytes(target.file.as_fd(), size),
        ) {
            (Some(source_before), Some(source_after), Some(destination_after)) => {
                Some(PageCacheUse {
                    source_before,
                    source_after,
                    destination_after,
                })
            }
            _ => None,
        };
        Ok(report)
    }
}

fn io(path: &Path, op: &'static str, errno: Errno) -> CopyError {
    CopyError::Io {
        path: path.to_owned(),
        op,
        offset: None,
        errno,
    }
}

/// [`crate::stream`]: the source read until EOF into the destination, then
/// the usual fsync. An existing destination is emptied first, so nothing
/// of it survives past the streamed end.
fn copy_streamed(
    opts: &CopyOptions,
    src_fd: BorrowedFd<'_>,
    src_path: &Path,
    target: &Target<'_>,
    report: &mut CopyReport,
) -> Result<(), CopyError> {
    // Neither applies to bytes that exist only when read.
    if opts.reflink == ReflinkMode::Always {
        return Err(CopyError::ReflinkUnsupported {
            src: src_path.to_owned(),
            dst: target.path.to_owned(),
            errno: Errno::OPNOTSUPP,
        });
    }
    if opts.data == DataStrategy::CopyFileRange {
        return Err(CopyError::StrategyUnsupported {
            src: src_path.to_owned(),
            dst: target.path.to_owned(),
            strategy: DataStrategy::CopyFileRange,
            errno: Errno::OPNOTSUPP,
        });
    }
    let dst_fd = target.file.as_fd();
    let truncate = |len| {
        ftruncate(dst_fd, len).map_err(|errno| CopyError::Io {
            path: target.path.to_owned(),
            op: "ftruncate",
            offset: None,
            errno,
        })
    };
    if target.kind == DestinationKind::ExistingFile {
        truncate(0)?;
    }
    let copied = crate::stream::copy(
        src_fd,
        src_path,
        dst_fd,
        target.path,
        opts.buffer_size,
        opts.interrupt.as_ref(),
    )?;
    if target.kind != DestinationKind::BlockDevice {
        truncate(copied)?;
    }
    report.strategy = Strategy::Stream;
    report.map_method = Method::AllData;
    report.size = copied;
    report.bytes_copied = copied;
    report.cache_source = Some(CachePolicy::Keep);
    report.cache_destination = Some(CachePolicy::Drop);
    // Written plainly; its pages go after the sync like `Drop`'s.
    let cache = DestCache::new(SidePolicy::DROP, opts.buffer_size);
    finish(opts, target, copied, Some(&cache), report)
}

fn resolve_sides(
    opts: &CopyOptions,
    (src_fd, src_path): (BorrowedFd<'_>, &Path),
    (dst_fd, dst_path): (BorrowedFd<'_>, &Path),
    size: u64,
    fallbacks: &mut Vec<Fallback>,
) -> Result<(SidePolicy, SidePolicy), CopyError> {
    let s = cache::resolve(opts.cache, Side::Source, src_fd, src_path, size, fallbacks)?;
    let d = cache::resolve(
        opts.cache,
        Side::Destination,
        dst_fd,
        dst_path,
        size,
        fallbacks,
    );
    match d {
        Ok(d) => Ok((s, d)),
        Err(e) => {
            let _ = set_direct(src_fd, false);
            Err(e)
        }
    }
}

/// fsync (unless disabled), then the destination's pages by its cache
/// behaviour (none after a reflink, which wrote nothing).
fn finish(
    opts: &CopyOptions,
    target: &Target<'_>,
    size: u64,
    dst: Option<&DestCache>,
    report: &mut CopyReport,
) -> Result<(), CopyError> {
    let fd = target.file.as_fd();
    if opts.sync {
        #[cfg(any(test, feature = "fault-injection"))]
        crate::fault::sync().map_err(|e| io(target.path, "fsync", e))?;
        fsync(fd).map_err(|e| io(target.path, "fsync", e))?;
        report.synced = true;
    }
    // A signal during the last writes or the fsync (which can take a
    // while) is honoured too: the destination is not published.
    if opts.interrupt.as_ref().is_some_and(Interrupt::is_triggered) {
        return Err(CopyError::Interrupted {
            path: target.path.to_owned(),
        });
    }
    if let Some(dst) = dst {
        dst.synced(fd, size);
    }
    Ok(())
}

/// After a failed in-place copy: a regular file is truncated to zero
/// length; a block device gets its first MiB zeroed again (it was zeroed
/// before the copy and is written last, but the failure may have come
/// while writing it).
pub(crate) fn cleanup_in_place(target: &Target<'_>, size: u64) {
    let fd = target.file.as_fd();
    match target.kind {
        DestinationKind::BlockDevice => {
            let len = HEADER.min(size.next_multiple_of(512));
            let _ = set_direct(fd, false);
            if sparsekit_sys::blkdev::blkzeroout(fd, 0, len).is_err() {
                let zeros = vec![0u8; len as usize];
                let _ = rustix::io::pwrite(fd, &zeros, 0);
            }
            let _ = fsync(fd);
        }
        _ => {
            let _ = ftruncate(fd, 0);
            let _ = fsync(fd);
        }
    }
}
