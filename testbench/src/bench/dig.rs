//! `sparsekit dig` against `fallocate --dig-holes` (util-linux) on a
//! 4 GiB image (`--size 8` for 8 GiB) with 10 % data, a fifth of it explicit zeros, on ext4 and
//! xfs. Each round writes two identical copies, then digs one with each
//! tool (alternating which goes first) and compares wall time, bytes
//! punched (hole bytes by SEEK_HOLE, and the `st_blocks` decrease) and the
//! file's pages left in the page cache (cachestat, or mincore before Linux
//! 6.5). Both copies must afterwards still hold exactly what was written.
//!
//! Two starting states, each measured for every round:
//! - `cold`: `sync; echo 3 > drop_caches`, so every read goes to the disk
//!   under the bench (noisy on a shared machine);
//! - `file-cold`: only the image's own pages are dropped (synced, then
//!   `POSIX_FADV_DONTNEED`). With `--loop-io buffered` the loop device's
//!   backing file stays cached and the device answers from memory, so the
//!   tools' own efficiency shows; with direct loop I/O (the default) the
//!   reads go to the disk here too, and only the filesystem's metadata
//!   stays cached.
//!
//! Under each filesystem's results, the [device reference](super::device):
//! the image's data read raw, the least any digger has to read.
//!
//! `sparsekit dig` takes its write lease (the exclusion of other writers)
//! inside the timed command, like any user's run.
//!
//! Targets (checked per filesystem and state, issue #16): sparsekit's
//! median time at most 0.8 × fallocate's, at least as many bytes punched
//! in every round, less left in the page cache.
//!
//! `cargo xtask bench dig [--rounds N] [--fs ext4,xfs] [--size GIB]`

use super::device;
use super::measure::{Cost, drop_caches, run as measure, sparsekit_bin};
use crate::defs;
use anyhow::{Context, ensure};
use sparsekit_extents::{ExtentKind, MapOptions, Method};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

/// `sparsekit dig`'s median time against `fallocate --dig-holes`'.
const TIME_TARGET: f64 = 0.8;
const MIB: u64 = 1 << 20;
const BLOCK: u64 = 4096;

/// Entry point.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut rounds = 5;
    let mut size: u64 = 4 << 30;
    let mut filesystems = vec!["ext4".to_owned(), "xfs".to_owned()];
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rounds" => rounds = it.next().context("--rounds N")?.parse()?,
            "--size" => size = it.next().context("--size GIB")?.parse::<u64>()? << 30,
            "--fs" => {
                filesystems = it
                    .next()
                    .context("--fs NAMES")?
                    .split(',')
                    .map(String::from)
                    .collect()
            }
            _ => {}
        }
    }
    let defs = defs::load(&defs::matrix_path())?;
    let bin = sparsekit_bin()?;
    let bin = bin.to_str().context("bin")?;
    let layout = Layout::generate(0x05ee_dd16, size);
    println!(
        "dig: {} GiB image, {:.1} MiB data in {} extents, {:.1} MiB of it explicit zeros in {} runs",
        size >> 30,
        layout.data_bytes() as f64 / MIB as f64,
        layout.pieces.len(),
        layout.zero_bytes() as f64 / MIB as f64,
        layout.zero_runs()
    );
    println!(
        "{:<5} {:<9} {:>5} {:<22} {:>8} {:>9} {:>13} {:>13} {:>14}",
        "fs",
        "start",
        "round",
        "command",
        "seconds",
        "peak KiB",
        "punched B",
        "st_blocks B",
        "cache left KiB"
    );
    let mut all_ok = true;
    for name in &filesystems {
        let mut def = defs
            .iter()
            .find(|d| &d.name == name)
            .context(name.clone())?
            .clone();
        crate::tools::ensure(&def, true).map_err(anyhow::Error::msg)?;
        def.image_size = "20G".into();
        let fs = super::mount(&def)?;
        for start in [Start::Cold, Start::FileCold] {
            let mut ours = Vec::new();
            let mut peer = Vec::new();
            let mut reference = Vec::new();
            for round in 1..=rounds {
                let (o, p, r) = one_round(&layout, fs.mountpoint(), bin, start, round)?;
                print_row(name, start, round, "sparsekit dig", &o);
                print_row(name, start, round, "fallocate --dig-holes", &p);
                ours.push(o);
                peer.push(p);
                reference.push(r);
            }
            all_ok &= summarize(name, start, &ours, &peer, &reference);
        }
    }
    ensure!(all_ok, "a dig target was missed (see above)");
    Ok(())
}

