//! [`dig_holes`]: find all-zero blocks inside data extents and punch them.

use crate::direct::{AlignedBuf, DirectMode};
use crate::exclusive::Exclusion;
use crate::file::{Target, align_down, align_up, retry};
use crate::punch::PUNCH;
use crate::{Operation, PunchError};
use rustix::fd::{AsFd, BorrowedFd};
use rustix::fs::{Advice, fadvise};
use rustix::io::Errno;
use sparsekit_extents::{
    Degraded, Extent, ExtentKind, ExtentMap, Fallback, MapError, MapOptions, Method, zero_runs,
};
use std::num::NonZeroU64;
use std::ops::Range;

/// Bytes read per `pread` by default: measured against 1 and 8 MiB on an
/// ext4 loop mount (issue #16), 4 MiB direct reads were the fastest.
const DIG_CHUNK: u64 = 4 << 20;
/// Memory alignment of the read buffer: `O_DIRECT` needs at most a page.
const BUF_ALIGN: usize = 4096;
/// Bytes requested with `POSIX_FADV_WILLNEED` ahead of the chunk being read.
const PREFETCH: u64 = 4 << 20;

/// Options for [`dig_holes`]; start from [`DigOptions::new`].
#[derive(Clone, Debug)]
pub struct DigOptions {
    min_hole: u64,
    dry_run: bool,
    method: Method,
    drop_cache: bool,
    range: Option<Range<u64>>,
    chunk: u64,
}

impl Default for DigOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl DigOptions {
    /// Whole file, holes of one block or more, `Method::Auto`, page cache
    /// kept out (`O_DIRECT`, else dropped as it goes), 4 MiB reads, for real.
    pub fn new() -> Self {
        DigOptions {
            min_hole: 0,
            dry_run: false,
            method: Method::Auto,
            drop_cache: true,
            range: None,
            chunk: DIG_CHUNK,
        }
    }

    /// The smallest hole worth making, rounded up to whole blocks (0, the
    /// default, means one block). A zero run counts together with the holes
    /// it touches, so a short run that widens an existing hole is punched.
    pub fn min_hole(mut self, bytes: u64) -> Self {
        self.min_hole = bytes;
        self
    }

    /// Report what would be punched without changing anything (the
    /// descriptor may then be read-only).
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// How the data extents are found: `Auto` (SEEK_DATA, else FIEMAP, else
    /// read everything), `Seek`, `Fiemap`, or `AllData` (read the whole
    /// range). `Scan` is refused: it reports zero blocks as holes, the very
    /// blocks dig must find.
    pub fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    /// Whether to keep the pages dig reads out of the page cache (default
    /// true): the file is read with `O_DIRECT` where the filesystem has it
    /// (switched on for the descriptor with `fcntl(F_SETFL)` and off again
    /// at the end); elsewhere, or when a direct read is refused, it is read
    /// with readahead off
    /// (`POSIX_FADV_RANDOM`, restored to `POSIX_FADV_NORMAL` at the end),
    /// the next chunk is requested with `POSIX_FADV_WILLNEED`, and each
    /// chunk read is dropped with `POSIX_FADV_DONTNEED`.
    pub fn drop_cache(mut self, drop: bool) -> Self {
        self.drop_cache = drop;
        self
    }

    /// Dig only the whole blocks inside `range` (clipped to the file).
    pub fn range(mut self, range: Range<u64>) -> Self {
        self.range = Some(range);
        self
    }

    /// Bytes per read (rounded down to whole blocks, at least one; default 4 MiB).
    pub fn chunk_size(mut self, bytes: u64) -> Self {
        self.chunk = bytes;
        self
    }

    /// Digs `fd`; see [`dig_holes`].
    pub fn dig<Fd: AsFd>(&self, fd: &Fd) -> Result<Dug, PunchError> {
        dig_holes(fd, self)
    }

    /// Digs `fd`, checking `guard` before every punch; see
    /// [`dig_holes_excluding`].
    pub fn dig_excluding<Fd: AsFd>(
        &self,
        fd: &Fd,
        guard: &dyn Exclusion,
    ) -> Result<Dug, PunchError> {
        dig_holes_excluding(fd, self, guard)
    }
}

/// What happened to the page cache during a dig.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheOutcome {
    /// Read with `O_DIRECT`: nothing entered the page cache.
    Direct,
    /// Every chunk read was dropped with `POSIX_FADV_DONTNEED`.
    Dropped,
    /// [`DigOptions::drop_cache`] was off.
    Kept,
    /// `posix_fadvise` failed with this errno; the pages were left.
    Failed(Errno),
}

