//! Helpers shared by the integration tests: sparse layouts, content and
//! allocation checks, page-cache residency.
#![allow(dead_code, unreachable_pub)]

use rustix::fd::AsFd;
use rustix::fs::{Advice, FallocateFlags, fadvise, fallocate};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What a range of a test file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seg {
    /// Written pseudo-random bytes (seeded).
    Data(u8),
    /// Written zeros: data as far as the filesystem knows.
    Zeros,
    /// Never written.
    Hole,
    /// `fallocate` preallocation: allocated, reads as zeros.
    Unwritten,
}

/// A file layout: consecutive segments of `(length, kind)`.
pub type Layout = Vec<(u64, Seg)>;

pub fn pattern(seed: u8, off: u64, len: usize) -> Vec<u8> {
    // Cheap, position-dependent, never all zero over a block.
    (0..len)
        .map(|i| {
            let p = off + i as u64;
            (p.wrapping_mul(2654435761) >> 13) as u8 ^ seed | 1
        })
        .collect()
}

/// Writes `layout` to a new file at `path` and returns its size.
pub fn make_file(path: &Path, layout: &Layout) -> u64 {
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut off = 0;
    for &(len, seg) in layout {
        match seg {
            Seg::Data(seed) => f
                .write_all_at(&pattern(seed, off, len as usize), off)
                .unwrap(),
            Seg::Zeros => f.write_all_at(&vec![0; len as usize], off).unwrap(),
            Seg::Hole => {}
            Seg::Unwritten => {
                fallocate(&f, FallocateFlags::KEEP_SIZE, off, len).unwrap();
            }
        }
        off += len;
    }
    f.set_len(off).unwrap();
    f.sync_all().unwrap();
    off
}

pub fn read_all(path: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    File::open(path).unwrap().read_to_end(&mut v).unwrap();
    v
}

/// Asserts equal content without printing megabytes on failure.
pub fn assert_same_content(a: &Path, b: &Path) {
    let (x, y) = (read_all(a), read_all(b));
    assert_eq!(
        x.len(),
        y.len(),
        "sizes differ: {} vs {}",
        a.display(),
        b.display()
    );
    if let Some(i) = x.iter().zip(&y).position(|(p, q)| p != q) {
        panic!(
            "{} and {} differ first at byte {i}",
            a.display(),
            b.display()
        );
    }
}

pub fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// Entries of `dir` other than `keep` (temporaries left behind).
pub fn others_in(dir: &Path, keep: &[&Path]) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !keep.iter().any(|k| k == p))
        .collect()
}

/// Digest-free fingerprint of a file: content, size, mtime.
pub fn snapshot(path: &Path) -> (Vec<u8>, u64, i64, i64) {
    let m = std::fs::metadata(path).unwrap();
    (read_all(path), m.len(), m.mtime(), m.mtime_nsec())
}

pub fn page() -> u64 {
    sparsekit_sys::pagecache::page_size() as u64
}

/// Which pages of `path` are cached.
pub fn resident(path: &Path) -> Vec<bool> {
    let f = File::open(path).unwrap();
    let size = f.metadata().unwrap().len();
    if size == 0 {
        return vec![];
    }
    let pages = size.div_ceil(page()) as usize;
    let mut v = vec![0u8; pages];
    sparsekit_sys::pagecache::mincore_file(&f, 0, size as usize, &mut v).unwrap();
    v.into_iter().map(|b| b & 1 == 1).collect()
}

pub fn cached_bytes(path: &Path) -> u64 {
    resident(path).iter().filter(|&&r| r).count() as u64 * page()
}

/// Evicts `path` from the page cache (after writing it back).
pub fn evict(path: &Path) {
    let f = File::open(path).unwrap();
    f.sync_all().unwrap();
    fadvise(f.as_fd(), 0, None, Advice::DontNeed).unwrap();
}

/// Reads page `n` of `path` through the cache.
pub fn touch_page(path: &Path, n: u64) {
    let f = File::open(path).unwrap();
    let mut b = vec![0u8; page() as usize];
    f.read_at(&mut b, n * page()).unwrap();
}

/// Whether RWF_DONTCACHE writes work in `dir` (observed, as the copy does).
pub fn dontcache_works(dir: &Path) -> bool {
    let f = tempfile::tempfile_in(dir).unwrap();
    rustix::io::pwritev2(
        &f,
        &[std::io::IoSlice::new(&[0u8; 512])],
        0,
        sparsekit_sys::pagecache::RWF_DONTCACHE,
    )
    .is_ok()
}

/// A small file with data, a hole, zeros and more data.
pub fn simple_layout() -> Layout {
    vec![
        (64 << 10, Seg::Data(1)),
        (1 << 20, Seg::Hole),
        (128 << 10, Seg::Zeros),
        (256 << 10, Seg::Unwritten),
        (200 << 10, Seg::Data(2)),
        (300 << 10, Seg::Hole),
        (4096 + 123, Seg::Data(3)),
    ]
}

pub fn write_file(path: &Path, bytes: &[u8]) {
    File::create(path).unwrap().write_all(bytes).unwrap();
}
