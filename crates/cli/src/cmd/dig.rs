//! `sparsekit dig FILE [--min-hole SIZE] [--dry-run] [--json]
//! [--method auto|seek|fiemap|all-data] [--keep-cache]`
//!
//! Punches the all-zero blocks inside a file's data extents without
//! changing a byte, dropping what it reads from the page cache.

use super::punch::{open_error, open_for_writing, punch_error};
use crate::human::{human_size, parse_size};
use serde_json::json;
use sparsekit_extents::Method;
use sparsekit_punch::{CacheOutcome, DigOptions, Dug};
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The file to dig (a regular file).
    file: PathBuf,
    /// Smallest hole worth making, counting the holes a run of zeros
    /// touches (default: one filesystem block).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    min_hole: Option<u64>,
    /// Report what would be punched; change nothing (opens read-only).
    #[arg(long)]
    dry_run: bool,
    /// Print JSON: {"file","size","method","dry_run","block_size","min_hole",
    /// "bytes_scanned","zero_bytes","holes_punched","bytes_deallocated",
    /// "allocated_before","allocated_after","cache","seconds"}.
    #[arg(long)]
    json: bool,
    /// How to find the data extents; all-data reads the whole file.
    #[arg(long, value_enum, default_value_t = MethodArg::Auto)]
    method: MethodArg,
    /// Leave the pages read in the page cache (default: drop them).
    #[arg(long)]
    keep_cache: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum MethodArg {
    Auto,
    Seek,
    Fiemap,
    AllData,
}

impl From<MethodArg> for Method {
    fn from(m: MethodArg) -> Method {
        match m {
            MethodArg::Auto => Method::Auto,
            MethodArg::Seek => Method::Seek,
            MethodArg::Fiemap => Method::Fiemap,
            MethodArg::AllData => Method::AllData,
        }
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let path = args.file.display().to_string();
    let file = if args.dry_run {
        File::options()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(&args.file)
            .map_err(|e| open_error(&path, &e))?
    } else {
        open_for_writing(&args.file, &path)?
    };
    let options = DigOptions::new()
        .min_hole(args.min_hole.unwrap_or(0))
        .dry_run(args.dry_run)
        .method(args.method.into())
        .drop_cache(!args.keep_cache);
    let start = Instant::now();
    let dug = options.dig(&file).map_err(|e| punch_error(&path, e))?;
    let seconds = start.elapsed().as_secs_f64();
    for fallback in &dug.fallbacks {
        crate::verbosity::note(format_args!("{path}: method {fallback}, fell back"));
    }
    if let CacheOutcome::Failed(errno) = dug.cache {
        eprintln!(
            "sparsekit: {path}: warning: posix_fadvise: {}; pages read were left in the page cache",
            sparsekit_sys::ErrnoName(errno)
        );
    }
    if args.json {
        println!("{}", dug_json(&path, &dug, seconds));
    } else {
        println!("{}", dug_line(&path, &dug, seconds));
    }
    Ok(ExitCode::SUCCESS)
}

fn cache_name(c: CacheOutcome) -> String {
    match c {
        CacheOutcome::Dropped => "dropped".into(),
        CacheOutcome::Kept => "kept".into(),
        CacheOutcome::Failed(e) => format!(
            "failed: {}",
            sparsekit_sys::ErrnoName(e).symbol().unwrap_or("unknown")
        ),
        _ => "unknown".into(),
    }
}

/// `disk.img: punched 1234 holes (163.8 MiB of zeros) in 819.2 MiB of data; 163.8 MiB deallocated (method seek, 1.23 s)`
fn dug_line(path: &str, d: &Dug, seconds: f64) -> String {
    let holes = if d.holes_punched == 1 {
        "hole"
    } else {
        "holes"
    };
    if d.dry_run {
        format!(
            "{path}: would punch {} {holes} ({} of zeros) in {} of data; nothing changed (dry run, method {}, {seconds:.2} s)",
            d.holes_punched,
            human_size(d.zero_bytes),
            human_size(d.bytes_scanned),
            d.method
        )
    } else {
        format!(
            "{path}: punched {} {holes} ({} of zeros) in {} of data; {} deallocated (method {}, {seconds:.2} s)",
            d.holes_punched,
            human_size(d.zero_bytes),
            human_size(d.bytes_scanned),
            human_size(d.bytes_deallocated()),
            d.method
        )
    }
}

fn dug_json(path: &str, d: &Dug, seconds: f64) -> serde_json::Value {
    json!({
        "file": path,
        "size": d.size,
        "method": d.method.as_str(),
        "dry_run": d.dry_run,
        "block_size": d.block_size,
        "min_hole": d.min_hole,
        "bytes_scanned": d.bytes_scanned,
        "zero_bytes": d.zero_bytes,
        "holes_punched": d.holes_punched,
        "bytes_deallocated": d.bytes_deallocated(),
        "allocated_before": d.allocated_before,
        "allocated_after": d.allocated_after,
        "cache": cache_name(d.cache),
        "seconds": seconds,
    })
}
