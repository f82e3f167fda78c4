//! `sparsekit copy` against every peer tool, one table per workload
//! (issue #16):
//!
//! | workload   | image                                                          | from → to   |
//! |------------|----------------------------------------------------------------|-------------|
//! | `small`    | 4 GiB, 10 % data in 64 KiB–4 MiB extents, a fifth written zeros | ext4 → xfs  |
//! | `long`     | 16 GiB, 30 % data in 4–64 MiB runs, a fifth written zeros       | ext4 → xfs  |
//! | `frag130k` | 4 GiB, 4 KiB of data every 16 KiB over 2 GiB: 131 072 extents  | ext4 → xfs  |
//! | `frag1m`   | 8 GiB, 4 KiB of data every 8 KiB over all of it: 1 048 576 extents | ext4 → xfs |
//! | `samefs`   | the `small` image                                              | ext4 → ext4 |
//! | `reflink`  | the `small` image within xfs and within btrfs: a reflink in < 0.1 s | same fs |
//!
//! `frag1m` spans the whole 8 GiB because 4 KiB every 8 KiB needs 8 GiB for
//! 2^20 extents; it is written with one 4 KiB `pwrite` per extent (4 GiB of
//! data, about half a minute here) and copied by every tool in ~2–20 s.
//!
//! Peers: `cp --sparse=always`, `qemu-img convert -O raw` with and without
//! `-t none -T none`, `nbdcopy`, `dd conv=sparse bs=1M`. Every tool runs as
//! `sh -c 'TOOL… && sync DST'` so that each one's data is on the device
//! when its time stops, after `sync; echo 3 > drop_caches`. The tools run
//! in rounds whose order rotates, and the table shows per tool the median
//! wall time, the ratio to the fastest peer, peak RSS, the page cache left
//! (source + destination, cachestat, the worst round), the destination's
//! allocation (and its ratio to cp's) and whether its content is
//! identical to the source (checked after the first round). Under each
//! table, the [device reference](super::device): the data moved raw, the
//! least any tool has to move.
//!
//! Targets (issue #16), for the default `sparsekit copy` on every
//! workload: ≤ 0.8 × the fastest peer, ≤ 1 % of the data left in the page
//! cache, allocation ≤ cp's, peak RSS ≤ 64 MiB, identical output. A missed
//! target fails the bench after every table has been printed.
//!
//! `cargo xtask bench copy [--workloads small,long,frag130k,frag1m,samefs,reflink] [--runs N] [--variant ARGS]…`
//! (default: all, 7 runs; a full run takes about 40 minutes on the
//! 2-core development machine, most of it in `long` and `frag1m`).

use super::device;
use super::image::{Extent, cached, fragmented, identical, layout_of, make_image_of, runs, s};
use super::measure::{Cost, drop_caches, run as measure, sparsekit_bin};
use crate::defs::{self, FsDef};
use anyhow::{Context, bail, ensure};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

const GIB: u64 = 1 << 30;
const MIB: f64 = (1 << 20) as f64;
/// Peak RSS allowed to `sparsekit copy` whatever the image (issue #16, 3).
const RSS_LIMIT_KIB: u64 = 64 << 10;
/// The default `sparsekit copy`'s time against the fastest peer's.
const TIME_TARGET: f64 = 0.8;

