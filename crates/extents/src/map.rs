//! [`MapOptions`] chooses a method, [`ExtentMap`] walks the file lazily.

use crate::fiemap::FiemapWalker;
use crate::scan::ScanWalker;
use crate::seek::SeekWalker;
use crate::{Extent, ExtentKind, MapError};
use rustix::fd::{AsFd, BorrowedFd};
use rustix::fs::{FileType, SeekFrom, fstat, seek};
use rustix::io::Errno;
use std::fmt;
use std::ops::Range;

/// How an extent map is produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Method {
    /// Try `Seek`, then `Fiemap`, then `Scan`, then `AllData`, as each proves
    /// unsupported (or degraded on a file that `st_blocks` shows is sparse).
    #[default]
    Auto,
    /// `lseek(2)` with `SEEK_DATA` / `SEEK_HOLE` (Linux 3.1). Unwritten
    /// extents without dirty pages are holes.
    Seek,
    /// `ioctl(FS_IOC_FIEMAP)` with `FIEMAP_FLAG_SYNC`: shows unwritten
    /// extents and the shared/encoded/… flags.
    Fiemap,
    /// Read everything; all-zero blocks are holes. Works everywhere, costs a
    /// full read.
    Scan,
    /// No inquiry: the whole range is data.
    AllData,
}

impl Method {
    /// Lowercase name, as on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Auto => "auto",
            Method::Seek => "seek",
            Method::Fiemap => "fiemap",
            Method::Scan => "scan",
            Method::AllData => "all_data",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The filesystem answered, but less well than it claims.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Degraded {
    /// `SEEK_HOLE` reported the whole file as data although `st_blocks`
    /// shows fewer bytes allocated than its size: the generic
    /// implementation of a filesystem without hole support.
    SeekHoleReportsAllData {
        /// `st_size`.
        size: u64,
        /// `st_blocks * 512`.
        allocated: u64,
    },
}

impl fmt::Display for Degraded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Degraded::SeekHoleReportsAllData { size, allocated } => write!(
                f,
                "SEEK_HOLE reports all {size} bytes as data, but only {allocated} are allocated"
            ),
        }
    }
}

/// A method [`Method::Auto`] tried and left, with the errno that showed it
/// unsupported (the record every sparsekit crate uses). A method left
/// because its answer was degraded has no errno and is not a `Fallback`:
/// [`ExtentMap::degraded`] reports it.
pub type Fallback = sparsekit_sys::Fallback<Method>;

/// Options for [`ExtentMap`]s; start from [`MapOptions::new`].
#[derive(Clone, Debug)]
pub struct MapOptions {
    method: Method,
    range: Option<Range<u64>>,
    sync: bool,
    prefer_fiemap: bool,
    block_size: Option<u64>,
}

impl Default for MapOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl MapOptions {
    /// `Auto`, whole file, FIEMAP with `FIEMAP_FLAG_SYNC`.
    pub fn new() -> Self {
        MapOptions {
            method: Method::Auto,
            range: None,
            sync: true,
            prefer_fiemap: false,
            block_size: None,
        }
    }

    /// Force a method (the map fails with [`MapError::Unsupported`] if the
    /// filesystem lacks it) or leave it to `Auto`.
    pub fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    /// Map only `range` (clipped to the file size). Extents are clipped to it.
    pub fn range(mut self, range: Range<u64>) -> Self {
        self.range = Some(range);
        self
    }

    /// Whether dirty pages of the range are written back before mapping
    /// (default true): `FIEMAP_FLAG_SYNC` for FIEMAP, and one
    /// `sync_file_range(WAIT_BEFORE|WRITE|WAIT_AFTER)` before SEEK_DATA —
    /// no metadata commit or device flush, and nearly free on a clean file
    /// (`fdatasync` where pages are dirty or cannot be counted: see
    /// `write_back`).
    ///
    /// Without it FIEMAP shows delalloc extents as `UNKNOWN|DELALLOC` and an
    /// unwritten extent with dirty pages as unwritten although it holds
    /// data; and SEEK_DATA on ext4 files without extents (block-mapped, as
    /// on ext2/ext3 images) misses data not yet written back — on Linux 6.18
    /// it returns ENXIO for a file whose only data is dirty, which a copy
    /// would turn into a hole (the bench's `extents/seek_sees_dirty_data`
    /// scenario observes this per filesystem).
    pub fn sync(mut self, sync: bool) -> Self {
        self.sync = sync;
        self
    }

