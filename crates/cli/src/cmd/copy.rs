//! `sparsekit copy SRC DST [--sparse auto|always|never] [--reflink auto|always|never]
//! [--cache auto|keep|drop|direct|dontcache] [--progress|--no-progress] [--json] [--no-sync]
//! [--strategy auto|copy-file-range|read-write] [--holes …] [--in-place] [--destination-is-zero] [--snapshot] [--verify]`
//!
//! Copies a file or block device without filling its holes or the page
//! cache; a failed or interrupted copy (Ctrl-C, SIGTERM) leaves no
//! destination that looks complete. Exit 0 success, 1 failure (the message
//! names the file, offset and errno), 2 usage error (nothing touched), 130
//! interrupted.

use crate::exit::{INTERRUPTED, UsageError, WithExitCode};
use crate::human::human_size;
use crate::input::{Accept, open_checked};
use crate::output::print_report;
use crate::watchdog::{TimeoutArg, Watchdog};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use sparsekit_copy::{
    CachePolicy, CopyError, CopyOptions, CopyReport, DataStrategy, HoleMethod, Interrupt, Progress,
    ReflinkMode, SparseMode, Staging,
};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The file or block device to copy (never modified).
    src: PathBuf,
    /// The destination: a new path, an existing file (replaced atomically
    /// after the copy; with --in-place rewritten), a directory (the copy
    /// goes inside under SRC's name) or a block device (written in place;
    /// must be at least as large as SRC and not mounted).
    dst: PathBuf,
    /// auto keeps SRC's holes, and turns all-zero blocks into holes
    /// wherever the data passes through memory (the read-write strategy;
    /// a reflink or copy-file-range keeps written zeros as data); always
    /// turns all-zero blocks into holes, forcing read-write; never writes
    /// every byte (full allocation).
    #[arg(long, value_enum, default_value_t = SparseArg::Auto)]
    sparse: SparseArg,
    /// auto tries a whole-file reflink first; always fails if it is not
    /// possible; never shares no extent (no copy_file_range either).
    #[arg(long, value_enum, default_value_t = ReflinkArg::Auto)]
    reflink: ReflinkArg,
    /// Page-cache policy: auto reads the source with the first of direct
    /// (O_DIRECT), dontcache (RWF_DONTCACHE), drop (fadvise), keep that works,
    /// and writes the destination with drop (write-behind + fadvise).
    #[arg(long, value_enum, default_value_t = CacheArg::Auto)]
    cache: CacheArg,
    /// How data moves when there is no reflink: auto is read-write unless
    /// --cache keep|drop, then copy-file-range first.
    #[arg(long, value_enum, default_value_t = StrategyArg::Auto)]
    strategy: StrategyArg,
    /// How holes are made in a destination with old data (--in-place, block
    /// devices): auto is punch, zero-range, write-zeros for files; for
    /// devices discard (BLKDISCARD, only once a trial showed discarded
    /// blocks read back as zeros), punch (WRITE ZEROES with unmap),
    /// zero-out (BLKZEROOUT), write-zeros. The one used is reported.
    #[arg(long, value_enum, default_value_t = HolesArg::Auto)]
    holes: HolesArg,
    /// Rewrite an existing DST file in place (keeps its inode, owner and
    /// links; a failure truncates it) instead of replacing it.
    #[arg(long)]
    in_place: bool,
    /// DST (a block device, or an existing file with --in-place) already
    /// reads as zeros, on your word: SRC's holes are skipped instead of
    /// punched, zeroed or discarded (nbdcopy's --destination-is-zero).
    /// Refused (exit 2) for a new or empty file, where it means nothing.
    #[arg(long, alias = "target-is-zero")]
    destination_is_zero: bool,
    /// Copy from a reflinked snapshot of SRC taken first (a consistent
    /// image of a file being written; no extra space), removed afterwards.
    /// Where the filesystem cannot reflink, fails before creating anything.
    #[arg(long)]
    snapshot: bool,
    /// Show progress on stderr even when it is not a terminal.
    #[arg(long, overrides_with = "no_progress")]
    progress: bool,
    /// Never show progress (default: a bar when stderr is a terminal).
    #[arg(long)]
    no_progress: bool,
    /// Print JSON: {"source","destination","size","strategy" (reflink,
    /// copy_file_range, read_write, stream),"snapshot","cache",
    /// "cache_source","holes","staging","destination_kind","map_method",
    /// "bytes_copied","bytes_skipped_as_holes","zero_bytes_detected" (zero
    /// blocks turned into holes),"zero_detection" (false: reflink or
    /// copy_file_range, which do not read the data, or sparse never),
    /// "zero_bytes_written","seconds","synced","bytes_left_in_page_cache",
    /// "page_cache":{…},"fallbacks":[{"strategy","errno"}],"verified":null|{"equal",
    /// "bytes_read","source_bytes_read","cache","map_method","seconds"}}.
    #[arg(long)]
    json: bool,
    /// Skip the fsync of the destination (and its directory) before success.
    #[arg(long)]
    no_sync: bool,
    /// After the copy and its fsync, read DST back from the device
    /// (O_DIRECT, or after dropping its pages) and compare it with SRC like
    /// `sparsekit compare`. A mismatch exits 1 naming the first differing
    /// offset; a new DST is not created, a replaced one is left as it was,
    /// one written in place (--in-place, block devices) is invalidated.
    #[arg(long)]
    verify: bool,
    #[command(flatten)]
    timeout: TimeoutArg,
}

