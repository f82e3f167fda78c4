//! Do two files (or block devices) hold the same bytes? Answered from both
//! extent maps, reading only what must be read, without filling the page
//! cache.
//!
//! # Brief overview
//! - [`CompareOptions`]: cache policy, allocation comparison, limit of
//!   ranges reported, request size, readers; then
//!   [`compare`](CompareOptions::compare) two paths or
//!   [`compare_open`](CompareOptions::compare_open) two open files.
//! - [`CompareReport`]: equal or not, the first differing offset, the
//!   differing ranges up to the limit, the [`AllocationReport`], and per
//!   side ([`SideReport`]) the map method, cache policy and bytes read.
//! - [`CompareError`]: what failed, naming the file, offset and errno.
//!
//! # How it compares
//! Both files are mapped (`sparsekit-extents`, `Method::Auto`, lazily: memory
//! stays constant in the number of extents) and the maps are walked
//! together:
//! - a range that is a hole (or unwritten) in **both** is skipped without
//!   reading: both read as zeros;
//! - a hole on one side against data on the other: only the data side is
//!   read, and checked with the zero detector;
//! - data against data: both are read and compared with `memcmp`.
//!
//! Reads are large (2 MiB by default), in file order on each side, A and B
//! at the same time (four reader threads per side by default), and go
//! through the copy's cache policy: [`CachePolicy::Auto`] is `O_DIRECT`,
//! else `RWF_DONTCACHE`, else buffered reads whose pages are dropped
//! afterwards (pages cached before stay cached), so comparing two disk
//! images leaves the page cache as it was. Holes shorter than 64 KiB between
//! data are read through (the kernel fills them with zeros without I/O),
//! so a fragmented file costs one request per 2 MiB, not one per extent.
//! Such requests (more than one extent per 64 KiB on average) are read
//! through the page cache even under `O_DIRECT`, whose one device read per
//! extent is slower there than readahead; their pages are dropped after
//! (pages cached before stay), and the report counts them.
//!
//! Files of different sizes are different; their common part is still
//! compared, for the first differing offset. The comparison stops once it
//! knows more differing ranges than the limit asks for (with a limit of 0,
//! at the first differing byte, as `cmp` does).
//!
//! # Example
//! ```
//! use sparsekit_copy::compare::CompareOptions;
//! use std::os::unix::fs::FileExt;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
//! for p in [&a, &b] {
//!     let f = std::fs::File::create(p)?;
//!     f.write_all_at(b"boot sector", 0)?;
//!     f.set_len(64 << 20)?;
//! }
//! std::fs::File::options().write(true).open(&b)?.write_all_at(b"X", 1 << 20)?;
//!
//! let report = CompareOptions::new().limit(10).compare(&a, &b)?;
//! assert!(!report.equal());
//! assert_eq!(report.first_difference, Some(1 << 20));
//! assert_eq!(report.differences.len(), 1);
//! # Ok(()) }
//! ```

mod diff;
pub(crate) mod error;
mod plan;
pub(crate) mod report;
mod run;

pub use error::CompareError;
pub use report::{
    AllocationDifference, AllocationReport, CompareReport, Difference, SideReport, Which,
};

use crate::buffer::mem_align;
use crate::cache::{self, Behaviour, Residency, Side, SidePolicy, SourceCache, set_direct};
use crate::endpoint::Source;
use crate::interrupt::Interrupt;
use crate::modes::CachePolicy;
use crate::report::Fallback;
use rustix::fd::{AsFd, BorrowedFd};
use rustix::fs::{FileType, Mode, OFlags, Stat, fstat, open};
use sparsekit_extents::{MapOptions, Method};
use std::fs::File;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

/// Differing bytes closer than this belong to one reported range.
pub const MERGE_GAP: u64 = 4096;

/// Options for a comparison; start from [`CompareOptions::new`].
#[derive(Clone, Debug)]
pub struct CompareOptions {
    pub(crate) cache: CachePolicy,
    /// Overrides `cache` for B (`copy --verify` reads the destination back
    /// with `Auto` whatever the copy used).
    pub(crate) cache_b: Option<CachePolicy>,
    /// Drop B's cached pages first, so its reads come from the device.
    pub(crate) fresh_b: bool,
    map_method: Method,
    allocation: bool,
    limit: usize,
    buffer_size: usize,
    readers: usize,
    interrupt: Option<Interrupt>,
}