    /// Make `Auto` try FIEMAP before SEEK_DATA, so unwritten extents and
    /// sharing are reported (what `sparsekit map` shows); copying prefers
    /// SEEK_DATA, which is cheaper and needs no writeback.
    pub fn prefer_fiemap(mut self, prefer: bool) -> Self {
        self.prefer_fiemap = prefer;
        self
    }

    /// Granularity of `Scan` (default: `st_blksize`, at least 512).
    pub fn block_size(mut self, block: u64) -> Self {
        self.block_size = Some(block);
        self
    }

    /// Starts mapping `fd`. Probes the method (one or two syscalls); the
    /// extents come lazily from the returned iterator.
    pub fn map<'fd, Fd: AsFd>(&self, fd: &'fd Fd) -> Result<ExtentMap<'fd>, MapError> {
        let fd = fd.as_fd();
        let st = fstat(fd).map_err(|e| MapError::io("fstat", 0, e))?;
        let file_type = FileType::from_raw_mode(st.st_mode);
        let size = match file_type {
            FileType::RegularFile => st.st_size as u64,
            FileType::BlockDevice => {
                seek(fd, SeekFrom::End(0)).map_err(|e| MapError::io("lseek(SEEK_END)", 0, e))?
            }
            other => {
                return Err(MapError::NotMappable {
                    kind: file_type_name(other),
                });
            }
        };
        let allocated = (st.st_blocks as u64).saturating_mul(512);
        let blksize = (st.st_blksize as u64).max(512);
        let range = self.range.clone().unwrap_or(0..size);
        let end = range.end.min(size);
        let start = range.start.min(end);

        let mut map = ExtentMap {
            fd,
            method: Method::AllData,
            walker: Walker::AllData,
            pos: start,
            end,
            tail: tail_start().max(start).min(end),
            tail_scan: None,
            pending: None,
            size,
            allocated,
            degraded: None,
            fallbacks: Vec::new(),
            size_changed: None,
        };
        let sparse_by_blocks =
            file_type == FileType::RegularFile && allocated.saturating_add(blksize) <= size;
        let block = self.block_size.unwrap_or(blksize);

        let order: &[Method] = match (self.method, file_type) {
            // A block device has no holes to find; it is all data.
            (Method::Auto, FileType::BlockDevice) => &[Method::AllData],
            (Method::Auto, _) if self.prefer_fiemap => {
                &[Method::Fiemap, Method::Seek, Method::Scan]
            }
            (Method::Auto, _) => &[Method::Seek, Method::Fiemap, Method::Scan],
            (Method::Seek, _) => &[Method::Seek],
            (Method::Fiemap, _) => &[Method::Fiemap],
            (Method::Scan, _) => &[Method::Scan],
            (Method::AllData, _) => &[Method::AllData],
        };
        let forced = self.method != Method::Auto;
        let mut walker = None;
        let chosen = choose(order, forced, |method| {
            let (w, degraded) = match method {
                Method::Seek => {
                    if self.sync && file_type == FileType::RegularFile && end > start {
                        write_back(fd, start, end)?;
                    }
                    probe_seek(fd, start, size, sparse_by_blocks, allocated)
                        .map(|(w, d)| (Walker::Seek(w), d))?
                }
                Method::Fiemap => (
                    Walker::Fiemap(FiemapWalker::start(fd, start, end, self.sync)?),
                    None,
                ),
                Method::Scan => (Walker::Scan(ScanWalker::new(block)), None),
                Method::AllData | Method::Auto => (Walker::AllData, None),
            };
            walker = Some(w);
            Ok(degraded)
        })
        .map_err(|(method, errno)| choice_error(method, errno, start))?;
        map.method = chosen.method;
        map.degraded = chosen.degraded;
        map.fallbacks = chosen.fallbacks;
        // `choose` only returns methods whose walker was built, the last one built.
        map.walker = walker.unwrap_or(Walker::AllData);
        Ok(map)
    }
}