macro_rules! value_enum {
    ($(#[$meta:meta])* $arg:ident => $lib:ident { $($v:ident),+ }) => {
        #[derive(Debug, Clone, Copy, clap::ValueEnum)]
        $(#[$meta])*
        enum $arg { $($v),+ }
        impl From<$arg> for $lib {
            fn from(a: $arg) -> $lib {
                match a { $($arg::$v => $lib::$v),+ }
            }
        }
    };
}

value_enum!(SparseArg => SparseMode { Auto, Always, Never });
value_enum!(ReflinkArg => ReflinkMode { Auto, Always, Never });
value_enum!(#[value(rename_all = "lower")] CacheArg => CachePolicy { Auto, Keep, Drop, Direct, DontCache });
value_enum!(StrategyArg => DataStrategy { Auto, CopyFileRange, ReadWrite });
value_enum!(HolesArg => HoleMethod { Auto, Punch, ZeroRange, ZeroOut, WriteZeros, Discard });

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let watchdog = Watchdog::start(
        args.timeout.timeout,
        format!("{} -> {}: copy", args.src.display(), args.dst.display()),
    );
    // The source is opened by the library: make sure first that opening it
    // cannot block (a fifo) and that it is something a copy can read. This
    // descriptor only lets the watchdog see pages arriving inside one long
    // read of a buffered copy.
    let src_file = open_checked(&args.src, "copy", Accept::FileOrDevice, false)?;
    watchdog.watch_cache(&src_file);
    super::copy_target::check_destination(&args.dst)?;
    // `cp SRC DIR` semantics: copy into the directory under SRC's name.
    let dst = if args.dst.is_dir() {
        let name = args.src.file_name().ok_or_else(|| {
            UsageError(format!(
                "{}: has no file name to copy into {}",
                args.src.display(),
                args.dst.display()
            ))
        })?;
        args.dst.join(name)
    } else {
        args.dst.clone()
    };
    super::copy_target::check_destination(&dst)?;
    let interrupt = Interrupt::new();
    let _signals = interrupt
        .register_signals(&[signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])
        .map_err(|e| anyhow::anyhow!("cannot install signal handlers: {e}"))?;

    let mut options = CopyOptions::new()
        .sparse(args.sparse.into())
        .reflink(args.reflink.into())
        .cache(args.cache.into())
        .data_strategy(args.strategy.into())
        .hole_method(args.holes.into())
        .staging(if args.in_place {
            Staging::InPlace
        } else {
            Staging::Auto
        })
        .sync(!args.no_sync)
        .snapshot(args.snapshot)
        .destination_is_zero(args.destination_is_zero)
        .verify(args.verify)
        .interrupt(interrupt.clone());
    let show = !args.no_progress && (args.progress || std::io::stderr().is_terminal());
    let progress = show.then(|| Reporter::new(&dst, std::io::stderr().is_terminal()));
    // Every progress report is progress for the watchdog too.
    let tick = watchdog.ticker();
    let reporter = progress.clone();
    // Only a bar needs the total, which costs a walk of the source's map.
    options = options.progress_total(show).progress(move |p| {
        tick();
        if let Some(reporter) = &reporter {
            reporter.update(p);
        }
    });
    watchdog.on_stall(super::copy_target::on_stall(
        &dst,
        args.in_place,
        &interrupt,
    ));

    let result = options.copy(&args.src, &dst);
    let in_time = watchdog.finish();
    if let Some(reporter) = &progress {
        reporter.finish();
    }
    let report = result.map_err(|e| {
        if !in_time && matches!(e, CopyError::Interrupted { .. }) {
            watchdog.timeout_error(super::copy_target::left_after_stop(&dst, args.in_place))
        } else {
            copy_error(e)
        }
    })?;
    let line = summary(&dst, &report);
    if args.json {
        let doc = serde_json::to_string(&json_report(&args.src, &dst, &report))?;
        print_report(&doc, Some(&line))?;
    } else {
        for fallback in &report.fallbacks {
            crate::fallback::note(format_args!("{}: ", dst.display()), fallback);
        }
        print_report(&line, Some(&line))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn copy_error(e: CopyError) -> anyhow::Error {
    if e.is_usage_error() {
        return UsageError(e.to_string()).into();
    }
    if matches!(e, CopyError::Interrupted { .. }) {
        return WithExitCode(
            INTERRUPTED,
            anyhow::anyhow!("{e}; nothing left at the destination"),
        )
        .into();
    }
    anyhow::anyhow!("{e}")
}

/// `copy.img: 820.0 MiB copied, 7.2 GiB of holes skipped (8.0 GiB) with
/// read_write, cache dontcache/dontcache, synced in 0.62 s; 0 B left in the
/// page cache`
fn summary(dst: &Path, r: &CopyReport) -> String {
    let mut s = format!(
        "{}: {} copied, {} of holes skipped ({}) with {}",
        dst.display(),
        human_size(r.bytes_copied),
        human_size(r.bytes_skipped_as_holes),
        human_size(r.size),
        r.strategy,
    );
    if r.snapshot {
        s += " from a snapshot";
    }
    if let (Some(src), Some(dst)) = (r.cache_source, r.cache_destination) {
        s += &format!(", cache {src}/{dst}");
    }
    if let Some(h) = r.holes {
        s += &format!(", holes {h}");
    }
    if r.zero_bytes_detected > 0 {
        s += &format!(
            ", {} of zeros left as holes",
            human_size(r.zero_bytes_detected)
        );
    }
    if r.zero_bytes_written > 0 {
        s += &format!(", {} of zeros written", human_size(r.zero_bytes_written));
    }
    s += &format!(
        ", {} in {:.2} s",
        if r.synced { "synced" } else { "not synced" },
        r.elapsed.as_secs_f64()
    );
    if let Some(left) = r.bytes_left_in_page_cache() {
        s += &format!("; {} left in the page cache", human_size(left));
    }
    if let Some(v) = &r.verified {
        s += &format!(
            "; verified: {} read back (cache {}), equal",
            human_size(v.b.bytes_read),
            v.b.cache
        );
    }
    s
}

fn json_report(src: &Path, dst: &Path, r: &CopyReport) -> serde_json::Value {
    let fallbacks: Vec<_> = r.fallbacks.iter().map(crate::fallback::record).collect();
    json!({
        "source": src.display().to_string(),
        "destination": dst.display().to_string(),
        "size": r.size,
        "strategy": r.strategy.as_str(),
        "snapshot": r.snapshot,
        "cache": r.cache_destination.map(CachePolicy::as_str),
        "cache_source": r.cache_source.map(CachePolicy::as_str),
        "holes": r.holes.map(HoleMethod::as_str),
        "staging": r.staging.as_str(),
        "destination_kind": r.destination.as_str(),
        "map_method": r.map_method.as_str(),
        "bytes_copied": r.bytes_copied,
        "bytes_skipped_as_holes": r.bytes_skipped_as_holes,
        "zero_bytes_detected": r.zero_bytes_detected,
        "zero_detection": r.zero_detection,
        "zero_bytes_written": r.zero_bytes_written,
        "seconds": r.elapsed.as_secs_f64(),
        "synced": r.synced,
        "bytes_left_in_page_cache": r.bytes_left_in_page_cache(),
        "page_cache": r.page_cache.map(|p| json!({
            "source_before": p.source_before,
            "source_after": p.source_after,
            "destination_after": p.destination_after,
        })),
        "fallbacks": fallbacks,
        "verified": r.verified.as_ref().map(|v| json!({
            "equal": v.equal(),
            "bytes_read": v.b.bytes_read,
            "source_bytes_read": v.a.bytes_read,
            "cache": v.b.cache.as_str(),
            "map_method": v.b.map_method.as_str(),
            "seconds": v.elapsed.as_secs_f64(),
        })),
    })
}

/// Progress on stderr: an indicatif bar on a terminal, a plain line at most
/// once a second otherwise (`--progress` into a log).
#[derive(Clone)]
struct Reporter {
    bar: Option<ProgressBar>,
    plain: std::sync::Arc<Mutex<(Instant, String)>>,
}

impl Reporter {
    fn new(dst: &Path, terminal: bool) -> Self {
        let name = dst
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bar = terminal.then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(name.clone());
            bar
        });
        Reporter {
            bar,
            // The first update prints at once, then at most once a second.
            plain: std::sync::Arc::new(Mutex::new((
                Instant::now()
                    .checked_sub(Duration::from_secs(2))
                    .unwrap_or_else(Instant::now),
                name,
            ))),
        }
    }

    fn update(&self, p: &Progress) {
        if let Some(bar) = &self.bar {
            bar.set_length(p.data_total);
            bar.set_position(p.data_done);
            return;
        }
        let mut plain = self.plain.lock().unwrap_or_else(|e| e.into_inner());
        if plain.0.elapsed() >= Duration::from_secs(1) || p.data_done == p.data_total {
            plain.0 = Instant::now();
            let pct = if p.data_total == 0 {
                100.0
            } else {
                p.data_done as f64 * 100.0 / p.data_total as f64
            };
            // Never a panic on a full or closed stderr.
            let _ = writeln!(
                std::io::stderr(),
                "{}: {} of {} ({pct:.0}%)",
                plain.1,
                human_size(p.data_done),
                human_size(p.data_total)
            );
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_names_match_the_library() {
        use clap::ValueEnum;
        for v in CacheArg::value_variants() {
            let name = v.to_possible_value().unwrap().get_name().to_owned();
            let lib: CachePolicy = (*v).into();
            assert_eq!(name, lib.as_str());
        }
        for v in HolesArg::value_variants() {
            let name = v.to_possible_value().unwrap().get_name().replace('-', "_");
            let lib: HoleMethod = (*v).into();
            assert_eq!(name, lib.as_str());
        }
    }
}
