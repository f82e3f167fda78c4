//! The trials: each module runs the operations of a family of capabilities
//! on scratch files, checks what they did, and records one [`Cell`] per
//! capability through [`classify`](crate::classify).

pub(crate) mod alloc;
pub(crate) mod block;
pub(crate) mod cache;
pub(crate) mod lease;
pub(crate) mod meta;
pub(crate) mod remap;
pub(crate) mod seek;

use crate::classify::{Observation, Shortfall};
use crate::error::CapsError;
use crate::report::{Cell, Support};
use crate::scratch::{Scratch, ScratchDir, pattern};
use rustix::fd::AsFd;
use rustix::io::Errno;
use sparsekit_sys::pagecache::{cachestat, mincore_file};
use std::collections::BTreeMap;

/// How page-cache residency is observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Meter {
    /// `cachestat(2)` (Linux 6.5).
    Cachestat,
    /// `mincore(2)` over a `PROT_NONE` mapping.
    Mincore,
    /// Neither works: residency cannot be observed.
    None,
}

impl Meter {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Meter::Cachestat => "cachestat",
            Meter::Mincore => "mincore",
            Meter::None => "nothing",
        }
    }
}

/// What the trials share.
#[derive(Debug)]
pub(crate) struct Ctx<'a> {
    pub(crate) dir: &'a ScratchDir,
    /// The trial unit: a multiple of the block size and of the page size,
    /// at least 64 KiB, so allocation granularity cannot blur a hole.
    pub(crate) unit: u64,
    pub(crate) page: u64,
    /// `STATX_DIOALIGN` (mem, offset) when reported.
    pub(crate) dio_align: Option<(u32, u32)>,
    pub(crate) dio_read_align: Option<u32>,
    pub(crate) meter: Meter,
    /// The mount point, when mountinfo names it (for the NFS counters).
    pub(crate) mount_point: Option<String>,
    pub(crate) cells: BTreeMap<String, Cell>,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(dir: &'a ScratchDir, block_size: u64) -> Self {
        let page = sparsekit_sys::pagecache::page_size() as u64;
        let unit = block_size.max(page).max(64 << 10);
        // Round up to a multiple of both.
        let unit = unit.div_ceil(block_size.max(1)) * block_size.max(1);
        let unit = unit.div_ceil(page) * page;
        Ctx {
            dir,
            unit,
            page,
            dio_align: None,
            dio_read_align: None,
            meter: Meter::None,
            mount_point: None,
            cells: BTreeMap::new(),
        }
    }

    pub(crate) fn set(&mut self, name: &str, cell: Cell) {
        self.cells.insert(name.to_owned(), cell);
    }

    pub(crate) fn cell(&self, name: &str) -> Option<&Cell> {
        self.cells.get(name)
    }

    pub(crate) fn support(&self, name: &str) -> Option<Support> {
        self.cell(name).map(|c| c.support)
    }

    /// A fresh empty scratch file.
    pub(crate) fn file(&self) -> Result<Scratch, CapsError> {
        self.dir.file()
    }

    /// A scratch file holding `pattern(seed, len)`, not written back:
    /// `st_blocks` counts delayed allocations on ext4, xfs and btrfs, the
    /// clone ioctls and FIEMAP (`FIEMAP_FLAG_SYNC`) flush what they need, and
    /// skipping the `fdatasync`s keeps the report fast on slow devices.
    pub(crate) fn data_file(&self, seed: u64, len: u64) -> Result<(Scratch, Vec<u8>), CapsError> {
        let f = self.file()?;
        let data = pattern(seed, len);
        f.write_at(&data, 0)?;
        Ok((f, data))
    }

    /// Pages of `fd` cached in `offset..offset+len`, by the meter.
    pub(crate) fn cached_pages<Fd: AsFd>(
        &self,
        fd: &Fd,
        offset: u64,
        len: u64,
    ) -> Result<u64, Errno> {
        count_cached(self.meter, fd, offset, len, self.page)
    }
}