/// The outcome of [`choose`].
#[derive(Debug, PartialEq, Eq)]
struct Choice {
    method: Method,
    degraded: Option<Degraded>,
    fallbacks: Vec<Fallback>,
}

/// Walks the fallback chain `order`: `attempt(method)` starts a method and
/// says whether its answer is degraded. A forced method is kept even when
/// degraded (the map reports it); `Auto` moves past unsupported and degraded
/// methods, and keeps the last one that started if none was clean. Errors
/// that do not mean "unsupported" stop the chain.
fn choose(
    order: &[Method],
    forced: bool,
    mut attempt: impl FnMut(Method) -> Result<Option<Degraded>, Errno>,
) -> Result<Choice, (Method, Errno)> {
    let mut choice = Choice {
        method: Method::AllData,
        degraded: None,
        fallbacks: Vec::new(),
    };
    for &method in order {
        match attempt(method) {
            Ok(degraded) => {
                choice.method = method;
                choice.degraded = choice.degraded.or(degraded);
                if degraded.is_none() || forced {
                    return Ok(choice);
                }
                // Left for a degraded answer: `choice.degraded` says so.
            }
            Err(errno) if !forced && is_unsupported(errno) => {
                choice.fallbacks.push(Fallback::new(method, errno));
            }
            Err(errno) => return Err((method, errno)),
        }
    }
    Ok(choice)
}

/// Errnos that mean "this method is not available here", as opposed to an
/// I/O failure that another method would hit too: sparsekit's set, widened
/// for the two calls a map makes. `lseek(SEEK_DATA)` answers `ESPIPE` on
/// files that cannot seek by data (some pseudo and FUSE files); FIEMAP
/// answers `EBADR` for flags the filesystem does not support
/// (`FIEMAP_FLAG_SYNC` included).
fn is_unsupported(errno: Errno) -> bool {
    sparsekit_sys::is_unsupported(errno) || matches!(errno, Errno::SPIPE | Errno::BADR)
}

/// The error of a method that could not start: `Unsupported` when its
/// errno says so (only a forced method gets here with one: `Auto` moves
/// on), else the I/O error of its probing call, which any method would
/// meet too.
fn choice_error(method: Method, errno: Errno, start: u64) -> MapError {
    if is_unsupported(errno) {
        MapError::Unsupported { method, errno }
    } else {
        MapError::io(probe_op(method), start, errno)
    }
}

fn probe_op(method: Method) -> &'static str {
    match method {
        Method::Seek => "lseek(SEEK_DATA)",
        Method::Fiemap => "ioctl(FS_IOC_FIEMAP)",
        _ => "read",
    }
}