/// Default request size of a compare: both files are read at once, and
/// more did not help there (readers 1–16 and requests 2–8 MiB all within
/// noise on the 4 GiB bench image).
const COMPARE_BUFFER_SIZE: usize = 2 << 20;

impl Default for CompareOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl CompareOptions {
    /// `CachePolicy::Auto`, `Method::Auto`, no allocation comparison, limit
    /// 0 (stop at the first differing byte), 2 MiB requests, four readers
    /// per side.
    pub fn new() -> Self {
        CompareOptions {
            cache: CachePolicy::Auto,
            cache_b: None,
            fresh_b: false,
            map_method: Method::Auto,
            allocation: false,
            limit: 0,
            buffer_size: COMPARE_BUFFER_SIZE,
            readers: 4,
            interrupt: None,
        }
    }

    /// Page cache policy of the reads, on both sides (see [`CachePolicy`];
    /// a forced policy that one side cannot use is
    /// [`CompareError::CacheUnsupported`]).
    pub fn cache(mut self, policy: CachePolicy) -> Self {
        self.cache = policy;
        self
    }

    /// How both files are mapped. `Auto` prefers FIEMAP when the
    /// allocation is compared (unwritten extents count as allocated),
    /// SEEK_DATA otherwise.
    pub fn map_method(mut self, method: Method) -> Self {
        self.map_method = method;
        self
    }

    /// Also compare the allocation: where one side has data or unwritten
    /// extents and the other a hole. A difference makes the files unequal
    /// ([`CompareReport::equal`]) even when their content is the same.
    pub fn allocation(mut self, on: bool) -> Self {
        self.allocation = on;
        self
    }

    /// Report at most `n` differing ranges (and `n` allocation
    /// differences); the content comparison stops once it knows there are
    /// more. With 0 (the default) it stops at the first differing byte and
    /// reports only [`first_difference`](CompareReport::first_difference).
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = n;
        self
    }

    /// Bytes per read request, per side (rounded up to 64 KiB, at least
    /// 64 KiB; default 2 MiB). Memory is `2 × (readers + 2) × size`.
    pub fn buffer_size(mut self, bytes: usize) -> Self {
        self.buffer_size = bytes.max(64 << 10).next_multiple_of(64 << 10);
        self
    }

    /// Reader threads per side (1–16, default 4): requests in flight on
    /// each file. One keeps each device's requests strictly in file order
    /// (what a loop device over a file reads ahead best); more help SSDs
    /// and network storage. On the bench's loop mounts, 1 and 4 were
    /// within the noise of each other.
    pub fn readers(mut self, n: usize) -> Self {
        self.readers = n.clamp(1, 16);
        self
    }

    /// Stops soon after `interrupt` is triggered, with
    /// [`CompareError::Interrupted`].
    pub fn interrupt(mut self, interrupt: Interrupt) -> Self {
        self.interrupt = Some(interrupt);
        self
    }

    /// Compares the files or block devices at `a` and `b` (opened
    /// read-only; never written).
    pub fn compare(
        &self,
        a: impl AsRef<Path>,
        b: impl AsRef<Path>,
    ) -> Result<CompareReport, CompareError> {
        let (a, b) = (a.as_ref(), b.as_ref());
        let fa = open_read(a)?;
        let fb = open_read(b)?;
        self.compare_open(&fa, a, &fb, b)
    }

    /// Compares two open files. Their `O_DIRECT` flags are restored before
    /// returning; the paths only name them in errors.
    pub fn compare_open(
        &self,
        a: &File,
        a_path: impl AsRef<Path>,
        b: &File,
        b_path: impl AsRef<Path>,
    ) -> Result<CompareReport, CompareError> {
        compare_files(self, a, a_path.as_ref(), b, b_path.as_ref())
    }
}

fn open_read(path: &Path) -> Result<File, CompareError> {
    crate::staging::open_read(path).map_err(|(op, errno)| CompareError::Io {
        path: path.to_owned(),
        op,
        offset: None,
        errno,
    })
}

