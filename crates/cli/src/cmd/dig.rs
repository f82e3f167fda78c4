//! `sparsekit dig FILE [--min-hole SIZE] [--dry-run] [--json]
//! [--method auto|seek|fiemap|all-data] [--keep-cache]`
//!
//! Punches the all-zero blocks inside a file's data extents without
//! changing a byte, dropping what it reads from the page cache, under a
//! write lease that keeps other writers out (`--force` digs without one).

use super::punch::{open_for_writing, punch_error};
use crate::human::{human_size, parse_size};
use crate::input::{Accept, open_checked};
use crate::output::{print_report, warning};
use crate::watchdog::{OnStall, TimeoutArg, Watchdog};
use rustix::io::Errno;
use serde_json::json;
use sparsekit_extents::Method;
use sparsekit_punch::{CacheOutcome, DigOptions, Dug, PunchError, WriteLease, lease_refusal};
use sparsekit_sys::ErrnoName;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

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
    /// Print JSON: {"file","size","method","fallbacks":[{"strategy","errno"}],"dry_run",
    /// "block_size","min_hole",
    /// "bytes_scanned","zero_bytes","holes_punched","bytes_deallocated",
    /// "allocated_before","allocated_after","cache" ("direct": read with
    /// O_DIRECT; "dropped": read through the page cache and dropped;
    /// "kept"),"seconds","writers"
    /// ("excluded": held a write lease; "not_excluded": --force without
    /// one, "lease_errno" says why; "not_needed": dry run)}.
    #[arg(long)]
    json: bool,
    /// How to find the data extents; all-data reads the whole file.
    #[arg(long, value_enum, default_value_t = MethodArg::Auto)]
    method: MethodArg,
    /// Leave the pages read in the page cache (default: drop them).
    #[arg(long)]
    keep_cache: bool,
    /// Dig even when other writers cannot be kept out: without a write
    /// lease (another process has the file open, or the filesystem has no
    /// leases), a block another process writes while dig runs may be lost.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    timeout: TimeoutArg,
}

/// How long dig retries a write lease refused with `EAGAIN`.
const LEASE_PATIENCE: Duration = Duration::from_millis(200);

/// How other writers were kept out of the file.
#[derive(Debug)]
enum Writers<L> {
    /// A write lease was held throughout.
    Excluded(L),
    /// `--force`: no lease could be taken (the errno says why).
    NotExcluded(Errno),
    /// A dry run changes nothing and needs no lease.
    NotNeeded,
}

impl<L> Writers<L> {
    fn json(&self) -> serde_json::Value {
        match self {
            Writers::Excluded(_) => json!("excluded"),
            Writers::NotExcluded(_) => json!("not_excluded"),
            Writers::NotNeeded => json!("not_needed"),
        }
    }
}

