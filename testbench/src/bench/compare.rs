//! Comparing two copies of a disk image against the peer tools.
//!
//! Two images, each on an ext4 loop mount (A) and copied by `sparsekit
//! copy` to an xfs loop mount (B):
//! 1. 4 GiB with 10 % data in random 64 KiB–4 MiB extents (a fifth of them
//!    written zeros): the copy benchmark's layout;
//! 2. fragmented: 4 KiB of data every 16 KiB over 2 GiB (131,072 extents).
//!
//! `sparsekit compare A B`, `cmp A B` and `qemu-img compare -f raw -F raw
//! A B` run in turn, caches dropped before every run, each must exit 0.
//! Reported per tool: median and best wall time, ratio of the median to
//! the faster peer's, and the page cache left (A + B, worst run). Target
//! (issue #14): sparsekit's median ≤ 0.5 × the faster peer's. Under each
//! table, the [device reference](super::device): both files' data read
//! raw, the least any comparison has to read. The machine's
//! load average is printed before and after, as other work skews timings.

use super::device;
use super::image::{cached, layout_of, make_image_of, s};
use super::measure::{drop_caches, run as measure, sparsekit_bin};
use crate::defs;
use anyhow::{Context, bail, ensure};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

const RUNS: usize = 5;
const MIB: f64 = (1 << 20) as f64;

/// The fragmented image: 4 KiB of incompressible data every 16 KiB.
fn make_fragmented(path: &Path, size: u64) -> anyhow::Result<()> {
    let f = File::create(path)?;
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut block = [0u8; 4096];
    for off in (0..size).step_by(16 << 10) {
        for w in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&(x | 1).to_ne_bytes());
        }
        f.write_all_at(&block, off)?;
    }
    f.set_len(size)?;
    f.sync_all()?;
    Ok(())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Entry point.
pub fn run(_args: &[String]) -> anyhow::Result<()> {
    let defs = defs::load(&defs::matrix_path())?;
    let bin = sparsekit_bin()?;
    let bin = s(&bin)?.to_owned();
    ensure!(
        crate::tools::have("qemu-img"),
        "qemu-img missing: apt-get install qemu-utils"
    );
    let def = |name: &str| -> anyhow::Result<crate::defs::FsDef> {
        let mut d = defs
            .iter()
            .find(|d| d.name == name)
            .context("no such filesystem")?
            .clone();
        crate::tools::ensure(&d, true).map_err(anyhow::Error::msg)?;
        d.image_size = "2G".into();
        Ok(d)
    };
    let ext4 = super::mount(&def("ext4")?)?;
    let xfs = super::mount(&def("xfs")?)?;
    let mut missed = Vec::new();
    let images: [(&str, u64); 2] = [("sparse", 4 << 30), ("fragmented", 2 << 30)];
    for (name, size) in images {
        let a = ext4.mountpoint().join(format!("{name}.img"));
        let b = xfs.mountpoint().join(format!("{name}.img"));
        let (data, extents) = if name == "sparse" {
            let layout = layout_of(size, 0x5EED_C0DE);
            make_image_of(&a, &layout, size)?;
            (layout.iter().map(|e| e.1).sum::<u64>(), layout.len())
        } else {
            make_fragmented(&a, size)?;
            (size / 4, (size / (16 << 10)) as usize)
        };
        let o = std::process::Command::new(&bin)
            .args(["copy", "--no-progress", "--reflink", "never"])
            .args([&a, &b])
            .output()?;
        ensure!(
            o.status.success(),
            "sparsekit copy: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let (ap, bp) = (s(&a)?, s(&b)?);
        let tools: [(&str, Vec<&str>, bool); 3] = [
            ("sparsekit compare", vec![&bin, "compare", ap, bp], false),
            ("cmp", vec!["cmp", ap, bp], true),
            (
                "qemu-img compare",
                vec!["qemu-img", "compare", "-f", "raw", "-F", "raw", ap, bp],
                true,
            ),
        ];
        println!(
            "compare: {name} image, {:.0} MiB, {:.0} MiB data per side, ext4 vs xfs loop mounts, caches dropped before each run, {RUNS} rounds in turn; load {}",
            size as f64 / MIB,
            data as f64 / MIB,
            loadavg()
        );
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); tools.len()];
        let mut cache_left = vec![0u64; tools.len()];
        let mut reference = Vec::new();
        for _ in 0..RUNS {
            for (i, (label, argv, _)) in tools.iter().enumerate() {
                drop_caches()?;
                let cost = measure(argv).with_context(|| format!("{label} (must exit 0)"))?;
                times[i].push(cost.seconds);
                cache_left[i] = cache_left[i].max(cached(&a)? + cached(&b)?);
            }
            if device::applies(data, extents) {
                reference.push(device::read(&[a.as_path(), b.as_path()])?);
            }
        }
        let medians: Vec<f64> = times.iter_mut().map(|t| median(t)).collect();
        let fastest_peer = tools
            .iter()
            .zip(&medians)
            .filter(|(t, _)| t.2)
            .map(|(_, m)| *m)
            .fold(f64::INFINITY, f64::min);
        println!(
            "{:<20} {:>9} {:>8} {:>9} {:>11}",
            "command", "median s", "best s", "ratio", "cache MiB"
        );
        for (i, (label, _, _)) in tools.iter().enumerate() {
            let best = times[i].iter().copied().fold(f64::INFINITY, f64::min);
            println!(
                "{:<20} {:>9.3} {:>8.3} {:>9.2} {:>11.1}",
                label,
                medians[i],
                best,
                medians[i] / fastest_peer,
                cache_left[i] as f64 / MIB
            );
        }
        println!(
            "{}",
            device::describe("both files' data read", &reference, fastest_peer, 0.5)
        );
        println!("load after: {}", loadavg());
        if medians[0] > 0.5 * fastest_peer {
            missed.push(format!(
                "{name}: sparsekit compare median {:.3} s > 0.5 × the faster peer ({:.3} s)",
                medians[0], fastest_peer
            ));
        }
        if cache_left[0] > data / 100 {
            missed.push(format!(
                "{name}: sparsekit compare left {:.1} MiB in the page cache (> 1 % of the data)",
                cache_left[0] as f64 / MIB
            ));
        }
        std::fs::remove_file(&a)?;
        std::fs::remove_file(&b)?;
    }
    drop(xfs);
    drop(ext4);
    if !missed.is_empty() {
        bail!("compare targets missed:\n  {}", missed.join("\n  "));
    }
    println!("compare: all targets met");
    Ok(())
}