/// Restores the O_DIRECT state of both descriptors however the
/// comparison ends (they may belong to the caller).
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
    rustix::fs::fcntl_getfl(fd).is_ok_and(|f| f.contains(OFlags::DIRECT))
}

/// What `fstat` says about whether a file changed: size and modification
/// time (what the copy checks of its source too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fingerprint {
    size: i64,
    mtime: (i64, i64),
}

impl Fingerprint {
    #[allow(clippy::unnecessary_cast)] // the field types differ per target
    fn of(st: &Stat) -> Self {
        Fingerprint {
            size: st.st_size as i64,
            mtime: (st.st_mtime as i64, st.st_mtime_nsec as i64),
        }
    }
}

/// Whether a side's answer describes one state of its file: the same size
/// and modification time after the comparison as before it, and a map that
/// saw no size change while it was walked (a file shrunk and regrown with
/// its mtime set back by `utimensat` still shows there).
fn unchanged(before: Fingerprint, after: Fingerprint, map_saw_size: Option<u64>) -> bool {
    before == after && map_saw_size.is_none()
}

/// Renames the copy's per-side fallback labels for A and B.
fn side_label(from: &'static str, which: Which) -> &'static str {
    match (from, which) {
        ("cache direct (source)", Which::A) => "cache direct (a)",
        ("cache direct (source)", Which::B) => "cache direct (b)",
        ("cache dontcache (source)", Which::A) => "cache dontcache (a)",
        ("cache dontcache (source)", Which::B) => "cache dontcache (b)",
        (other, _) => other,
    }
}

/// One side, opened and resolved.
struct Prepared {
    size: u64,
    allocated: u64,
    policy: SidePolicy,
    hot: Residency,
    stat: Stat,
}

fn prepare(
    opts: &CompareOptions,
    which: Which,
    fd: BorrowedFd<'_>,
    path: &Path,
    fallbacks: &mut Vec<Fallback>,
) -> Result<Prepared, CompareError> {
    let io = |op, errno| CompareError::Io {
        path: path.to_owned(),
        op,
        offset: None,
        errno,
    };
    let stat = fstat(fd).map_err(|e| io("fstat", e))?;
    let ft = FileType::from_raw_mode(stat.st_mode);
    if !matches!(ft, FileType::RegularFile | FileType::BlockDevice) {
        return Err(CompareError::NotComparable {
            path: path.to_owned(),
            kind: sparsekit_sys::file_type_name(ft),
        });
    }
    if let Some(reason) = crate::stream::needed(fd, &stat) {
        // Its size says nothing of its content (a /proc file says 0): a
        // comparison by size and extent map would be a wrong answer.
        return Err(CompareError::NotComparable {
            path: path.to_owned(),
            kind: match reason {
                crate::stream::Reason::PseudoFilesystem(_) => {
                    "file of a pseudo filesystem (its size is not its content)"
                }
                crate::stream::Reason::EmptyButReadable => {
                    "file whose size is 0 although it reads bytes"
                }
            },
        });
    }
    let size = crate::engine::file_size(fd, &stat, path)?;
    let fresh = which == Which::B && opts.fresh_b;
    if fresh {
        // Read what the device holds: written-back pages go, so even the
        // buffered fallbacks read from the device.
        cache::drop_all(fd, 0..size);
    }
    let requested = match which {
        Which::B => opts.cache_b.unwrap_or(opts.cache),
        Which::A => opts.cache,
    };
    let mut own = Vec::new();
    let policy = cache::resolve(requested, Side::Source, fd, path, size, &mut own)?;
    fallbacks.extend(
        own.into_iter()
            .map(|f| Fallback::new(side_label(f.strategy, which), f.errno)),
    );
    // Pages cached before the comparison stay; the rest it brings in goes.
    // (O_DIRECT reads too: they evict pages on some filesystems, observed
    // on compressed btrfs, and those are read back at the end.)
    let hot = match policy.policy {
        CachePolicy::Keep => Residency::Known(Vec::new()),
        _ if fresh || cache::cached_bytes(fd, size) == Some(0) => Residency::Known(Vec::new()),
        // No interrupt flag here, so only `Unknown` can come back: then
        // nothing is known to have been hot, and nothing is dropped.
        _ => Residency::snapshot(fd, size, None).unwrap_or(Residency::Unknown),
    };
    Ok(Prepared {
        size,
        allocated: (stat.st_blocks as u64).saturating_mul(512),
        policy,
        hot,
        stat,
    })
}

pub(crate) fn compare_files(
    opts: &CompareOptions,
    a: &File,
    a_path: &Path,
    b: &File,
    b_path: &Path,
) -> Result<CompareReport, CompareError> {
    let started = Instant::now();
    let (fa, fb) = (a.as_fd(), b.as_fd());
    let _flags = FlagGuard {
        fds: [(fa, is_direct(fa)), (fb, is_direct(fb))],
    };
    let mut fallbacks = Vec::new();
    let pa = prepare(opts, Which::A, fa, a_path, &mut fallbacks)?;
    let pb = prepare(opts, Which::B, fb, b_path, &mut fallbacks)?;
    let common = pa.size.min(pb.size);
    let (ma, mb) = (
        map_one(opts, a, a_path, common)?,
        map_one(opts, b, b_path, common)?,
    );
    let methods = (ma.method(), mb.method());
    let align = pa.policy.align.max(pb.policy.align);
    let chunk = (opts.buffer_size as u64).next_multiple_of(align.max(mem_align() as u64));
    let allocation = opts.allocation.then(|| plan::Allocation::new(opts.limit));
    let planner = Mutex::new(plan::Planner::new(
        plan::Merge::new(ma, mb, common),
        chunk,
        align,
        allocation,
    ));
    let (ka, kb) = (reopen(fa, &pa), reopen(fb, &pb));
    let ra = reader(fa, a_path, &pa, ka.as_ref());
    let rb = reader(fb, b_path, &pb, kb.as_ref());
    let run = run::Run {
        readers: opts.readers,
        chunk: chunk as usize,
        max_runs: opts.limit.saturating_add(1),
        interrupt: opts.interrupt.as_ref(),
    };
    let result = run.run(&planner, &ra, &rb);
    // Whatever the outcome: drop what readahead brought into the holes,
    // and read back pages that were hot before but got evicted.
    for (r, p) in [(&ra, &pa), (&rb, &pb)] {
        let _ = r.main.cache.sweep(r.main.fd, p.size, r.buffered.is_some());
    }
    let found = result?;
    let mut planner = planner.into_inner().unwrap_or_else(|e| e.into_inner());
    if found.stopped_early {
        planner
            .drain()
            .map_err(|(which, source)| CompareError::Map {
                path: match which {
                    Which::A => a_path,
                    Which::B => b_path,
                }
                .to_owned(),
                source,
            })?;
    }
    check_unchanged(&planner, [(fa, a_path, &pa), (fb, b_path, &pb)])?;
    let mut report = summarize(opts, [&pa, &pb], methods, &found, planner, common);
    report.fallbacks = fallbacks;
    report.elapsed = started.elapsed();
    Ok(report)
}

fn map_one<'f>(
    opts: &CompareOptions,
    f: &'f File,
    path: &Path,
    common: u64,
) -> Result<sparsekit_extents::ExtentMap<'f>, CompareError> {
    MapOptions::new()
        .method(opts.map_method)
        .prefer_fiemap(opts.allocation)
        .range(0..common)
        .map(f)
        .map_err(|source| CompareError::Map {
            path: path.to_owned(),
            source,
        })
}

