//! Latency of healthy probes: p50/p99 over 100,000 calls each of
//! `sparsekit-probe` with and without timeout mode, against a plain statx
//! loop (rustix, same mask), on a file descriptor and on a path, on ext4
//! and tmpfs. Timeout mode hands each call to a worker thread; its extra
//! cost at p50 must stay within a few microseconds.

use crate::defs;
use anyhow::{Context, ensure};
use rustix::fs::{AtFlags, CWD, StatxFlags};
use sparsekit_probe::{Fields, ProbeOptions, WorkerPool};
use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

/// Calls per series.
const CALLS: usize = 100_000;
/// Calls are made in this many interleaved rounds, so a burst of load on
/// the machine hits every series alike.
const ROUNDS: usize = 10;
/// The most timeout mode may add to the p50 of a plain statx. The target is
/// "a few microseconds"; this leaves room for a busy 2-core machine.
const MAX_P50_OVERHEAD: Duration = Duration::from_micros(10);

#[derive(Clone, Copy)]
enum Series {
    PlainFd,
    ProbeFd,
    TimedFd,
    PlainPath,
    ProbePath,
    TimedPath,
}

impl Series {
    const ALL: [Series; 6] = [
        Series::PlainFd,
        Series::ProbeFd,
        Series::TimedFd,
        Series::PlainPath,
        Series::ProbePath,
        Series::TimedPath,
    ];

    fn label(self) -> &'static str {
        match self {
            Series::PlainFd => "plain statx(fd, AT_EMPTY_PATH)",
            Series::ProbeFd => "probe_fd",
            Series::TimedFd => "probe_fd --timeout",
            Series::PlainPath => "plain statx(path)",
            Series::ProbePath => "probe_path",
            Series::TimedPath => "probe_path --timeout",
        }
    }

    /// The plain series this one is compared with.
    fn baseline(self) -> Series {
        match self {
            Series::PlainFd | Series::ProbeFd | Series::TimedFd => Series::PlainFd,
            _ => Series::PlainPath,
        }
    }
}

struct Target<'a> {
    file: &'a File,
    path: &'a Path,
    probe: ProbeOptions,
    timed: ProbeOptions,
}

impl Target<'_> {
    /// One call of `series`, timed.
    fn call(&self, series: Series) -> anyhow::Result<Duration> {
        let mask = StatxFlags::BASIC_STATS;
        let start = Instant::now();
        let size = match series {
            Series::PlainFd => {
                rustix::fs::statx(self.file, c"", AtFlags::EMPTY_PATH, mask)?.stx_size
            }
            Series::PlainPath => {
                rustix::fs::statx(CWD, self.path, AtFlags::empty(), mask)?.stx_size
            }
            Series::ProbeFd => self.probe.probe_fd(self.file)?.size().context("size")?,
            Series::ProbePath => self.probe.probe_path(self.path)?.size().context("size")?,
            Series::TimedFd => self.timed.probe_fd(self.file)?.size().context("size")?,
            Series::TimedPath => self.timed.probe_path(self.path)?.size().context("size")?,
        };
        let took = start.elapsed();
        ensure!(size == 4096, "size {size}");
        Ok(took)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Measures every series on `dir`; returns the worst p50 overhead of
/// timeout mode.
fn measure(fs_name: &str, dir: &Path) -> anyhow::Result<Duration> {
    let path = dir.join("probe-bench");
    std::fs::write(&path, [7u8; 4096])?;
    let file = File::open(&path)?;
    let pool = WorkerPool::new(4);
    let target = Target {
        file: &file,
        path: &path,
        probe: ProbeOptions::new().fields(Fields::BASIC),
        timed: ProbeOptions::new()
            .fields(Fields::BASIC)
            .timeout(Duration::from_secs(5))
            .pool(pool.clone()),
    };
    for series in Series::ALL {
        for _ in 0..2_000 {
            target.call(series)?;
        }
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(CALLS); Series::ALL.len()];
    for _ in 0..ROUNDS {
        for (i, series) in Series::ALL.into_iter().enumerate() {
            for _ in 0..CALLS / ROUNDS {
                samples[i].push(target.call(series)?);
            }
        }
    }
    ensure!(pool.stuck() == 0, "probes stuck on a healthy filesystem");
    let mut p50 = [Duration::ZERO; 6];
    for (i, s) in samples.iter_mut().enumerate() {
        s.sort_unstable();
        p50[i] = percentile(s, 0.50);
    }
    let mut worst = Duration::ZERO;
    for (i, series) in Series::ALL.into_iter().enumerate() {
        let s = &samples[i];
        let base = p50[series.baseline() as usize];
        let overhead = p50[i].saturating_sub(base);
        if matches!(series, Series::TimedFd | Series::TimedPath) {
            worst = worst.max(overhead);
        }
        println!(
            "{fs_name:<6} {:<32} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>7.2}",
            series.label(),
            us(p50[i]),
            us(percentile(s, 0.99)),
            us(percentile(s, 0.999)),
            us(overhead),
            p50[i].as_secs_f64() / base.as_secs_f64().max(1e-9),
        );
    }
    std::fs::remove_file(&path)?;
    Ok(worst)
}

/// Entry point.
pub fn run(_args: &[String]) -> anyhow::Result<()> {
    let defs = defs::load(&defs::matrix_path())?;
    println!(
        "probe: latency of {CALLS} healthy probes per series (µs; overhead = p50 - plain p50; ratio = p50 / plain p50)"
    );
    println!(
        "{:<6} {:<32} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "fs", "series", "p50", "p99", "p99.9", "overhead", "ratio"
    );
    let mut worst = Duration::ZERO;
    for name in ["ext4", "tmpfs"] {
        let def = defs.iter().find(|d| d.name == name).context(name)?;
        crate::tools::ensure(def, true).map_err(anyhow::Error::msg)?;
        let fs = super::mount(def)?;
        worst = worst.max(measure(name, fs.mountpoint())?);
    }
    println!(
        "probe: timeout mode adds at most {:.2} µs at p50 (limit {:.0} µs)",
        us(worst),
        us(MAX_P50_OVERHEAD)
    );
    ensure!(
        worst <= MAX_P50_OVERHEAD,
        "timeout mode adds {:.2} µs per call at p50, more than {:.0} µs",
        us(worst),
        us(MAX_P50_OVERHEAD)
    );
    Ok(())
}