/// One benchmark image and where it is copied.
struct Workload {
    name: &'static str,
    about: &'static str,
    size: u64,
    layout: fn() -> Vec<Extent>,
    /// The destination filesystem (the source is always ext4).
    to: &'static str,
    /// Each loop filesystem's size: the data plus room for metadata.
    fs_size: &'static str,
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "small",
        about: "4 GiB, 10 % data in 64 KiB-4 MiB extents, a fifth of it written zeros",
        size: 4 * GIB,
        layout: || layout_of(4 * GIB, 0x5EED_C0DE),
        to: "xfs",
        fs_size: "2G",
    },
    Workload {
        name: "long",
        about: "16 GiB, 30 % data in 4-64 MiB runs, a fifth of it written zeros",
        size: 16 * GIB,
        layout: || runs(16 * GIB, 16 * GIB * 3 / 10, (1024, 16384), 0x10_9A_11),
        to: "xfs",
        fs_size: "7G",
    },
    Workload {
        name: "frag130k",
        about: "4 GiB, 4 KiB of data every 16 KiB over 2 GiB (131072 extents)",
        size: 4 * GIB,
        layout: || fragmented(2 * GIB, 16 << 10),
        to: "xfs",
        // qemu-img convert (buffered) allocates far beyond the 512 MiB of
        // data here: ENOSPC on a 2 GiB xfs.
        fs_size: "6G",
    },
    Workload {
        name: "frag1m",
        about: "8 GiB, 4 KiB of data every 8 KiB over 8 GiB (1048576 extents)",
        size: 8 * GIB,
        layout: || fragmented(8 * GIB, 8 << 10),
        to: "xfs",
        // qemu-img convert writes the 4 KiB gaps as zeros: 8 GiB allocated.
        fs_size: "10G",
    },
    Workload {
        name: "samefs",
        about: "the small image within one ext4 (copy_file_range is possible)",
        size: 4 * GIB,
        layout: || layout_of(4 * GIB, 0x5EED_C0DE),
        to: "ext4",
        fs_size: "3G",
    },
];

/// A command in a workload's table.
struct Tool {
    label: String,
    argv: Vec<String>,
    peer: bool,
}

/// The tools compared on every workload; the first is the default
/// `sparsekit copy`, whose targets are checked.
fn tools(bin: &str, src: &str, dst: &str, same_fs: bool, variants: &[String]) -> Vec<Tool> {
    let t = |label: &str, argv: &[&str], peer| Tool {
        label: label.to_owned(),
        argv: argv.iter().map(|a| a.to_string()).collect(),
        peer,
    };
    let mut v = vec![
        t(
            "sparsekit copy",
            &[bin, "copy", "--no-progress", src, dst],
            false,
        ),
        t(
            "sparsekit copy --sparse always",
            &[bin, "copy", "--no-progress", "--sparse", "always", src, dst],
            false,
        ),
    ];
    for extra in variants {
        let mut argv = vec![bin, "copy", "--no-progress"];
        argv.extend(extra.split_whitespace());
        argv.extend([src, dst]);
        v.push(t(&format!("sparsekit copy {extra}"), &argv, false));
    }
    if same_fs {
        v.push(t(
            "sparsekit copy --strategy copy-file-range",
            &[
                bin,
                "copy",
                "--no-progress",
                "--strategy",
                "copy-file-range",
                "--cache",
                "drop",
                src,
                dst,
            ],
            false,
        ));
    }
    let of = format!("of={dst}");
    let iff = format!("if={src}");
    v.extend([
        t(
            "cp --sparse=always",
            &["cp", "--sparse=always", src, dst],
            true,
        ),
        t(
            "qemu-img convert",
            &["qemu-img", "convert", "-O", "raw", src, dst],
            true,
        ),
        t(
            "qemu-img convert -t none -T none",
            &[
                "qemu-img", "convert", "-t", "none", "-T", "none", "-O", "raw", src, dst,
            ],
            true,
        ),
        t("nbdcopy", &["nbdcopy", src, dst], true),
        t(
            "dd conv=sparse bs=1M",
            &["dd", &iff, &of, "bs=1M", "conv=sparse", "status=none"],
            true,
        ),
    ]);
    v
}

/// One tool's results over the rounds.
#[derive(Debug, Default)]
struct Row {
    seconds: Vec<f64>,
    rss_kib: u64,
    cache_left: u64,
    allocated: u64,
    identical: Option<bool>,
}

impl Row {
    fn median(&self) -> f64 {
        let mut v = self.seconds.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::INFINITY)
    }
}

/// Command-line choices.
struct Args {
    workloads: Vec<String>,
    runs: usize,
    /// `--variant ARGS` (repeatable): one more `sparsekit copy ARGS` row,
    /// for trying options side by side with the default.
    variants: Vec<String>,
}