pub(crate) fn count_cached<Fd: AsFd>(
    meter: Meter,
    fd: &Fd,
    offset: u64,
    len: u64,
    page: u64,
) -> Result<u64, Errno> {
    match meter {
        Meter::Cachestat => cachestat(fd, offset, len).map(|c| c.nr_cache),
        Meter::Mincore => {
            let pages = len.div_ceil(page) as usize;
            let mut vec = vec![0u8; pages];
            mincore_file(fd, offset, len as usize, &mut vec)?;
            Ok(vec.iter().filter(|b| *b & 1 == 1).count() as u64)
        }
        Meter::None => Err(Errno::NOSYS),
    }
}

/// Compares bytes read back with what they should be; a shortfall names
/// the first differing offset.
pub(crate) fn expect_bytes(
    shortfalls: &mut Vec<Shortfall>,
    what: &str,
    got: &[u8],
    want: &[u8],
    base: u64,
) {
    if got.len() != want.len() {
        shortfalls.push(Shortfall::new(format!(
            "{what}: read {} bytes, expected {}",
            got.len(),
            want.len()
        )));
    } else if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        shortfalls.push(Shortfall::new(format!(
            "{what}: wrong content at offset {}",
            base + i as u64
        )));
    }
}

/// `Observation::Refused` from an op crate error carrying an errno, or a
/// setup failure.
pub(crate) fn refused(
    call: &str,
    errno: Option<Errno>,
    message: &dyn std::fmt::Display,
) -> Observation {
    match errno {
        Some(errno) => Observation::refused(call, errno),
        // Checks the op crates make before calling the kernel (alignment,
        // file kinds) should never trip on scratch files; if one does,
        // record it as a failure of the trial, with the message.
        None => Observation::refused(format!("{call} ({message})"), Errno::INVAL),
    }
}

/// A buffer of `len` bytes whose address is a multiple of `align`, carved
/// out of a larger vector (no `unsafe`, no custom allocator).
pub(crate) struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    pub(crate) fn new(len: usize, align: usize) -> Self {
        let storage = vec![0u8; len + align];
        let start = storage.as_ptr().align_offset(align);
        AlignedBuf {
            storage,
            start,
            len,
        }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf({} bytes)", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buffers_are_aligned() {
        for align in [512usize, 4096, 65536] {
            let mut b = AlignedBuf::new(8192, align);
            assert_eq!(b.as_slice().as_ptr() as usize % align, 0);
            assert_eq!(b.as_mut_slice().len(), 8192);
        }
    }

    #[test]
    fn both_meters_count_just_written_pages() {
        let dir = tempfile::tempdir().unwrap();
        let sd = ScratchDir::open(dir.path(), false).unwrap();
        let f = sd.file().unwrap();
        let page = sparsekit_sys::pagecache::page_size() as u64;
        f.write_at(&pattern(1, 4 * page), 0).unwrap();
        // mincore: the fallback where cachestat is missing (before 6.5).
        assert_eq!(count_cached(Meter::Mincore, &f, 0, 4 * page, page), Ok(4));
        match count_cached(Meter::Cachestat, &f, 0, 4 * page, page) {
            Ok(n) => assert_eq!(n, 4),
            Err(e) => assert_eq!(e, Errno::NOSYS, "cachestat: {e:?}"),
        }
        assert_eq!(
            count_cached(Meter::None, &f, 0, 4 * page, page),
            Err(Errno::NOSYS)
        );
    }

    #[test]
    fn expect_bytes_names_the_first_difference() {
        let mut s = Vec::new();
        expect_bytes(&mut s, "x", b"abc", b"abc", 0);
        assert!(s.is_empty());
        expect_bytes(&mut s, "x", b"abd", b"abc", 100);
        expect_bytes(&mut s, "y", b"ab", b"abc", 0);
        assert_eq!(s[0].why, "x: wrong content at offset 102");
        assert_eq!(s[1].why, "y: read 2 bytes, expected 3");
    }

    #[test]
    fn the_unit_is_a_multiple_of_block_and_page() {
        let dir = tempfile::tempdir().unwrap();
        let sd = ScratchDir::open(dir.path(), false).unwrap();
        for block in [512, 4096, 65536, 1 << 20] {
            let ctx = Ctx::new(&sd, block);
            assert_eq!(ctx.unit % block, 0);
            assert_eq!(ctx.unit % ctx.page, 0);
            assert!(ctx.unit >= 64 << 10);
        }
    }
}
