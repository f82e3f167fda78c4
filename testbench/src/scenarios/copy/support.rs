//! Shared helpers of the copy scenarios: sparse layouts, content and
//! allocation checks, and trial observations of what the filesystem does.

use anyhow::{Context, ensure};
use rustix::fd::AsFd;
use sparsekit_copy::{CopyError, CopyReport};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What a range of a generated source holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Seg {
    Data(u64),
    Zeros,
    Hole,
    Unwritten,
}

/// Deterministic, non-repeating, never all-zero content.
pub(super) fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8 | 1
        })
        .collect()
}

/// The standard source: ~24 MiB with data, holes, written zeros and (where
/// `fallocate` works) unwritten extents, unaligned tail.
pub(super) fn standard_layout() -> Vec<(u64, Seg)> {
    vec![
        (1 << 20, Seg::Data(1)),
        (3 << 20, Seg::Hole),
        (512 << 10, Seg::Zeros),
        (2 << 20, Seg::Data(2)),
        (1 << 20, Seg::Unwritten),
        (64 << 10, Seg::Data(3)),
        (8 << 20, Seg::Hole),
        (4 << 20, Seg::Data(4)),
        (1 << 20, Seg::Zeros),
        (3 << 20, Seg::Hole),
        (12_345, Seg::Data(5)),
    ]
}

/// Writes `layout` to `path`; returns the size. An unwritten extent where
/// `fallocate` is unsupported (tmpfs-like filesystems support it; some
/// FUSE do not) stays a hole.
pub(super) fn make_file(path: &Path, layout: &[(u64, Seg)]) -> anyhow::Result<u64> {
    let f = File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut off = 0;
    for &(len, seg) in layout {
        match seg {
            Seg::Data(seed) => f.write_all_at(&pattern(seed ^ off, len as usize), off)?,
            Seg::Zeros => f.write_all_at(&vec![0; len as usize], off)?,
            Seg::Hole => {}
            Seg::Unwritten => {
                let _ = rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::KEEP_SIZE, off, len);
            }
        }
        off += len;
    }
    f.set_len(off)?;
    f.sync_all()?;
    Ok(off)
}

/// Compares two files (or a file and the start of a device) chunk by chunk.
pub(super) fn same_prefix(a: &Path, b: &Path, len: u64) -> anyhow::Result<()> {
    let (fa, fb) = (File::open(a)?, File::open(b)?);
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut off = 0;
    while off < len {
        let n = (len - off).min(1 << 20) as usize;
        fa.read_exact_at(&mut x[..n], off)
            .with_context(|| format!("read {}", a.display()))?;
        fb.read_exact_at(&mut y[..n], off)
            .with_context(|| format!("read {}", b.display()))?;
        if let Some(i) = x[..n].iter().zip(&y[..n]).position(|(p, q)| p != q) {
            anyhow::bail!(
                "{} and {} differ at byte {}",
                a.display(),
                b.display(),
                off + i as u64
            );
        }
        off += n as u64;
    }
    Ok(())
}

/// Same size and same bytes.
pub(super) fn same_file(a: &Path, b: &Path) -> anyhow::Result<()> {
    let (la, lb) = (std::fs::metadata(a)?.len(), std::fs::metadata(b)?.len());
    ensure!(
        la == lb,
        "{} has {la} bytes, {} has {lb}",
        a.display(),
        b.display()
    );
    same_prefix(a, b, la)
}

pub(super) fn allocated(path: &Path) -> anyhow::Result<u64> {
    Ok(std::fs::metadata(path)?.blocks() * 512)
}

/// Content, size and mtime: what "the source is untouched" means.
pub(super) fn fingerprint(path: &Path) -> anyhow::Result<(Vec<u8>, u64, i64, i64)> {
    let mut v = Vec::new();
    File::open(path)?.read_to_end(&mut v)?;
    let m = std::fs::metadata(path)?;
    Ok((v, m.len(), m.mtime(), m.mtime_nsec()))
}