fn parse(args: &[String]) -> anyhow::Result<Args> {
    let mut out = Args {
        workloads: WORKLOADS
            .iter()
            .map(|w| w.name.to_owned())
            .chain(["reflink".to_owned()])
            .collect(),
        runs: 7,
        variants: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--runs" => out.runs = it.next().context("--runs N")?.parse()?,
            "--variant" => out
                .variants
                .push(it.next().context("--variant ARGS")?.clone()),
            "--workloads" => {
                out.workloads = it
                    .next()
                    .context("--workloads NAMES")?
                    .split(',')
                    .map(String::from)
                    .collect()
            }
            _ => {}
        }
    }
    for w in &out.workloads {
        ensure!(
            w == "reflink" || WORKLOADS.iter().any(|x| x.name == w),
            "no copy workload {w:?}"
        );
    }
    ensure!(out.runs >= 1, "--runs must be at least 1");
    Ok(out)
}

/// Entry point.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let args = parse(args)?;
    let defs = defs::load(&defs::matrix_path())?;
    let bin = sparsekit_bin()?;
    let bin = s(&bin)?.to_owned();
    for (prog, package) in [("qemu-img", "qemu-utils"), ("nbdcopy", "libnbd-bin")] {
        ensure!(
            crate::tools::have(prog),
            "{prog} missing: apt-get install {package}"
        );
    }
    let def = |name: &str, size: &str| -> anyhow::Result<FsDef> {
        let mut d = defs
            .iter()
            .find(|d| d.name == name)
            .context("no such filesystem")?
            .clone();
        crate::tools::ensure(&d, true).map_err(anyhow::Error::msg)?;
        d.image_size = size.into();
        Ok(d)
    };
    let mut missed = Vec::new();
    for w in WORKLOADS
        .iter()
        .filter(|w| args.workloads.iter().any(|n| n == w.name))
    {
        let started = Instant::now();
        workload(w, &bin, &args, &def, &mut missed)?;
        println!(
            "copy {}: {:.0} s including the image\n",
            w.name,
            started.elapsed().as_secs_f64()
        );
    }
    if args.workloads.iter().any(|n| n == "reflink") {
        let layout = layout_of(4 * GIB, 0x5EED_C0DE);
        reflink_same_fs(&def("xfs", "2G")?, &bin, &layout, &mut missed)?;
        reflink_same_fs(&def("btrfs", "2G")?, &bin, &layout, &mut missed)?;
    }
    if !missed.is_empty() {
        bail!("copy targets missed:\n  {}", missed.join("\n  "));
    }
    println!("copy: all targets met");
    Ok(())
}