/// What is cached when a tool starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// All caches dropped.
    Cold,
    /// Only the image's own pages dropped.
    FileCold,
}

impl Start {
    fn name(self) -> &'static str {
        match self {
            Start::Cold => "cold",
            Start::FileCold => "file-cold",
        }
    }
}

/// Two fresh identical copies, one dug by each tool; the first round of
/// each state also checks both still hold what was written. The device
/// reference reads one copy's data first.
fn one_round(
    layout: &Layout,
    dir: &Path,
    bin: &str,
    start: Start,
    round: usize,
) -> anyhow::Result<(Run, Run, device::Reference)> {
    let (a, b) = (dir.join("ours.img"), dir.join("peer.img"));
    layout.write(&a)?;
    layout.write(&b)?;
    ensure!(
        allocated(&a)? == allocated(&b)?,
        "the two copies differ in allocation: {} vs {}",
        allocated(&a)?,
        allocated(&b)?
    );
    let reference = device::read(&[a.as_path()])?;
    let ours_argv = [bin, "dig", s(&a)?];
    let peer_argv = ["fallocate", "--dig-holes", s(&b)?];
    let (o, p) = if round % 2 == 1 {
        let o = measured(&a, &ours_argv, start)?;
        (o, measured(&b, &peer_argv, start)?)
    } else {
        let p = measured(&b, &peer_argv, start)?;
        (measured(&a, &ours_argv, start)?, p)
    };
    if round == 1 {
        layout
            .verify(&a)
            .context("sparsekit dig changed the content")?;
        layout
            .verify(&b)
            .context("fallocate --dig-holes changed the content")?;
    }
    std::fs::remove_file(&a)?;
    std::fs::remove_file(&b)?;
    Ok((o, p, reference))
}

/// One tool's run on one copy.
#[derive(Debug, Clone, Copy)]
struct Run {
    cost: Cost,
    /// Bytes that became holes (SEEK_HOLE): what was punched, exactly.
    punched: u64,
    /// `st_blocks` decrease: the same, give or take extent-tree blocks,
    /// which depend on how each copy happened to be laid out on disk.
    freed: u64,
    cache_left: u64,
}

fn measured(path: &Path, argv: &[&str], start: Start) -> anyhow::Result<Run> {
    let before = allocated(path)?;
    let holes_before = hole_bytes(path)?;
    match start {
        Start::Cold => drop_caches()?,
        Start::FileCold => {
            let f = File::open(path)?;
            f.sync_all()?;
            rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed)?;
            let left = resident_bytes(&f)?;
            ensure!(left == 0, "{left} bytes of the image stayed cached");
        }
    }
    let cost = measure(argv)?;
    // Before anything else reads the file.
    let cache_left = resident_bytes(&File::open(path)?)?;
    Ok(Run {
        cost,
        punched: hole_bytes(path)?.saturating_sub(holes_before),
        freed: before.saturating_sub(allocated(path)?),
        cache_left,
    })
}

/// Bytes of `f` in the page cache: cachestat (Linux 6.5), else mincore.
pub(crate) fn resident_bytes(f: &File) -> anyhow::Result<u64> {
    use sparsekit_sys::pagecache::{cachestat, mincore_file, page_size};
    let len = f.metadata()?.len();
    let page = page_size() as u64;
    if len == 0 {
        return Ok(0);
    }
    match cachestat(f, 0, len) {
        Ok(c) => Ok(c.nr_cache * page),
        Err(_) => {
            let mut residency = vec![0u8; len.div_ceil(page) as usize];
            mincore_file(f, 0, len as usize, &mut residency).context("mincore")?;
            Ok(residency.iter().filter(|&&r| r & 1 == 1).count() as u64 * page)
        }
    }
}