/// Entries of `dir` other than `keep`.
pub(super) fn leftovers(dir: &Path, keep: &[&Path]) -> anyhow::Result<Vec<PathBuf>> {
    Ok(std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|p| !keep.contains(&p.as_path()))
        .collect())
}

/// Writes back and evicts `path` from the page cache.
pub(super) fn evict(path: &Path) -> anyhow::Result<()> {
    let f = File::open(path)?;
    f.sync_all()?;
    rustix::fs::fadvise(f.as_fd(), 0, None, rustix::fs::Advice::DontNeed)?;
    Ok(())
}

/// Which pages of `path` are cached.
pub(super) fn resident(path: &Path) -> anyhow::Result<Vec<bool>> {
    let f = File::open(path)?;
    let size = f.metadata()?.len();
    if size == 0 {
        return Ok(vec![]);
    }
    let page = sparsekit_sys::pagecache::page_size() as u64;
    let mut v = vec![0u8; size.div_ceil(page) as usize];
    sparsekit_sys::pagecache::mincore_file(&f, 0, size as usize, &mut v)?;
    Ok(v.into_iter().map(|b| b & 1 == 1).collect())
}

/// Observed: whether written-back pages of a file here can be dropped
/// from the page cache at all (not on tmpfs, whose pages are the storage).
pub(super) fn pages_droppable(dir: &Path) -> anyhow::Result<bool> {
    let path = dir.join(".droppable-probe");
    std::fs::write(&path, vec![7u8; 64 << 10])?;
    evict(&path)?;
    let r = resident(&path)?;
    std::fs::remove_file(&path)?;
    Ok(r.iter().all(|&x| !x))
}

/// Observed: whether FICLONE shares between two files here.
pub(super) fn reflink_works(dir: &Path) -> anyhow::Result<bool> {
    let (a, b) = (dir.join(".ficlone-a"), dir.join(".ficlone-b"));
    std::fs::write(&a, vec![1u8; 64 << 10])?;
    let fb = File::create(&b)?;
    let ok = rustix::fs::ioctl_ficlone(&fb, File::open(&a)?).is_ok();
    drop(fb);
    std::fs::remove_file(&a)?;
    std::fs::remove_file(&b)?;
    Ok(ok)
}

/// Observed: whether written zeros occupy their blocks here (not on a
/// filesystem that compresses them away).
pub(super) fn zeros_take_space(dir: &Path) -> anyhow::Result<bool> {
    let path = dir.join(".zeros-probe");
    let f = File::create(&path)?;
    f.write_all_at(&vec![0u8; 1 << 20], 0)?;
    f.sync_all()?;
    let a = allocated(&path)?;
    std::fs::remove_file(&path)?;
    Ok(a >= 1 << 20)
}

/// The errno of an error that means "not supported here", for skips.
pub(super) fn unsupported_errno(e: &CopyError) -> Option<String> {
    match e {
        CopyError::ReflinkUnsupported { errno, .. }
        | CopyError::CacheUnsupported { errno, .. }
        | CopyError::StrategyUnsupported { errno, .. }
        | CopyError::HoleMethodUnsupported { errno, .. } => {
            Some(sparsekit_sys::ErrnoName(*errno).to_string())
        }
        _ => None,
    }
}

/// Content, no larger allocation, nothing else left in the directory.
pub(super) fn check_copy(src: &Path, dst: &Path, report: &CopyReport) -> anyhow::Result<()> {
    same_file(src, dst).with_context(|| format!("{report:?}"))?;
    let (a, b) = (allocated(src)?, allocated(dst)?);
    ensure!(
        b <= a,
        "destination allocates {b} > source {a} ({report:?})"
    );
    let dir = dst.parent().context("parent")?;
    let extra = leftovers(dir, &[src, dst])?;
    ensure!(extra.is_empty(), "left behind: {extra:?}");
    Ok(())
}