/// Fragmented requests go through a second, buffered descriptor when the
/// first is O_DIRECT (see `run::Reader`).
fn reopen(fd: BorrowedFd<'_>, p: &Prepared) -> Option<File> {
    if !Behaviour::of(p.policy.policy).direct {
        return None;
    }
    let proc_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
    open(
        proc_path.as_str(),
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
    .ok()
    .map(File::from)
}

/// A side's readers: its resolved policy, and (with `buffered`) a second,
/// buffered descriptor whose pages go after each read (`Drop`).
fn reader<'f>(
    fd: BorrowedFd<'f>,
    path: &'f Path,
    p: &Prepared,
    buffered: Option<&'f File>,
) -> run::Reader<'f> {
    run::Reader {
        main: Source {
            fd,
            path,
            size: p.size,
            cache: SourceCache::new(p.policy, p.hot.clone()),
        },
        buffered: buffered.map(|f| Source {
            fd: f.as_fd(),
            path,
            size: p.size,
            cache: SourceCache::new(SidePolicy::DROP, p.hot.clone()),
        }),
    }
}

/// A file that changed meanwhile makes the answer meaningless.
fn check_unchanged(
    planner: &plan::Planner<'_>,
    sides: [(BorrowedFd<'_>, &Path, &Prepared); 2],
) -> Result<(), CompareError> {
    let (ma, mb) = planner.merge().maps();
    for ((fd, path, p), map) in sides.into_iter().zip([ma, mb]) {
        let now = fstat(fd).map_err(|errno| CompareError::Io {
            path: path.to_owned(),
            op: "fstat",
            offset: None,
            errno,
        })?;
        if !unchanged(
            Fingerprint::of(&p.stat),
            Fingerprint::of(&now),
            map.size_changed(),
        ) {
            return Err(CompareError::Changed {
                path: path.to_owned(),
            });
        }
    }
    Ok(())
}

/// Whether `method` shows where `p` is allocated: SEEK_HOLE and FIEMAP do;
/// `scan` finds zeros, and `all_data` nothing, which is the truth only for
/// a block device (every block is there).
fn allocation_seen(p: &Prepared, method: Method) -> bool {
    match method {
        Method::Seek | Method::Fiemap => true,
        Method::AllData => FileType::from_raw_mode(p.stat.st_mode) == FileType::BlockDevice,
        _ => false,
    }
}

/// The report of a finished comparison (fallbacks and time set by the
/// caller).
fn summarize(
    opts: &CompareOptions,
    [pa, pb]: [&Prepared; 2],
    methods: (Method, Method),
    found: &run::Found,
    planner: plan::Planner<'_>,
    common: u64,
) -> CompareReport {
    let runs = &found.runs.runs;
    let first_difference = runs
        .first()
        .map(|r| r.start)
        .or((pa.size != pb.size).then_some(common));
    let differences: Vec<Difference> = runs
        .iter()
        .take(opts.limit)
        .map(|r| Difference {
            offset: r.start,
            length: r.end - r.start,
        })
        .collect();
    CompareReport {
        a: SideReport {
            size: pa.size,
            allocated: pa.allocated,
            map_method: methods.0,
            cache: pa.policy.policy,
            bytes_read: found.read_a,
            bytes_read_buffered: found.buffered_a,
        },
        b: SideReport {
            size: pb.size,
            allocated: pb.allocated,
            map_method: methods.1,
            cache: pb.policy.policy,
            bytes_read: found.read_b,
            bytes_read_buffered: found.buffered_b,
        },
        content_equal: runs.is_empty(),
        first_difference,
        differences_truncated: runs.len() > opts.limit,
        differences,
        allocation: planner.allocation.map(|a| AllocationReport {
            unobserved: [(Which::A, pa, methods.0), (Which::B, pb, methods.1)]
                .into_iter()
                .filter(|(_, p, m)| !allocation_seen(p, *m))
                .map(|(which, ..)| which)
                .collect(),
            ..a.report
        }),
        bytes_compared: common,
        bytes_skipped: planner.skipped,
        elapsed: Default::default(),
        fallbacks: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each of the three signs of a change alone makes the answer void
    /// (the tests in `tests/compare.rs` and the CLI's reach the first two
    /// with real writers; a size change undone with the mtime set back
    /// cannot be staged without racing the map).
    #[test]
    fn any_sign_of_a_change_voids_the_answer() {
        let before = Fingerprint {
            size: 1 << 20,
            mtime: (1_700_000_000, 5),
        };
        assert!(unchanged(before, before, None));
        let grown = Fingerprint {
            size: 2 << 20,
            ..before
        };
        assert!(!unchanged(before, grown, None));
        let touched = Fingerprint {
            mtime: (1_700_000_000, 6),
            ..before
        };
        assert!(!unchanged(before, touched, None));
        assert!(!unchanged(before, before, Some(4096)));
    }
}