/// Writes back the dirty pages of `start..end` so SEEK_DATA sees them
/// everywhere (see [`MapOptions::sync`]). Filesystems that cannot do it
/// (ESPIPE, EINVAL) are mapped as they are; an I/O error is reported as
/// the SEEK_DATA failure it would cause.
///
/// Where pages are dirty or under writeback, or the kernel cannot count
/// them (no `cachestat`, before 6.5), `fdatasync` rather than
/// `sync_file_range`: btrfs before 6.2 reports a range as a hole once its
/// pages are written but before the write's ordered extent completes,
/// which `sync_file_range` does not wait for and `fdatasync` does (an
/// earlier experiment on Debian's 6.1 lost data in 8-18 % of copies made
/// right after `sync_file_range(WRITE)`).
/// A clean file costs one `cachestat` and one no-op `sync_file_range`.
fn write_back(fd: BorrowedFd<'_>, start: u64, end: u64) -> Result<(), Errno> {
    use sparsekit_sys::pagecache::{SyncFileRangeFlags as F, cachestat, sync_file_range};
    if needs_fdatasync(cachestat(fd, start, end - start)) {
        match rustix::fs::fdatasync(fd) {
            Ok(()) => return Ok(()),
            Err(e @ (Errno::IO | Errno::NOSPC | Errno::DQUOT)) => return Err(e),
            // EINVAL, EROFS and the like: the range call below may still work.
            Err(_) => {}
        }
    }
    match sync_file_range(
        fd,
        start,
        end - start,
        F::WAIT_BEFORE | F::WRITE | F::WAIT_AFTER,
    ) {
        Err(e @ (Errno::IO | Errno::NOSPC | Errno::DQUOT)) => Err(e),
        _ => Ok(()),
    }
}

/// Whether [`write_back`] must wait with `fdatasync`, given the range's
/// `cachestat`.
fn needs_fdatasync(stat: Result<sparsekit_sys::pagecache::CacheStat, Errno>) -> bool {
    match stat {
        Ok(cs) => cs.nr_dirty + cs.nr_writeback > 0,
        Err(_) => true,
    }
}

/// One SEEK_DATA to see the call works; one SEEK_HOLE from 0 when
/// `st_blocks` says the file is sparse, to see it is not the generic
/// "all data" answer.
fn probe_seek(
    fd: BorrowedFd<'_>,
    start: u64,
    size: u64,
    sparse_by_blocks: bool,
    allocated: u64,
) -> Result<(SeekWalker, Option<Degraded>), Errno> {
    match seek(fd, SeekFrom::Data(start)) {
        Ok(_) | Err(Errno::NXIO) => {}
        Err(e) => return Err(e),
    }
    let mut degraded = None;
    if sparse_by_blocks && size > 0 {
        let first_hole = seek(fd, SeekFrom::Hole(0))?;
        if first_hole >= size {
            degraded = Some(Degraded::SeekHoleReportsAllData { size, allocated });
        }
    }
    Ok((SeekWalker::default(), degraded))
}

use sparsekit_sys::file_type_name;

#[derive(Debug)]
enum Walker {
    Seek(SeekWalker),
    Fiemap(FiemapWalker),
    Scan(ScanWalker),
    AllData,
    /// The unit tests' walker: answers these extents in turn, whatever
    /// the position, so a test can make one break the invariants.
    #[cfg(test)]
    Scripted(std::collections::VecDeque<Extent>),
}

/// A lazy extent map: an iterator of [`Extent`]s that cover the mapped range
/// in order, with no gaps or overlaps, in constant memory.
///
/// Made by [`MapOptions::map`] or [`map`](crate::map). The map reads the
/// file size once at the start and maps up to it; if the file grows or
/// shrinks meanwhile, the map still ends and [`size_changed`](Self::size_changed)
/// tells.
#[derive(Debug)]
pub struct ExtentMap<'fd> {
    fd: BorrowedFd<'fd>,
    method: Method,
    walker: Walker,
    pos: u64,
    end: u64,
    size: u64,
    allocated: u64,
    degraded: Option<Degraded>,
    fallbacks: Vec<Fallback>,
    size_changed: Option<u64>,
    /// Where the untrusted tail begins (see [`tail_start`]), clipped to
    /// the mapped range; `end` when the range does not reach it.
    tail: u64,
    /// The walker of the tail, made when the map gets there.
    tail_scan: Option<ScanWalker>,
    /// An extent of the tail read ahead while merging a hole into it.
    pending: Option<Extent>,
}

