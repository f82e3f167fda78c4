//! What the device itself takes to move a workload's bytes: every data
//! extent read (and for a copy written back at the same offset in a new
//! file, then fsynced) with `O_DIRECT`, 8 MiB requests, 16 in flight per
//! file, after dropping caches, between the tools of every round, and
//! nothing else: no zero check, no comparison, no holes made. A tool needs
//! at least these bytes moved, so when 0.8 × (or 0.5 ×) the fastest peer
//! is below this time the target asks for more than the device gives,
//! whatever the tool does. It is a reference, not a proven bound (buffered
//! readahead and writeback may keep more in flight), and it is not taken
//! on fragmented layouts, where it bounds nothing.

use super::image::data_extents;
use super::measure::drop_caches;
use anyhow::Context;
use rustix::fs::{Mode, OFlags, open};
use sparsekit_sys::aligned::AlignedBuf;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

const REQUEST: u64 = 8 << 20;
const IN_FLIGHT: usize = 16;

/// One timed transfer.
#[derive(Clone, Copy, Debug)]
pub struct Reference {
    pub seconds: f64,
    /// Bytes read (and, for a copy, as many written).
    pub bytes: u64,
}

/// `path`'s data extents cut into requests of at most [`REQUEST`] bytes,
/// each rounded up to 4 KiB (`O_DIRECT`; a short read at the end is fine).
fn requests(path: &Path) -> anyhow::Result<Vec<(u64, u64)>> {
    let mut extents = Vec::new();
    data_extents(path, &mut extents)?;
    let mut out = Vec::new();
    for (start, end) in extents {
        for off in (start..end).step_by(REQUEST as usize) {
            out.push((off, (end - off).min(REQUEST).next_multiple_of(4096)));
        }
    }
    Ok(out)
}

fn open_direct(path: &Path, flags: OFlags) -> anyhow::Result<File> {
    let fd = open(
        path,
        flags | OFlags::DIRECT | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .with_context(|| format!("open {} with O_DIRECT", path.display()))?;
    Ok(File::from(fd))
}

/// Runs `each` over `work` from [`IN_FLIGHT`] threads, each with its own
/// buffer.
fn spread(
    work: &[(u64, u64)],
    each: impl Fn(&mut [u8], u64) -> std::io::Result<()> + Sync,
) -> anyhow::Result<()> {
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..IN_FLIGHT)
            .map(|_| {
                s.spawn(|| -> std::io::Result<()> {
                    let mut buf = AlignedBuf::new(REQUEST as usize);
                    while let Some(&(off, len)) = work.get(next.fetch_add(1, Ordering::Relaxed)) {
                        each(&mut buf.as_mut_slice()[..len as usize], off)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().expect("device reference thread panicked")?;
        }
        Ok(())
    })
}

/// Reads every data extent of every file in `files`, all files at once.
pub fn read(files: &[&Path]) -> anyhow::Result<Reference> {
    let opened = files
        .iter()
        .map(|p| Ok((open_direct(p, OFlags::RDONLY)?, requests(p)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    drop_caches()?;
    let t = Instant::now();
    std::thread::scope(|s| {
        let jobs: Vec<_> = opened
            .iter()
            .map(|(f, work)| s.spawn(move || spread(work, |buf, off| read_fully(f, buf, off))))
            .collect();
        jobs.into_iter()
            .try_for_each(|j| j.join().expect("device reference thread panicked"))
    })?;
    Ok(Reference {
        seconds: t.elapsed().as_secs_f64(),
        bytes: opened.iter().flat_map(|(_, r)| r).map(|r| r.1).sum(),
    })
}

/// Reads `src`'s data extents and writes each at its offset into `dst`
/// (created, removed afterwards), then fsyncs `dst`.
pub fn copy(src: &Path, dst: &Path) -> anyhow::Result<Reference> {
    let from = open_direct(src, OFlags::RDONLY)?;
    let work = requests(src)?;
    let _ = std::fs::remove_file(dst);
    let to = open_direct(dst, OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL)?;
    drop_caches()?;
    let t = Instant::now();
    let res = spread(&work, |buf, off| {
        read_fully(&from, buf, off)?;
        to.write_all_at(buf, off)
    })
    .and_then(|()| to.sync_all().context("fsync"));
    let seconds = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(dst);
    res?;
    Ok(Reference {
        seconds,
        bytes: work.iter().map(|r| r.1).sum(),
    })
}

/// Reads `buf.len()` bytes at `off`; past the end of the file, zeros.
fn read_fully(f: &File, buf: &mut [u8], off: u64) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], off + done as u64)? {
            0 => break,
            n => done += n,
        }
    }
    buf[done..].fill(0);
    Ok(())
}

/// Average extent size below which the reference is not measured: one
/// `O_DIRECT` request per small extent is slower than buffered readahead
/// (4 KiB extents: 23.3 s against nbdcopy's 11.3 s on frag130k), so it
/// bounds nothing there.
const SMALLEST_AVERAGE_EXTENT: u64 = 64 << 10;

/// Whether a layout of `data` bytes in `extents` extents gets a reference.
pub fn applies(data: u64, extents: usize) -> bool {
    data / extents.max(1) as u64 >= SMALLEST_AVERAGE_EXTENT
}

/// The reference's line under a benchmark table, from the measurements
/// taken in its rounds (their median: what else loads the machine weighs
/// on the tools and the reference alike); none when it does not
/// [apply](applies).
pub fn describe(what: &str, rounds: &[Reference], fastest_peer: f64, target: f64) -> String {
    let mut sorted = rounds.to_vec();
    sorted.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    let Some(r) = sorted.get(sorted.len() / 2) else {
        return format!(
            "device reference: not measured (extents under {} KiB on average: one O_DIRECT request each bounds nothing)",
            SMALLEST_AVERAGE_EXTENT >> 10
        );
    };
    let allowed = target * fastest_peer;
    let verdict = if r.seconds > allowed {
        format!(
            "above {target} x the fastest peer ({allowed:.3} s): moving these bytes raw takes longer than the target allows"
        )
    } else {
        format!("within {target} x the fastest peer ({allowed:.3} s)")
    };
    format!(
        "device reference ({what}, O_DIRECT, {} MiB requests, {IN_FLIGHT} in flight per file, median of the rounds): {:.0} MiB in {:.3} s ({:.2} GB/s), {verdict}",
        REQUEST >> 20,
        r.bytes as f64 / (1u64 << 20) as f64,
        r.seconds,
        r.bytes as f64 / r.seconds / 1e9,
    )
}