/// What [`dig_holes`] did (or, in a dry run, would do).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Dug {
    /// How the data extents were found (never `Auto`).
    pub method: Method,
    /// The methods `Auto` left as unsupported, and their errno.
    pub fallbacks: Vec<Fallback>,
    /// The degraded answer `Auto` left behind (a SEEK_HOLE that calls a
    /// sparse file all data), if it met one.
    pub degraded: Option<Degraded>,
    /// Nothing was changed.
    pub dry_run: bool,
    /// `st_size`.
    pub size: u64,
    /// The filesystem block size: the granularity of the zero detection.
    pub block_size: u64,
    /// The minimum hole used, in bytes (whole blocks).
    pub min_hole: u64,
    /// Bytes of data extents read.
    pub bytes_scanned: u64,
    /// Zero bytes inside data extents that were (dry run: would be) punched.
    pub zero_bytes: u64,
    /// `fallocate` calls made (dry run: that would be made), one per
    /// contiguous run of zero blocks.
    pub holes_punched: u64,
    /// `st_blocks * 512` before.
    pub allocated_before: u64,
    /// `st_blocks * 512` after.
    pub allocated_after: u64,
    /// What happened to the pages read.
    pub cache: CacheOutcome,
}

impl Dug {
    /// Bytes of storage released (`allocated_before - allocated_after`, or 0).
    pub fn bytes_deallocated(&self) -> u64 {
        self.allocated_before.saturating_sub(self.allocated_after)
    }
}

/// Finds all-zero blocks inside the data extents of `fd` and punches them
/// with `fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)`.
///
/// The content never changes: only runs of whole filesystem blocks that
/// read as zeros are punched (a zero tail block at the end of the file
/// counts as whole), and only when the run, together with the holes it
/// touches, is at least [`DigOptions::min_hole`] long. Unwritten
/// (preallocated) extents are left alone. The pages read are dropped from
/// the page cache as it goes (see [`DigOptions::drop_cache`]).
///
/// This function does not keep other writers out: a write landing between
/// the read and the punch of a block would be lost (as with `fallocate
/// --dig-holes`). Take a [`WriteLease`](crate::WriteLease) before calling
/// and use [`dig_holes_excluding`] instead, unless the caller knows nobody
/// else writes the file.
///
/// # Errors
/// [`PunchError::NotRegular`]; [`PunchError::ReadOnly`] unless
/// [`dry_run`](DigOptions::dry_run); [`PunchError::InvalidOption`] for
/// `Method::Scan`; [`PunchError::Unsupported`] when the filesystem cannot
/// punch holes (before anything is punched); read or map errors. An error
/// after some holes were punched is [`PunchError::Partial`] (the content is
/// still unchanged).
///
/// # References
/// - [`fallocate(2)`](https://man7.org/linux/man-pages/man2/fallocate.2.html),
///   [`lseek(2)`](https://man7.org/linux/man-pages/man2/lseek.2.html) `SEEK_DATA`,
///   [`posix_fadvise(2)`](https://man7.org/linux/man-pages/man2/posix_fadvise.2.html);
///   util-linux `fallocate --dig-holes`, which this outperforms by reading
///   4 MiB at a time with `O_DIRECT` instead of one block through the cache.
#[doc(alias = "dig-holes")]
pub fn dig_holes<Fd: AsFd>(fd: &Fd, options: &DigOptions) -> Result<Dug, PunchError> {
    dig(fd, options, None)
}

/// [`dig_holes`], safe against other writers: `guard` (a
/// [`WriteLease`](crate::WriteLease) taken on `fd` before anything was
/// read) is checked before every punch, and the dig stops at the first
/// break, before punching anything more.
///
/// ```
/// use sparsekit_punch::{DigOptions, WriteLease};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let f = tempfile::tempfile()?;
/// let lease = WriteLease::acquire(&f)?; // EAGAIN: someone has it open
/// let dug = DigOptions::new().dig_excluding(&f, &lease)?;
/// drop(lease);
/// println!("{} bytes of zeros punched", dug.zero_bytes);
/// # Ok(()) }
/// ```
///
/// # Errors
/// Those of [`dig_holes`], and [`PunchError::LeaseBroken`] when another
/// process opened or truncated the file: it names the offset dig stopped
/// before and what it had punched. The content is unchanged either way;
/// the caller should release the lease at once (the other process waits
/// in `open` until then).
pub fn dig_holes_excluding<Fd: AsFd>(
    fd: &Fd,
    options: &DigOptions,
    guard: &dyn Exclusion,
) -> Result<Dug, PunchError> {
    dig(fd, options, Some(guard))
}