/// Makes the workload's image, runs every tool `runs` times in rotating
/// order, prints the table and records the targets missed.
fn workload(
    w: &Workload,
    bin: &str,
    args: &Args,
    def: &dyn Fn(&str, &str) -> anyhow::Result<FsDef>,
    missed: &mut Vec<String>,
) -> anyhow::Result<()> {
    let runs = args.runs;
    let layout = (w.layout)();
    let data: u64 = layout.iter().map(|e| e.1).sum();
    let zero: u64 = layout.iter().filter(|e| e.2).map(|e| e.1).sum();
    let from = super::mount(&def("ext4", w.fs_size)?)?;
    let to = if w.to == "ext4" {
        None
    } else {
        Some(super::mount(&def(w.to, w.fs_size)?)?)
    };
    let src = from.mountpoint().join("disk.img");
    let dst = to.as_ref().unwrap_or(&from).mountpoint().join("copy.img");
    let t = Instant::now();
    make_image_of(&src, &layout, w.size)?;
    println!(
        "copy {}: {} ({} extents, {:.0} MiB data, {:.0} MiB of it written zeros; written in {:.0} s), ext4 -> {}, median of {runs} rotating rounds, caches dropped before and the destination synced inside every run",
        w.name,
        w.about,
        layout.len(),
        data as f64 / MIB,
        zero as f64 / MIB,
        t.elapsed().as_secs_f64(),
        w.to
    );
    let tools = tools(bin, s(&src)?, s(&dst)?, w.to == "ext4", &args.variants);
    let mut rows: Vec<Row> = tools.iter().map(|_| Row::default()).collect();
    let mut reference = Vec::new();
    for round in 0..runs {
        for k in 0..tools.len() {
            let i = (k + round) % tools.len();
            let _ = std::fs::remove_file(&dst);
            drop_caches()?;
            let cost = synced(&tools[i].argv, &dst)?;
            // A line per run: a fragmented workload's round takes minutes.
            eprintln!(
                "  round {}/{runs}: {} {:.2} s",
                round + 1,
                tools[i].label,
                cost.seconds
            );
            let row = &mut rows[i];
            row.seconds.push(cost.seconds);
            row.rss_kib = row.rss_kib.max(cost.max_rss_kib);
            row.cache_left = row.cache_left.max(cached(&src)? + cached(&dst)?);
            row.allocated = std::fs::metadata(&dst)?.blocks() * 512;
            if round == 0 {
                row.identical = Some(identical(&src, &dst)?);
            }
        }
        if device::applies(data, layout.len()) {
            reference.push(device::copy(&src, &dst)?);
        }
    }
    let _ = std::fs::remove_file(&dst);
    let _ = std::fs::remove_file(&src);
    print_table(&tools, &rows, data);
    println!(
        "{}",
        device::describe(
            "the data read and written back, fsynced",
            &reference,
            fastest_peer(&tools, &rows),
            TIME_TARGET
        )
    );
    check_targets(w.name, &tools, &rows, data, missed);
    Ok(())
}