/// Bytes in holes, by SEEK_DATA/SEEK_HOLE (no data is read).
fn hole_bytes(path: &Path) -> anyhow::Result<u64> {
    let f = File::open(path)?;
    let mut holes = 0;
    for e in MapOptions::new().method(Method::Seek).map(&f)? {
        let e = e?;
        if e.kind != ExtentKind::Data {
            holes += e.length;
        }
    }
    Ok(holes)
}

fn print_row(fs: &str, start: Start, round: usize, label: &str, r: &Run) {
    println!(
        "{fs:<5} {:<9} {round:>5} {label:<22} {:>8.3} {:>9} {:>13} {:>13} {:>14}",
        start.name(),
        r.cost.seconds,
        r.cost.max_rss_kib,
        r.punched,
        r.freed,
        r.cache_left >> 10
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Prints the ratios and whether each target holds.
fn summarize(
    fs: &str,
    start: Start,
    ours: &[Run],
    peer: &[Run],
    reference: &[device::Reference],
) -> bool {
    let t_ours = median(ours.iter().map(|r| r.cost.seconds).collect());
    let t_peer = median(peer.iter().map(|r| r.cost.seconds).collect());
    // Per round, on identical copies: at least as many bytes punched.
    let freed_ok = ours.iter().zip(peer).all(|(o, p)| o.punched >= p.punched);
    let freed_ours: u64 = ours.iter().map(|r| r.freed).sum::<u64>() / ours.len().max(1) as u64;
    let freed_peer: u64 = peer.iter().map(|r| r.freed).sum::<u64>() / peer.len().max(1) as u64;
    let punched_ours = ours.iter().map(|r| r.punched).min().unwrap_or(0);
    let punched_peer = peer.iter().map(|r| r.punched).max().unwrap_or(0);
    let cache_ours = ours.iter().map(|r| r.cache_left).max().unwrap_or(0);
    let cache_peer = peer.iter().map(|r| r.cache_left).min().unwrap_or(0);
    let time_ok = t_ours <= TIME_TARGET * t_peer;
    let cache_ok = cache_ours < cache_peer || (cache_ours == 0 && cache_peer == 0);
    let verdict = |ok: bool| if ok { "ok" } else { "MISSED" };
    println!(
        "{fs} {}: time ratio {:.2} (median {t_ours:.3} s vs {t_peer:.3} s) {}; punched ratio {:.3} ({:.1} vs {:.1} MiB; st_blocks freed {:.1} vs {:.1} MiB) {}; cache left {} KiB vs {} KiB (ratio {:.3}) {}",
        start.name(),
        t_ours / t_peer.max(1e-3),
        verdict(time_ok),
        punched_ours as f64 / punched_peer.max(1) as f64,
        punched_ours as f64 / MIB as f64,
        punched_peer as f64 / MIB as f64,
        freed_ours as f64 / MIB as f64,
        freed_peer as f64 / MIB as f64,
        verdict(freed_ok),
        cache_ours >> 10,
        cache_peer >> 10,
        cache_ours as f64 / cache_peer.max(1) as f64,
        verdict(cache_ok),
    );
    println!(
        "{fs} {}: {}",
        start.name(),
        device::describe("the data read", reference, t_peer, TIME_TARGET)
    );
    time_ok && freed_ok && cache_ok
}

fn allocated(path: &Path) -> anyhow::Result<u64> {
    Ok(std::fs::metadata(path)?.blocks() * 512)
}

fn s(p: &Path) -> anyhow::Result<&str> {
    p.to_str().context("non-UTF-8 path")
}

/// A data extent and the explicit zero runs inside it (offsets absolute).
#[derive(Debug)]
struct Piece {
    offset: u64,
    len: u64,
    zeros: Vec<(u64, u64)>,
}

/// The benchmark image: data extents of 1–3 MiB (about 205 per 4 GiB)
/// spread over the image (10 % data), each with zero runs of 4 KiB–256 KiB making up a
/// fifth of it. Deterministic, so both copies and the check agree.
#[derive(Debug)]
struct Layout {
    pieces: Vec<Piece>,
    seed: u64,
    size: u64,
}

/// xorshift64*: deterministic, and never yields an all-zero 4 KiB block.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

impl Layout {
    fn generate(seed: u64, size: u64) -> Layout {
        let mut rng = Rng(seed | 1);
        let target = size / 10;
        let mut lens = Vec::new();
        let mut total = 0;
        while total < target {
            let len = ((MIB + rng.below(2 * MIB)) / BLOCK * BLOCK).min(target - total);
            lens.push(len);
            total += len;
        }
        // Spread the gaps: random weights over the free space.
        let free = size - total;
        let weights: Vec<u64> = (0..=lens.len()).map(|_| 1 + rng.below(1000)).collect();
        let wsum: u64 = weights.iter().sum();
        let mut pos = 0;
        let mut pieces = Vec::new();
        for (i, len) in lens.into_iter().enumerate() {
            pos += (free as u128 * weights[i] as u128 / wsum as u128) as u64 / BLOCK * BLOCK;
            // A fifth of each piece in zero runs of 4 KiB – 256 KiB.
            let mut zeros = Vec::new();
            let want = len / 5 / BLOCK * BLOCK;
            let mut have = 0;
            let mut cursor = pos;
            while have < want {
                let run = ((1 + rng.below(64)) * BLOCK).min(want - have);
                let room = pos + len - cursor;
                if room < run + BLOCK {
                    break;
                }
                let gap = rng.below((room - run) / BLOCK / 4 + 1) * BLOCK;
                let start = cursor + gap;
                zeros.push((start, run));
                have += run;
                cursor = start + run + BLOCK;
            }
            pieces.push(Piece {
                offset: pos,
                len,
                zeros,
            });
            pos += len;
        }
        Layout { pieces, seed, size }
    }

    fn data_bytes(&self) -> u64 {
        self.pieces.iter().map(|p| p.len).sum()
    }

    fn zero_bytes(&self) -> u64 {
        self.pieces
            .iter()
            .flat_map(|p| p.zeros.iter())
            .map(|z| z.1)
            .sum()
    }

    fn zero_runs(&self) -> usize {
        self.pieces.iter().map(|p| p.zeros.len()).sum()
    }

    /// The bytes of piece `i`.
    fn content(&self, i: usize) -> Vec<u8> {
        let p = &self.pieces[i];
        let mut rng = Rng(self.seed ^ (p.offset | 1));
        let mut buf = Vec::with_capacity(p.len as usize);
        while (buf.len() as u64) < p.len {
            buf.extend_from_slice(&(rng.next() | 1).to_le_bytes());
        }
        buf.truncate(p.len as usize);
        for &(start, len) in &p.zeros {
            let a = (start - p.offset) as usize;
            buf[a..a + len as usize].fill(0);
        }
        buf
    }

    /// Writes the image (replacing `path`) and syncs it.
    fn write(&self, path: &Path) -> anyhow::Result<()> {
        let f = File::create(path)?;
        f.set_len(self.size)?;
        for (i, p) in self.pieces.iter().enumerate() {
            f.write_all_at(&self.content(i), p.offset)?;
        }
        f.sync_all()?;
        Ok(())
    }

    /// Checks every data piece still reads as written.
    fn verify(&self, path: &Path) -> anyhow::Result<()> {
        let f = File::open(path)?;
        ensure!(f.metadata()?.len() == self.size, "size changed");
        let mut buf = Vec::new();
        for (i, p) in self.pieces.iter().enumerate() {
            buf.resize(p.len as usize, 0);
            f.read_exact_at(&mut buf, p.offset)?;
            ensure!(
                buf == self.content(i),
                "data at offset {} differs",
                p.offset
            );
        }
        Ok(())
    }
}