/// How far below 2^63 the kernel's own offset arithmetic may overflow.
///
/// A file can be as large as `i64::MAX` bytes, but the page cache counts in
/// folios: the end of a folio that contains byte `i64::MAX − 1` is 2^63,
/// which does not fit in `loff_t`. Linux's `mapping_seek_hole_data`
/// (tmpfs's SEEK_DATA/SEEK_HOLE, and iomap's for unwritten extents) rounds
/// up to exactly that end and overflows: on tmpfs (6.18) a file larger than
/// 2^63 − 4096 with data only in its last page is reported by SEEK_DATA as
/// having no data at all, and SEEK_HOLE returns a negative offset. Other
/// filesystems may have similar edges in FIEMAP. Folios are at most a PMD
/// (2 MiB with 4 KiB pages; page² / 8 in general), so below
/// `2^63 − max(2 MiB, page² / 8)` the answers are sound.
fn tail_start() -> u64 {
    let page = sparsekit_sys::pagecache::page_size() as u64;
    let window = (page * page / 8).max(2 << 20);
    (i64::MAX as u64 + 1) - window
}

impl ExtentMap<'_> {
    /// The method producing the extents (never `Auto`).
    pub fn method(&self) -> Method {
        self.method
    }

    /// The file size when mapping began.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// `st_blocks * 512` when mapping began.
    pub fn allocated(&self) -> u64 {
        self.allocated
    }

    /// The mapped range (clipped to the size).
    pub fn range(&self) -> Range<u64> {
        self.pos.min(self.end)..self.end
    }

    /// Set when SEEK_HOLE answered but could not be trusted.
    pub fn degraded(&self) -> Option<Degraded> {
        self.degraded
    }

    /// The methods `Auto` tried before [`method`](Self::method), and why it left them.
    pub fn fallbacks(&self) -> &[Fallback] {
        &self.fallbacks
    }

    /// After the last extent: the new size if the file changed size while it
    /// was mapped (the extents describe the file as it was seen).
    pub fn size_changed(&self) -> Option<u64> {
        self.size_changed
    }

    /// The part of the mapped range that was mapped by reading it, because
    /// the kernel cannot describe it reliably (the last MiBs below 2^63,
    /// see the crate docs); `None` for every file smaller than about
    /// 8 EiB, and for the methods that read or assume data anyway.
    pub fn read_checked(&self) -> Option<Range<u64>> {
        self.tail_scan.as_ref().map(|_| self.tail..self.end)
    }

    fn step(&mut self) -> Result<Extent, MapError> {
        if let Some(ext) = self.pending.take() {
            return Ok(ext);
        }
        let (fd, pos, end) = (self.fd, self.pos, self.end);
        let trusts_holes = matches!(self.walker, Walker::Seek(_) | Walker::Fiemap(_));
        if !trusts_holes || pos < self.tail {
            let walker_end = if trusts_holes { self.tail } else { end };
            let ext = match &mut self.walker {
                Walker::Seek(w) => w.next(fd, pos, walker_end),
                Walker::Fiemap(w) => w.next(fd, pos, walker_end),
                Walker::Scan(w) => w.next(fd, pos, end),
                Walker::AllData => Ok(Extent::new(pos..end, ExtentKind::Data)),
                #[cfg(test)]
                Walker::Scripted(w) => {
                    w.pop_front()
                        .ok_or(MapError::io("scripted", pos, Errno::IO))
                }
            }?;
            if !trusts_holes
                || self.tail == end
                || ext.end() < self.tail
                || ext.kind == ExtentKind::Data
            {
                return Ok(ext);
            }
            // A hole (or unwritten extent) that runs into the tail: a hole
            // found there by reading continues it, so a file with no data
            // there maps as before.
            let tail_start = self.tail;
            let tail = self.tail_walker().next(fd, tail_start, end)?;
            if tail.kind == ExtentKind::Data {
                self.pending = Some(tail);
                return Ok(ext);
            }
            if ext.kind == ExtentKind::Hole {
                return Ok(Extent::new(ext.offset..tail.end(), ExtentKind::Hole));
            }
            self.pending = Some(tail);
            return Ok(ext);
        }
        // Never trust a hole the kernel reports here: read and see.
        self.tail_walker().next(fd, pos, end)
    }

    fn tail_walker(&mut self) -> &mut ScanWalker {
        self.tail_scan
            .get_or_insert_with(|| ScanWalker::new(sparsekit_sys::pagecache::page_size() as u64))
    }
}

