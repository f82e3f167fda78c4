//! Mapping a 200,000-extent file: `sparsekit map --method seek` against
//! `xfs_io -c "seek -a -r 0"` on the same file, on ext4 and xfs; peak memory
//! must stay under 64 MiB. Also the same for FIEMAP against `xfs_io -c fiemap`.

use super::measure::{best_of_pair, sparsekit_bin};
use crate::defs;
use anyhow::{Context, ensure};
use std::os::unix::fs::FileExt;

/// Extent count of the benchmark file (half data, half holes).
const EXTENTS: u64 = 200_000;

/// Entry point.
pub fn run(_args: &[String]) -> anyhow::Result<()> {
    let defs = defs::load(&defs::matrix_path())?;
    let bin = sparsekit_bin()?;
    println!("extents: mapping a {EXTENTS}-extent file (best of 7, interleaved)");
    println!(
        "{:<6} {:<28} {:>9} {:>10} {:>8}",
        "fs", "command", "seconds", "peak KiB", "ratio"
    );
    let mut worst_rss = 0;
    for name in ["ext4", "xfs"] {
        let mut def = defs.iter().find(|d| d.name == name).context(name)?.clone();
        // 100,000 allocated blocks plus metadata do not fit the scenarios' 512 MiB.
        def.image_size = "2G".into();
        crate::tools::ensure(&def, true).map_err(anyhow::Error::msg)?;
        let fs = super::mount(&def)?;
        let path = fs.mountpoint().join("fragmented");
        let f = std::fs::File::create(&path)?;
        let block = 4096u64;
        for i in 0..EXTENTS / 2 {
            f.write_all_at(&[1], i * 2 * block)?;
        }
        f.set_len(EXTENTS * block)?;
        f.sync_all()?;
        drop(f);
        let p = path.to_str().context("path")?;
        let bin = bin.to_str().context("bin")?;
        let pairs: [(&str, Vec<&str>, Vec<&str>); 2] = [
            (
                "seek",
                vec![bin, "map", "--method", "seek", p],
                vec!["xfs_io", "-r", "-c", "seek -a -r 0", p],
            ),
            (
                "fiemap",
                vec![bin, "map", "--method", "fiemap", p],
                vec!["xfs_io", "-r", "-c", "fiemap", p],
            ),
        ];
        for (label, ours, peer) in pairs {
            let (a, b) = best_of_pair(7, &ours, &peer)?;
            worst_rss = worst_rss.max(a.max_rss_kib);
            println!(
                "{name:<6} {:<28} {:>9.3} {:>10} {:>8.2}",
                format!("sparsekit map --method {label}"),
                a.seconds,
                a.max_rss_kib,
                a.seconds / b.seconds.max(0.001)
            );
            println!(
                "{name:<6} {:<28} {:>9.3} {:>10} {:>8}",
                format!("xfs_io {label}"),
                b.seconds,
                b.max_rss_kib,
                "1.00"
            );
        }
    }
    ensure!(
        worst_rss < 64 * 1024,
        "peak memory {worst_rss} KiB exceeds 64 MiB"
    );
    Ok(())
}