/// The lease decision, apart from the syscall: a refused lease stops dig
/// unless `--force` (the message names the errno and `--force`).
fn writers<L>(
    path: &str,
    dry_run: bool,
    force: bool,
    lease: impl FnOnce() -> Result<L, Errno>,
) -> anyhow::Result<Writers<L>> {
    if dry_run {
        return Ok(Writers::NotNeeded);
    }
    match lease() {
        Ok(lease) => Ok(Writers::Excluded(lease)),
        Err(errno) if force => {
            warning!(
                "{path}: warning: --force: digging without a write lease ({}: {}); a block another process writes while dig runs may be lost",
                ErrnoName(errno),
                lease_refusal(errno)
            );
            Ok(Writers::NotExcluded(errno))
        }
        Err(errno) => {
            let hint = if errno == Errno::AGAIN {
                "close the file in the other process (a VM using the image, say) and run dig again, or pass --force to dig unprotected"
            } else {
                "if nothing else can write the file, pass --force to dig unprotected"
            };
            Err(anyhow::anyhow!(
                "{path}: dig: refused: cannot keep other writers out: no write lease (fcntl F_SETLEASE F_WRLCK): {}: {}; a block another process wrote while dig ran could be lost; nothing was changed ({hint})",
                ErrnoName(errno),
                lease_refusal(errno)
            ))
        }
    }
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
    let watchdog = Watchdog::start(args.timeout.timeout, format!("{path}: dig"));
    // Both opens refuse what is not a regular file (exit 2) before any lease.
    let file = if args.dry_run {
        open_checked(&args.file, "dig", Accept::Regular, false)?
    } else {
        let file = open_for_writing(&args.file, "dig")?;
        super::shift::refuse_if_pending(&args.file, &path)?;
        file
    };
    watchdog.watch_cache(&file);
    if !args.dry_run {
        watchdog.on_stall(OnStall {
            note: "no byte was changed (dig only punches blocks it read as zeros); some of them may already be holes".into(),
            ..OnStall::default()
        });
    }
    let options = DigOptions::new()
        .min_hole(args.min_hole.unwrap_or(0))
        .dry_run(args.dry_run)
        .method(args.method.into())
        .drop_cache(!args.keep_cache);
    let writers = writers(&path, args.dry_run, args.force, || {
        // A file open only for a moment (a scanner, a child between fork
        // and exec) should not make dig refuse.
        WriteLease::acquire_within(&file, LEASE_PATIENCE).map_err(|e| e.errno)
    })?;
    let start = Instant::now();
    let dug = match &writers {
        Writers::Excluded(lease) => options.dig_excluding(&file, lease),
        _ => options.dig(&file),
    };
    // The other process waits in open() until the lease is released.
    let writers = match writers {
        Writers::Excluded(lease) => {
            drop(lease);
            Writers::Excluded(())
        }
        Writers::NotExcluded(errno) => Writers::NotExcluded(errno),
        Writers::NotNeeded => Writers::NotNeeded,
    };
    let dug = dug.map_err(|e| match e {
        e @ PunchError::LeaseBroken { .. } => anyhow::anyhow!("{path}: {e}"),
        e => punch_error(&path, e),
    })?;
    watchdog.finish();
    let seconds = start.elapsed().as_secs_f64();
    for fallback in &dug.fallbacks {
        crate::fallback::note(format_args!("{path}: method "), fallback);
    }
    if let Some(d) = dug.degraded.filter(|_| dug.method != Method::Seek) {
        // Auto left SEEK for a degraded answer, which has no errno.
        crate::verbosity::note(format_args!(
            "{path}: method seek: {d}, {}",
            sparsekit_sys::fallback::FELL_BACK
        ));
    }
    if let CacheOutcome::Failed(errno) = dug.cache {
        warning!(
            "{path}: warning: posix_fadvise: {}; pages read were left in the page cache",
            ErrnoName(errno)
        );
    }
    let mut line = dug_line(&path, &dug, seconds);
    match writers {
        Writers::Excluded(()) => line += "; other writers kept out by a write lease",
        Writers::NotExcluded(errno) => {
            line += &format!(
                "; UNPROTECTED from other writers (--force; no write lease: {})",
                ErrnoName(errno).symbolic()
            )
        }
        Writers::NotNeeded => {}
    }
    let done = (!args.dry_run).then_some(line.as_str());
    if args.json {
        let mut v = dug_json(&path, &dug, seconds);
        v["writers"] = writers.json();
        if let Writers::NotExcluded(errno) = writers {
            v["lease_errno"] = json!(ErrnoName(errno).symbolic());
        }
        print_report(&v.to_string(), done)?;
    } else {
        print_report(&line, done)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn cache_name(c: CacheOutcome) -> String {
    match c {
        CacheOutcome::Direct => "direct".into(),
        CacheOutcome::Dropped => "dropped".into(),
        CacheOutcome::Kept => "kept".into(),
        CacheOutcome::Failed(e) => format!("failed: {}", sparsekit_sys::ErrnoName(e).symbolic()),
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
        "fallbacks": d.fallbacks.iter().map(crate::fallback::record).collect::<Vec<_>>(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_lease_stops_dig_unless_forced_naming_the_errno_and_force() {
        // The errnos a filesystem without leases (EINVAL, ENOLCK), a busy
        // file (EAGAIN) or a foreign owner (EACCES) give.
        for errno in [Errno::INVAL, Errno::NOLCK, Errno::AGAIN, Errno::ACCESS] {
            let e = writers::<()>("disk.img", false, false, || Err(errno)).unwrap_err();
            let msg = format!("{e:#}");
            let sym = ErrnoName(errno).symbol().unwrap();
            assert!(msg.starts_with("disk.img: dig: refused"), "{msg}");
            assert!(msg.contains(sym), "{msg}");
            assert!(msg.contains("--force"), "{msg}");
            assert!(msg.contains("nothing was changed"), "{msg}");
            let w = writers::<()>("disk.img", false, true, || Err(errno)).unwrap();
            assert!(matches!(w, Writers::NotExcluded(e) if e == errno));
            assert_eq!(w.json(), json!("not_excluded"));
        }
        assert!(
            format!(
                "{:#}",
                writers::<()>("x", false, false, || Err(Errno::INVAL)).unwrap_err()
            )
            .contains("no leases")
        );
    }

    #[test]
    fn a_held_lease_excludes_and_a_dry_run_needs_none() {
        let w = writers("x", false, false, || Ok(7)).unwrap();
        assert!(matches!(w, Writers::Excluded(7)));
        assert_eq!(w.json(), json!("excluded"));
        let w = writers::<()>("x", true, false, || panic!("a dry run takes no lease")).unwrap();
        assert!(matches!(w, Writers::NotNeeded));
        assert_eq!(w.json(), json!("not_needed"));
    }
}