impl Iterator for ExtentMap<'_> {
    type Item = Result<Extent, MapError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.end {
            return None;
        }
        match self.step() {
            Ok(ext) => {
                // Walkers promise contiguous, forward progress; this is the
                // single place that enforces it, in release builds too: an
                // extent that does not start at the position, is empty or
                // runs past the range ends the map with an error rather
                // than looping or leaving a gap a copy would skip.
                if ext.offset != self.pos || ext.length == 0 || ext.end() > self.end {
                    let e = MapError::Inconsistent {
                        method: self.method,
                        offset: self.pos,
                    };
                    self.end = self.pos;
                    return Some(Err(e));
                }
                self.pos = ext.end();
                if self.pos >= self.end {
                    // Block devices report st_size 0; only files can change size.
                    self.size_changed = fstat(self.fd).ok().and_then(|st| {
                        let now = st.st_size as u64;
                        let is_file = FileType::from_raw_mode(st.st_mode) == FileType::RegularFile;
                        (is_file && now != self.size).then_some(now)
                    });
                }
                Some(Ok(ext))
            }
            Err(e) => {
                // Stop after an error: no endless retries.
                self.end = self.pos;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sparsekit_sys::pagecache::CacheStat;

    #[test]
    fn dirty_pages_or_an_unknown_count_wait_with_fdatasync() {
        let clean = CacheStat {
            nr_cache: 8,
            ..CacheStat::default()
        };
        assert!(!needs_fdatasync(Ok(clean)));
        let dirty = CacheStat {
            nr_dirty: 1,
            ..clean
        };
        assert!(needs_fdatasync(Ok(dirty)));
        let in_flight = CacheStat {
            nr_writeback: 1,
            ..clean
        };
        assert!(needs_fdatasync(Ok(in_flight)));
        // No cachestat (before 6.5): the btrfs race is possible there.
        assert!(needs_fdatasync(Err(Errno::NOSYS)));
    }

    const AUTO: &[Method] = &[Method::Seek, Method::Fiemap, Method::Scan];
    const DEGRADED: Degraded = Degraded::SeekHoleReportsAllData {
        size: 10,
        allocated: 0,
    };

    fn run(
        forced: bool,
        order: &[Method],
        results: &[(Method, Result<Option<Degraded>, Errno>)],
    ) -> Result<Choice, (Method, Errno)> {
        choose(order, forced, |m| {
            results
                .iter()
                .find(|(r, _)| *r == m)
                .map(|(_, r)| *r)
                .unwrap_or(Ok(None))
        })
    }

    #[test]
    fn auto_takes_seek_when_it_works() {
        let c = run(false, AUTO, &[]).unwrap();
        assert_eq!(c.method, Method::Seek);
        assert!(c.fallbacks.is_empty() && c.degraded.is_none());
    }

    #[test]
    fn auto_falls_back_on_unsupported_errnos() {
        for errno in [
            Errno::OPNOTSUPP,
            Errno::NOSYS,
            Errno::NOTTY,
            Errno::INVAL,
            Errno::SPIPE,
            Errno::BADR,
        ] {
            let c = run(
                false,
                AUTO,
                &[
                    (Method::Seek, Err(errno)),
                    (Method::Fiemap, Err(Errno::OPNOTSUPP)),
                ],
            )
            .unwrap();
            assert_eq!(c.method, Method::Scan, "{errno:?}");
            assert_eq!(
                c.fallbacks,
                vec![
                    Fallback::new(Method::Seek, errno),
                    Fallback::new(Method::Fiemap, Errno::OPNOTSUPP),
                ]
            );
        }
    }

    #[test]
    fn auto_leaves_a_degraded_seek_for_fiemap_and_says_so() {
        let c = run(false, AUTO, &[(Method::Seek, Ok(Some(DEGRADED)))]).unwrap();
        assert_eq!(c.method, Method::Fiemap);
        assert_eq!(c.degraded, Some(DEGRADED));
        assert!(c.fallbacks.is_empty(), "no errno: reported as degraded");
    }

    #[test]
    fn auto_scans_when_seek_is_degraded_and_fiemap_missing() {
        let c = run(
            false,
            AUTO,
            &[
                (Method::Seek, Ok(Some(DEGRADED))),
                (Method::Fiemap, Err(Errno::OPNOTSUPP)),
            ],
        )
        .unwrap();
        assert_eq!(c.method, Method::Scan);
        assert_eq!(c.degraded, Some(DEGRADED));
    }

    #[test]
    fn a_forced_degraded_seek_is_kept_and_reported() {
        let c = run(true, &[Method::Seek], &[(Method::Seek, Ok(Some(DEGRADED)))]).unwrap();
        assert_eq!(c.method, Method::Seek);
        assert_eq!(c.degraded, Some(DEGRADED));
    }

    #[test]
    fn an_io_error_of_a_forced_method_is_not_called_unsupported() {
        assert!(matches!(
            choice_error(Method::Fiemap, Errno::BADR, 0),
            MapError::Unsupported {
                method: Method::Fiemap,
                errno: Errno::BADR
            }
        ));
        let e = choice_error(Method::Seek, Errno::IO, 4096);
        assert!(!matches!(e, MapError::Unsupported { .. }), "{e:?}");
        assert_eq!(e.errno(), Some(Errno::IO));
    }

    /// A map of 0..12288 (all data on a real file) whose walker answers
    /// `script` instead.
    fn scripted(file: &std::fs::File, script: &[Extent]) -> Vec<Result<Extent, MapError>> {
        let mut map = MapOptions::new().method(Method::AllData).map(file).unwrap();
        map.walker = Walker::Scripted(script.iter().copied().collect());
        map.collect()
    }

    #[test]
    fn an_extent_that_does_not_continue_the_map_ends_it_with_an_error() {
        let file = tempfile::tempfile().unwrap();
        file.set_len(12288).unwrap();
        let data = |r: Range<u64>| Extent::new(r, ExtentKind::Data);
        let hole = |r: Range<u64>| Extent::new(r, ExtentKind::Hole);
        // A good map, to show the script drives it.
        let ok = scripted(&file, &[data(0..4096), hole(4096..12288)]);
        assert!(ok.iter().all(Result::is_ok), "{ok:?}");
        for (what, bad) in [
            ("a gap", data(8192..12288)),
            ("an overlap (going back)", data(0..8192)),
            (
                "no progress (empty)",
                // Fields, not Extent::new, which debug-asserts the length.
                Extent {
                    length: 0,
                    ..data(4096..8192)
                },
            ),
            ("past the mapped range", data(4096..16384)),
        ] {
            let items = scripted(&file, &[data(0..4096), bad, hole(4096..12288)]);
            assert_eq!(
                items.len(),
                2,
                "{what}: the map stops at the error: {items:?}"
            );
            assert!(items[0].is_ok(), "{what}");
            match &items[1] {
                Err(MapError::Inconsistent { method, offset }) => {
                    assert_eq!((*method, *offset), (Method::AllData, 4096), "{what}");
                }
                other => panic!("{what}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_forced_unsupported_method_is_an_error() {
        let e = run(
            true,
            &[Method::Fiemap],
            &[(Method::Fiemap, Err(Errno::OPNOTSUPP))],
        )
        .unwrap_err();
        assert_eq!(e, (Method::Fiemap, Errno::OPNOTSUPP));
    }

    #[test]
    fn io_errors_stop_auto() {
        let e = run(false, AUTO, &[(Method::Seek, Err(Errno::IO))]).unwrap_err();
        assert_eq!(e, (Method::Seek, Errno::IO));
    }
}
