//! Benchmark images: deterministic extent layouts, written with
//! incompressible data, and an identity check that reads only what is
//! allocated on either side.

use anyhow::Context;
use sparsekit_extents::{ExtentKind, MapOptions, Method};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// One data extent of an image: `(offset, length, written zeros)`.
pub(super) type Extent = (u64, u64, bool);

/// xorshift64, deterministic across runs and machines.
fn rng(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut x = seed | 1;
    move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    }
}

/// A random layout of `size` bytes with 10 % data in 64 KiB–4 MiB
/// extents, a fifth of them written zeros (also the compare benchmark's
/// image).
pub(super) fn layout_of(size: u64, seed: u64) -> Vec<Extent> {
    runs(size, size / 10, (16, 1024), seed)
}

/// A random layout of `size` bytes with `data` bytes in extents of
/// `blocks.0..blocks.1` 4 KiB blocks spread by random gaps, about a fifth
/// of them written zeros.
pub(super) fn runs(size: u64, data: u64, blocks: (u64, u64), seed: u64) -> Vec<Extent> {
    let mut rnd = rng(seed);
    let mut lens = Vec::new();
    let mut total = 0;
    while total < data {
        let len = ((blocks.0 + rnd(blocks.1 - blocks.0 + 1)) * 4096)
            .min(data - total)
            .max(4096);
        lens.push(len);
        total += len;
    }
    let gap_total = (size - total) / 4096;
    let weights: Vec<u64> = (0..=lens.len()).map(|_| 1 + rnd(1000)).collect();
    let wsum: u64 = weights.iter().sum();
    let mut off = 0;
    let mut out = Vec::new();
    for (i, len) in lens.into_iter().enumerate() {
        off += (gap_total as u128 * weights[i] as u128 / wsum as u128) as u64 * 4096;
        out.push((off, len, rnd(5) == 0));
        off += len;
    }
    out
}

/// 4 KiB of data every `stride` bytes over the first `span` bytes: one
/// extent per block, the per-extent cost at its worst.
pub(super) fn fragmented(span: u64, stride: u64) -> Vec<Extent> {
    (0..span / stride)
        .map(|i| (i * stride, 4096, false))
        .collect()
}

/// Writes the image of `size` bytes (incompressible data, written zeros)
/// and syncs it.
pub(super) fn make_image_of(path: &Path, layout: &[Extent], size: u64) -> anyhow::Result<()> {
    let f = File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut buf = vec![0u8; 4 << 20];
    let zeros = vec![0u8; 4 << 20];
    for &(off, len, is_zero) in layout {
        let mut pos = 0;
        while pos < len {
            let n = (len - pos).min(buf.len() as u64) as usize;
            if is_zero {
                f.write_all_at(&zeros[..n], off + pos)?;
            } else {
                for w in buf[..n].chunks_exact_mut(8) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    w.copy_from_slice(&(x | 1).to_ne_bytes());
                }
                f.write_all_at(&buf[..n], off + pos)?;
            }
            pos += n as u64;
        }
    }
    f.set_len(size)?;
    f.sync_all()?;
    Ok(())
}

/// Bytes of `path` in the page cache.
pub(super) fn cached(path: &Path) -> anyhow::Result<u64> {
    let f = File::open(path)?;
    let cs = sparsekit_sys::pagecache::cachestat(&f, 0, 0).context("cachestat (Linux 6.5+)")?;
    Ok(cs.nr_cache * sparsekit_sys::pagecache::page_size() as u64)
}

/// The data extents of `path` (SEEK_DATA/SEEK_HOLE), merged into `out`.
pub(super) fn data_extents(path: &Path, out: &mut Vec<(u64, u64)>) -> anyhow::Result<()> {
    let f = File::open(path)?;
    for e in MapOptions::new().method(Method::Seek).map(&f)? {
        let e = e?;
        if e.kind == ExtentKind::Data {
            out.push((e.offset, e.offset + e.length));
        }
    }
    Ok(())
}

/// Gaps between data ranges up to this are read along with them.
const MERGE_GAP: u64 = 1 << 20;

/// Identical content: equal sizes, and every range that is data on either
/// side reads the same on both (a hole reads as zeros). Each byte is read
/// once per file, however the two files' extents overlap.
pub(super) fn identical(src: &Path, dst: &Path) -> anyhow::Result<bool> {
    if std::fs::metadata(src)?.len() != std::fs::metadata(dst)?.len() {
        return Ok(false);
    }
    let mut ranges = Vec::new();
    data_extents(src, &mut ranges)?;
    data_extents(dst, &mut ranges)?;
    ranges.sort_unstable();
    let mut union: Vec<(u64, u64)> = Vec::new();
    for (start, end) in ranges {
        match union.last_mut() {
            // Ranges closer than a read apart are read as one: the gap is a
            // hole in both files (zeros either side), and one request per
            // 4 KiB extent made the 1 M-extent workload take minutes here.
            Some(last) if start <= last.1 + MERGE_GAP => last.1 = last.1.max(end),
            _ => union.push((start, end)),
        }
    }
    let (a, b) = (File::open(src)?, File::open(dst)?);
    let (mut x, mut y) = (vec![0u8; 4 << 20], vec![0u8; 4 << 20]);
    for (start, end) in union {
        let mut pos = start;
        while pos < end {
            let n = (end - pos).min(x.len() as u64) as usize;
            a.read_exact_at(&mut x[..n], pos)?;
            b.read_exact_at(&mut y[..n], pos)?;
            if x[..n] != y[..n] {
                return Ok(false);
            }
            pos += n as u64;
        }
    }
    Ok(true)
}

/// A path as the `&str` a command line takes.
pub(super) fn s(p: &Path) -> anyhow::Result<&str> {
    p.to_str().context("non-UTF-8 path")
}