fn dig<Fd: AsFd>(
    fd: &Fd,
    options: &DigOptions,
    guard: Option<&dyn Exclusion>,
) -> Result<Dug, PunchError> {
    let t = Target::open(fd.as_fd(), Operation::Dig, options.dry_run)?;
    t.require_readable()?;
    if options.method == Method::Scan {
        return Err(PunchError::InvalidOption {
            op: t.op,
            what: "the scan method reports zero blocks as holes, the very blocks dig must find; use all_data to read everything",
        });
    }
    let block = t.block;
    let min_hole = align_up(options.min_hole.max(1), block);
    let range = options.range.clone().unwrap_or(0..t.size);
    let end = range.end.min(t.size);
    let end = if end == t.size {
        end
    } else {
        align_down(end, block)
    };
    let start = align_up(range.start, block).min(end);
    let chunk = align_down(options.chunk, block).max(block);
    // EINVAL (no direct I/O here) leaves the page-cache path, which is
    // what dig did before it read directly.
    let direct = if options.drop_cache {
        DirectMode::enable(t.fd).ok()
    } else {
        None
    };

    let mut digger = Digger {
        t,
        guard,
        min_hole,
        dry_run: options.dry_run,
        drop: options.drop_cache && direct.is_none(),
        cache: match (&direct, options.drop_cache) {
            (Some(_), _) => CacheOutcome::Direct,
            (None, true) => CacheOutcome::Dropped,
            (None, false) => CacheOutcome::Kept,
        },
        direct,
        run: None,
        prefetched: None,
        buf: AlignedBuf::default(),
        chunk,
        scanned: 0,
        zero_bytes: 0,
        punched: 0,
    };
    let fd = t.fd;
    let (map, fallbacks, degraded) = open_map(&fd, start..end, options.method)?;
    let method = map.method();
    if digger.drop {
        digger.advise(0, 0, Advice::Random);
    }
    let result = digger.walk(map);
    if digger.drop {
        digger.advise(0, 0, Advice::Normal);
    }
    if digger.direct.is_some() {
        // A direct read may still go through the cache (btrfs over a
        // compressed extent): drop what dig's reads left, once.
        let _ = fadvise(fd, start, NonZeroU64::new(end - start), Advice::DontNeed);
    }
    match result {
        Ok(()) => {}
        // Carries its own account of what was done.
        Err(e @ PunchError::LeaseBroken { .. }) => return Err(e),
        Err(e) if digger.punched == 0 || digger.dry_run => return Err(e),
        Err(e) => {
            let state = format!(
                "the content is unchanged; {} runs of zero blocks ({} bytes) were punched before it stopped, and rerunning continues",
                digger.punched, digger.zero_bytes
            );
            return Err(e.partial(t.op, state));
        }
    }
    let (_, allocated_after) = t.now()?;
    Ok(Dug {
        method,
        fallbacks,
        degraded,
        dry_run: options.dry_run,
        size: t.size,
        block_size: block,
        min_hole,
        bytes_scanned: digger.scanned,
        zero_bytes: digger.zero_bytes,
        holes_punched: digger.punched,
        allocated_before: t.allocated,
        allocated_after,
        cache: digger.cache,
    })
}

/// The map dig walks: for `Auto`, SEEK_DATA unless degraded, else FIEMAP,
/// else everything is data.
fn open_map<'fd>(
    fd: &'fd BorrowedFd<'_>,
    range: Range<u64>,
    method: Method,
) -> Result<(ExtentMap<'fd>, Vec<Fallback>, Option<Degraded>), PunchError> {
    let map_err = |source| PunchError::Map {
        op: Operation::Dig,
        source,
    };
    if method != Method::Auto {
        let map = MapOptions::new()
            .method(method)
            .range(range)
            .map(fd)
            .map_err(map_err)?;
        let degraded = map.degraded();
        return Ok((map, Vec::new(), degraded));
    }
    let mut fallbacks = Vec::new();
    let mut degraded = None;
    for m in [Method::Seek, Method::Fiemap] {
        match MapOptions::new().method(m).range(range.clone()).map(fd) {
            Ok(map) if map.degraded().is_none() => return Ok((map, fallbacks, degraded)),
            Ok(map) => degraded = degraded.or(map.degraded()),
            Err(MapError::Unsupported { errno, .. }) => {
                fallbacks.push(Fallback::new(m, errno));
            }
            Err(e) => return Err(map_err(e)),
        }
    }
    let map = MapOptions::new()
        .method(Method::AllData)
        .range(range)
        .map(fd)
        .map_err(map_err)?;
    Ok((map, fallbacks, degraded))
}

