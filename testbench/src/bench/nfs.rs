//! The copy benchmark over NFS: the `nfs4.2-xfs` definition (a kernel NFS
//! server and its client in this machine, over 127.0.0.1), one sparse
//! image, three workloads — NFS → local, local → NFS, and within the export
//! (where `copy_file_range` becomes a server-side COPY) — each copied by
//! `sparsekit copy`, `cp --sparse=always`, `qemu-img convert` and `nbdcopy`,
//! interleaved, caches dropped before every run (client and server share
//! the page cache here). Prints medians and our time as a ratio of each
//! peer's. Needs a kernel with NFS: run it in a guest (the README's "NFS").

use super::image::{layout_of, make_image_of, s};
use super::measure::{self, drop_caches, sparsekit_bin};
use crate::defs::{FsDef, load, matrix_path};
use anyhow::{Context, bail, ensure};
use std::path::{Path, PathBuf};

/// Small enough for a TCG guest: 256 MiB with 10 % data.
const SIZE: u64 = 256 << 20;
const RUNS: usize = 3;

/// One peer or ours: a label and the command for (source, destination).
type Tool = (&'static str, fn(&str, &str, &str) -> Vec<String>);

const TOOLS: [Tool; 4] = [
    ("sparsekit copy", |bin, a, b| {
        vec![bin.into(), "copy".into(), a.into(), b.into()]
    }),
    ("cp --sparse=always", |_, a, b| {
        vec!["cp".into(), "--sparse=always".into(), a.into(), b.into()]
    }),
    ("qemu-img convert", |_, a, b| {
        ["qemu-img", "convert", "-f", "raw", "-O", "raw", a, b]
            .iter()
            .map(|x| x.to_string())
            .collect()
    }),
    ("nbdcopy", |_, a, b| {
        vec!["nbdcopy".into(), a.into(), b.into()]
    }),
];

/// Entry point: `sparsekit-testbench bench nfs`.
pub fn run(_args: &[String]) -> anyhow::Result<()> {
    let defs = load(&matrix_path())?;
    let def: &FsDef = defs
        .iter()
        .find(|d| d.name == "nfs4.2-xfs")
        .context("matrix.toml lacks nfs4.2-xfs")?;
    if let Err(why) = crate::tools::ensure(def, false) {
        bail!("the NFS copy benchmark cannot run here: {why}");
    }
    for (_, prog) in [("", "qemu-img"), ("", "nbdcopy")] {
        ensure!(
            crate::tools::have(prog),
            "{prog} not found (qemu-utils, libnbd-bin)"
        );
    }
    let bin = sparsekit_bin()?;
    let bin = s(&bin)?.to_owned();
    let fs = super::mount(def)?;
    let local = tempfile::tempdir()?;
    let nfs_src = fs.mountpoint().join("src.img");
    let local_src = local.path().join("src.img");
    let layout = layout_of(SIZE, 7);
    make_image_of(&nfs_src, &layout, SIZE)?;
    make_image_of(&local_src, &layout, SIZE)?;
    let data: u64 = layout.iter().map(|l| l.1).sum();
    println!(
        "NFS copy benchmark: {} MiB image, {} MiB data, NFS {} over 127.0.0.1 (server exports xfs), \
         median of {RUNS} interleaved runs, caches dropped before each run",
        SIZE >> 20,
        data >> 20,
        def.nfs_version().unwrap_or("?")
    );
    let workloads: [(&str, &Path, PathBuf); 3] = [
        ("NFS -> local", &nfs_src, local.path().join("dst.img")),
        ("local -> NFS", &local_src, fs.mountpoint().join("dst.img")),
        (
            "within the export",
            &nfs_src,
            fs.mountpoint().join("dst2.img"),
        ),
    ];
    for (name, src, dst) in &workloads {
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); TOOLS.len()];
        for _ in 0..RUNS {
            for (i, (label, argv)) in TOOLS.iter().enumerate() {
                let _ = std::fs::remove_file(dst);
                if *label == "nbdcopy" {
                    // nbdcopy writes into an existing destination of the size.
                    std::fs::File::create(dst)?.set_len(SIZE)?;
                }
                drop_caches()?;
                let argv = argv(&bin, s(src)?, s(dst)?);
                let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
                let cost = measure::run(&refs).with_context(|| format!("{name}: {label}"))?;
                ensure!(
                    std::fs::read(src)? == std::fs::read(dst)?,
                    "{name}: {label} made a copy that differs"
                );
                times[i].push(cost.seconds);
            }
        }
        let best: Vec<f64> = times
            .iter_mut()
            .map(|t| {
                t.sort_by(f64::total_cmp);
                t[t.len() / 2]
            })
            .collect();
        let _ = std::fs::remove_file(dst);
        println!("{name}:");
        for (i, (label, _)) in TOOLS.iter().enumerate() {
            let ratio = if i == 0 {
                String::new()
            } else {
                format!("  sparsekit / this = {:.2}", best[0] / best[i])
            };
            println!("  {label:<20} {:>7.2} s{ratio}", best[i]);
        }
    }
    drop(fs);
    Ok(())
}