/// `sh -c 'TOOL… && sync DST'`: the tool, then an fsync of what it wrote,
/// inside the timing.
fn synced(argv: &[String], dst: &Path) -> anyhow::Result<Cost> {
    let mut full = vec!["sh", "-c", r#""$@" && exec sync -- "$0""#, s(dst)?];
    full.extend(argv.iter().map(String::as_str));
    measure(&full)
}

fn fastest_peer(tools: &[Tool], rows: &[Row]) -> f64 {
    tools
        .iter()
        .zip(rows)
        .filter(|(t, _)| t.peer)
        .map(|(_, r)| r.median())
        .fold(f64::INFINITY, f64::min)
}

fn cp_allocation(tools: &[Tool], rows: &[Row]) -> u64 {
    tools
        .iter()
        .zip(rows)
        .find(|(t, _)| t.label.starts_with("cp "))
        .map_or(0, |(_, r)| r.allocated)
}

fn print_table(tools: &[Tool], rows: &[Row], data: u64) {
    let fastest = fastest_peer(tools, rows);
    let cp = cp_allocation(tools, rows);
    println!(
        "| {:<40} | {:>8} | {:>7} | {:>8} | {:>9} | {:>7} | {:>9} | {:>6} | {:>9} |",
        "command",
        "median s",
        "ratio",
        "RSS MiB",
        "cache MiB",
        "cache %",
        "alloc MiB",
        "vs cp",
        "identical"
    );
    println!(
        "|{:-<42}|{:->10}|{:->9}|{:->10}|{:->11}|{:->9}|{:->11}|{:->8}|{:->11}|",
        "", "", "", "", "", "", "", "", ""
    );
    for (t, r) in tools.iter().zip(rows) {
        println!(
            "| {:<40} | {:>8.3} | {:>7.2} | {:>8.1} | {:>9.1} | {:>7.2} | {:>9.1} | {:>6.3} | {:>9} |",
            t.label,
            r.median(),
            r.median() / fastest,
            r.rss_kib as f64 / 1024.0,
            r.cache_left as f64 / MIB,
            r.cache_left as f64 * 100.0 / data as f64,
            r.allocated as f64 / MIB,
            r.allocated as f64 / cp.max(1) as f64,
            match r.identical {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "-",
            }
        );
    }
    let mut all: Vec<String> = Vec::new();
    for (t, r) in tools.iter().zip(rows) {
        let mut v = r.seconds.clone();
        v.sort_by(f64::total_cmp);
        all.push(format!(
            "{}: {}",
            t.label,
            v.iter()
                .map(|x| format!("{x:.2}"))
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    println!("every run, sorted: {}", all.join("; "));
}

fn check_targets(name: &str, tools: &[Tool], rows: &[Row], data: u64, missed: &mut Vec<String>) {
    let fastest = fastest_peer(tools, rows);
    let cp = cp_allocation(tools, rows);
    for (t, r) in tools.iter().zip(rows).filter(|(t, _)| !t.peer) {
        if r.identical == Some(false) {
            missed.push(format!("{name}: {}: output differs", t.label));
        }
    }
    let (t, r) = (&tools[0], &rows[0]);
    if r.median() > TIME_TARGET * fastest {
        missed.push(format!(
            "{name}: {}: {:.3} s = {:.2} x the fastest peer ({fastest:.3} s) > {TIME_TARGET}",
            t.label,
            r.median(),
            r.median() / fastest
        ));
    }
    if r.cache_left > data / 100 {
        missed.push(format!(
            "{name}: {}: {:.1} MiB left in the page cache > 1 % of the data",
            t.label,
            r.cache_left as f64 / MIB
        ));
    }
    if r.allocated > cp {
        missed.push(format!(
            "{name}: {}: allocates {} B > cp's {cp} B",
            t.label, r.allocated
        ));
    }
    if r.rss_kib > RSS_LIMIT_KIB {
        missed.push(format!(
            "{name}: {}: peak RSS {} KiB > {RSS_LIMIT_KIB} KiB",
            t.label, r.rss_kib
        ));
    }
}

/// `sparsekit copy` of the image within one filesystem: a reflink (FIEMAP
/// shows every data byte shared) in under 0.1 s, best of 5, next to
/// `cp --reflink=always`.
fn reflink_same_fs(
    def: &FsDef,
    bin: &str,
    layout: &[Extent],
    missed: &mut Vec<String>,
) -> anyhow::Result<()> {
    let size = 4 * GIB;
    let fs = super::mount(def)?;
    let src = fs.mountpoint().join("disk.img");
    let dst = fs.mountpoint().join("copy.img");
    make_image_of(&src, layout, size)?;
    let (sp, dp) = (s(&src)?, s(&dst)?);
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let _ = std::fs::remove_file(&dst);
        rustix::fs::sync();
        let start = Instant::now();
        let o = Command::new(bin)
            .args(["copy", "--json", "--no-progress", sp, dp])
            .output()?;
        let t = start.elapsed().as_secs_f64();
        ensure!(
            o.status.success(),
            "sparsekit copy on {}: {}",
            def.name,
            String::from_utf8_lossy(&o.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
        ensure!(
            v["strategy"] == "reflink",
            "{}: not a reflink: {v}",
            def.name
        );
        best = best.min(t);
    }
    let sharing = sparsekit_clone::sharing(&File::open(&dst)?, 0..size)?;
    let _ = std::fs::remove_file(&dst);
    rustix::fs::sync();
    let cp = measure(&["cp", "--reflink=always", sp, dp])?;
    println!(
        "copy reflink {:<6} sparsekit copy (same fs) {:>8.3} s   cp --reflink=always {:>8.3} s   shared {:.0} MiB, exclusive {:.0} MiB",
        def.name,
        best,
        cp.seconds,
        sharing.shared as f64 / MIB,
        sharing.exclusive as f64 / MIB
    );
    if best >= 0.1 {
        missed.push(format!(
            "{}: same-filesystem copy took {best:.3} s (target < 0.1 s)",
            def.name
        ));
    }
    if sharing.exclusive != 0 {
        missed.push(format!(
            "{}: {} bytes of the copy not shared",
            def.name, sharing.exclusive
        ));
    }
    Ok(())
}