/// A run of zero bytes (zero blocks in data extents, and holes) being
/// collected; `pending` are its zero data pieces not yet punched.
#[derive(Debug)]
struct Run {
    span: Range<u64>,
    pending: Vec<Range<u64>>,
}

struct Digger<'fd> {
    t: Target<'fd>,
    /// Checked before every punch: the content read must still be the
    /// content on disk.
    guard: Option<&'fd dyn Exclusion>,
    min_hole: u64,
    dry_run: bool,
    drop: bool,
    cache: CacheOutcome,
    run: Option<Run>,
    /// Reading with `O_DIRECT` (then `drop` is off: nothing to drop).
    direct: Option<DirectMode<'fd>>,
    /// The next data extent was requested up to this offset.
    prefetched: Option<u64>,
    buf: AlignedBuf,
    chunk: u64,
    scanned: u64,
    zero_bytes: u64,
    punched: u64,
}

impl Digger<'_> {
    fn walk(&mut self, map: ExtentMap<'_>) -> Result<(), PunchError> {
        let mut map = map.peekable();
        while let Some(ext) = map.next() {
            let ext = ext.map_err(|source| PunchError::Map {
                op: self.t.op,
                source,
            })?;
            match ext.kind {
                ExtentKind::Hole => self.extend(ext.range(), false)?,
                // Preallocated space is deliberate: keep it, and do not let
                // a run punch through it.
                ExtentKind::Unwritten => self.flush()?,
                ExtentKind::Data => {
                    let next = match map.peek() {
                        Some(Ok(e)) if e.kind == ExtentKind::Data => Some(*e),
                        _ => None,
                    };
                    self.scan(ext, next)?;
                }
            }
        }
        self.flush()
    }

    /// Reads a data extent chunk by chunk and feeds its zero runs.
    fn scan(&mut self, ext: Extent, next: Option<Extent>) -> Result<(), PunchError> {
        let block = self.t.block;
        let mut pos = ext.offset;
        if pos % block != 0 {
            // Only odd maps start data mid-block: that block cannot be punched.
            self.flush()?;
            pos = align_up(pos, block).min(ext.end());
        }
        self.buf.reserve(self.chunk as usize, BUF_ALIGN);
        // Readahead is off (POSIX_FADV_RANDOM): keep PREFETCH bytes past
        // the chunk being read requested with WILLNEED, within this extent
        // and into the next data extent, so the device always has work
        // and no page outside the data is brought in.
        let mut advised = match self.prefetched.take() {
            Some(upto) if ext.offset <= pos && pos < upto => upto.min(ext.end()),
            _ => pos,
        };
        while pos < ext.end() {
            let n = self.chunk.min(ext.end() - pos);
            let after = pos + n;
            let target = (after + PREFETCH).min(ext.end());
            if advised < target {
                self.advise(advised, target - advised, Advice::WillNeed);
                advised = target;
            }
            if target == ext.end() && self.prefetched.is_none() {
                if let Some(next) = next {
                    let len = PREFETCH.min(next.length);
                    self.advise(next.offset, len, Advice::WillNeed);
                    self.prefetched = Some(next.offset + len);
                }
            }
            let mut owned = std::mem::take(&mut self.buf);
            let buf = owned.as_mut();
            let read = self.read_chunk(buf, pos, n);
            let result = read.and_then(|()| {
                self.scanned += n;
                for (r, zero) in zero_runs(&buf[..n as usize], block as usize) {
                    let (a, b) = (pos + r.start as u64, pos + r.end as u64);
                    if !zero {
                        self.flush()?;
                        continue;
                    }
                    // A short zero piece is whole only at the end of the file.
                    let whole = if b == self.t.size || b % block == 0 {
                        b
                    } else {
                        align_down(b, block)
                    };
                    if whole > a {
                        self.extend(a..whole, true)?;
                    }
                    if whole < b {
                        self.flush()?;
                    }
                }
                Ok(())
            });
            self.buf = owned;
            result?;
            self.advise(pos, n, Advice::DontNeed);
            pos = after;
        }
        Ok(())
    }

    /// Fills `buf[..n]` from `pos`: one direct read of whole blocks, or,
    /// without `O_DIRECT` or when a direct read is refused or comes back
    /// short, through the page cache.
    fn read_chunk(&mut self, buf: &mut [u8], pos: u64, n: u64) -> Result<(), PunchError> {
        if let Some(direct) = &self.direct {
            let whole = align_up(n, self.t.block) as usize;
            match direct.read(&mut buf[..whole], n as usize, pos) {
                Ok(true) => return Ok(()),
                Ok(false) => self.leave_direct(),
                Err(errno) => return Err(self.t.io("pread", pos, errno)),
            }
        }
        self.t.read_exact(&mut buf[..n as usize], pos)
    }

    /// Goes on through the page cache, dropping what is read.
    fn leave_direct(&mut self) {
        self.direct = None;
        self.drop = true;
        self.cache = CacheOutcome::Dropped;
        self.advise(0, 0, Advice::Random);
    }

    /// Adds a zero range (data, or a hole) to the current run.
    fn extend(&mut self, r: Range<u64>, data: bool) -> Result<(), PunchError> {
        match &mut self.run {
            Some(run) if run.span.end == r.start => run.span.end = r.end,
            _ => {
                self.flush()?;
                self.run = Some(Run {
                    span: r.clone(),
                    pending: Vec::new(),
                });
            }
        }
        let run = self.run.as_mut().expect("just set");
        if data {
            match run.pending.last_mut() {
                Some(last) if last.end == r.start => last.end = r.end,
                _ => run.pending.push(r),
            }
        }
        // Once the run is long enough, every piece but the one still
        // growing can be punched now, which keeps `pending` short.
        if run.span.end - run.span.start >= self.min_hole && run.pending.len() > 1 {
            let last = run.pending.pop().expect("len > 1");
            let done = std::mem::replace(&mut run.pending, vec![last]);
            for piece in done {
                self.punch(piece)?;
            }
        }
        Ok(())
    }

    /// Ends the current run, punching its pieces if it is long enough.
    fn flush(&mut self) -> Result<(), PunchError> {
        if let Some(run) = self.run.take() {
            if run.span.end - run.span.start >= self.min_hole {
                for piece in run.pending {
                    self.punch(piece)?;
                }
            }
        }
        Ok(())
    }

    fn punch(&mut self, piece: Range<u64>) -> Result<(), PunchError> {
        // A zero tail block at the end of the file is punched whole.
        let end = if piece.end == self.t.size {
            align_up(piece.end, self.t.block)
        } else {
            piece.end
        };
        if !self.dry_run {
            if let Some(guard) = self.guard {
                guard.check().map_err(|broken| PunchError::LeaseBroken {
                    op: self.t.op,
                    offset: piece.start,
                    broken,
                    state: format!(
                        "dug {} bytes ({} {}) below it; the content is unchanged, nothing the other process writes is lost; run dig again to finish",
                        self.zero_bytes,
                        self.punched,
                        if self.punched == 1 { "hole" } else { "holes" }
                    ),
                    changed: self.punched > 0,
                })?;
            }
            let (call, mode) = PUNCH;
            self.t
                .fallocate(mode, piece.start, end - piece.start)
                .map_err(|errno| match errno {
                    e if crate::file::is_unsupported(e) && self.punched == 0 => {
                        PunchError::Unsupported {
                            op: self.t.op,
                            strategy: "punch_hole",
                            errno: e,
                        }
                    }
                    e => self.t.io(call, piece.start, e),
                })?;
        }
        self.punched += 1;
        self.zero_bytes += piece.end - piece.start;
        Ok(())
    }

    /// `posix_fadvise`, when dropping the cache; the first failure is
    /// recorded and turns the dropping off.
    fn advise(&mut self, offset: u64, len: u64, advice: Advice) {
        if !self.drop {
            return;
        }
        if let Err(errno) = retry(|| fadvise(self.t.fd, offset, NonZeroU64::new(len), advice)) {
            self.cache = CacheOutcome::Failed(errno);
            self.drop = false;
        }
    }
}
