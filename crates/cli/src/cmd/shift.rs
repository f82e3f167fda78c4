//! `sparsekit collapse|insert FILE …` and `sparsekit resume FILE`: the
//! shifts, made safe to interrupt.
//!
//! The emulated strategy (move-data) records its progress in a journal
//! beside the file (`.NAME.sparsekit-shift`). SIGINT, SIGTERM and SIGHUP
//! stop it at the next segment boundary (exit 130, saying how to finish; a
//! second signal ends it at once, which the journal survives like a
//! SIGKILL). `resume FILE`, or the same command again, finishes the
//! operation; any other in-place command refuses to touch the file while
//! the journal is there.

use super::punch::{RangeArgs, ShiftArg, open_for_writing, punch_error, report_json, report_line};
use crate::exit::{INTERRUPTED, UsageError, WithExitCode};
use crate::human::check_range;
use crate::output::{print_report as print_line, warning};
use crate::watchdog::{OnStall, TimeoutArg, Watchdog};
use rustix::io::Errno;
use sparsekit_punch::{
    Operation, Pending, PunchError, Report, Resumed, ShiftJournal, ShiftOptions, ShiftStrategy,
    WriteLease, lease_refusal,
};
use sparsekit_sys::ErrnoName;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// `sparsekit collapse` and `sparsekit insert`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Interrupted? With move-data the progress is recorded in .NAME.sparsekit-shift beside \
the file, synced at every segment. SIGINT, SIGTERM and SIGHUP stop at a segment \
boundary (exit 130); after that, a SIGKILL or a crash, `sparsekit resume FILE` (or \
this command again) finishes the operation, with exactly the bytes an uninterrupted \
run gives. Other in-place commands refuse the file until then.")]
pub(crate) struct ShiftArgs {
    #[command(flatten)]
    range: RangeArgs,
    /// native remaps extents (ext4, xfs); move-data moves the data in
    /// segments, keeping holes, with a journal to resume from. auto tries
    /// native first.
    #[arg(long, value_enum, default_value_t = ShiftArg::Auto)]
    strategy: ShiftArg,
    /// Move data even when other writers cannot be kept out (no write
    /// lease: another process has the file open, or the filesystem has no
    /// leases); a write another process makes meanwhile may be lost.
    #[arg(long)]
    force: bool,
}

/// `sparsekit resume`.
#[derive(Debug, clap::Args)]
pub(crate) struct ResumeArgs {
    /// The file whose interrupted collapse or insert to finish (its journal
    /// is .NAME.sparsekit-shift beside it).
    file: PathBuf,
    /// Print JSON: {"file","resumed":"finished"|"nothing"|"discarded"} and,
    /// when finished, the fields of `collapse --json`.
    #[arg(long)]
    json: bool,
    /// Resume even when other writers cannot be kept out (see `collapse --force`).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    timeout: TimeoutArg,
}

/// How long a shift retries a write lease refused with `EAGAIN`.
const LEASE_PATIENCE: Duration = Duration::from_millis(200);

/// What a stall (`--timeout`) may leave: the journal makes it like a SIGKILL.
const STALL_NOTE: &str = "the file may be partly shifted: a native request may still complete; a move-data one is recorded in its journal, and `sparsekit resume FILE` finishes it";

/// The write lease that keeps other writers out while data moves, or why
/// there is none (`--force`, or a strategy that moves no data).
fn lease_for<'f>(
    file: &'f File,
    path: &str,
    strategy: ShiftStrategy,
    force: bool,
) -> anyhow::Result<(Option<WriteLease<'f>>, ShiftStrategy)> {
    if strategy == ShiftStrategy::Native {
        // One call, atomic in the kernel: nothing to keep out.
        return Ok((None, strategy));
    }
    match WriteLease::acquire_within(file, LEASE_PATIENCE) {
        Ok(lease) => Ok((Some(lease), strategy)),
        Err(e) if force => {
            warning!(
                "{path}: warning: --force: moving data without a write lease ({}: {}); a write another process makes meanwhile may be lost",
                ErrnoName(e.errno),
                lease_refusal(e.errno)
            );
            Ok((None, strategy))
        }
        // Auto may still succeed natively, which needs no lease.
        Err(_) if strategy == ShiftStrategy::Auto => Ok((None, ShiftStrategy::Native)),
        Err(e) => Err(no_lease(path, e.errno)),
    }
}

fn no_lease(path: &str, errno: Errno) -> anyhow::Error {
    anyhow::anyhow!(
        "{path}: refused: moving data needs other writers kept out, but no write lease (fcntl F_SETLEASE F_WRLCK) could be taken: {}: {}; nothing was changed (close the file in the other process, or pass --force)",
        ErrnoName(errno),
        lease_refusal(errno)
    )
}

pub(crate) fn run_collapse(args: ShiftArgs) -> anyhow::Result<ExitCode> {
    run(args, Operation::Collapse)
}

pub(crate) fn run_insert(args: ShiftArgs) -> anyhow::Result<ExitCode> {
    run(args, Operation::Insert)
}

fn run(args: ShiftArgs, op: Operation) -> anyhow::Result<ExitCode> {
    let r = &args.range;
    let path = r.file.display().to_string();
    let op_name = op.as_str();
    check_range(&format!("{path}: {op_name}"), r.offset, r.length).map_err(UsageError)?;
    let watchdog = Watchdog::start(r.timeout.timeout, format!("{path}: {op_name}"));
    let journal = journal_of(&r.file, &path)?;
    let file = open_for_writing(&r.file, op_name)?;
    watchdog.watch_cache(&file);
    watchdog.on_stall(OnStall {
        note: STALL_NOTE.into(),
        ..OnStall::default()
    });
    let pending = journal
        .pending()
        .map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
    let same = matches!(pending, Some(Pending::Shift { op: o, offset, length, .. })
        if o == op && offset == r.offset && length == r.length);
    if let Some(pending) = pending.filter(|_| !same) {
        return Err(refusal(&path, &journal, pending));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let _signals = stop_signals(&stop)?;
    let wanted: ShiftStrategy = if same {
        ShiftStrategy::MoveData
    } else {
        args.strategy.into()
    };
    let (lease, strategy) = lease_for(&file, &path, wanted, args.force)?;
    let mut options = ShiftOptions::new(strategy).stop_flag(stop).journal(journal);
    if let Some(lease) = &lease {
        options = options.exclusion(lease);
    }
    let report = if same {
        warning!(
            "{path}: resuming the unfinished {op} recorded in {}",
            options_journal(&r.file).display()
        );
        match options
            .resume(&file)
            .map_err(|e| shift_error(&path, e, args.force))?
        {
            Resumed::Finished(report) => report,
            // Raced with another resume: what it finished is done.
            Resumed::Nothing | Resumed::Discarded => {
                anyhow::bail!("{path}: the journal went away while resuming; run the command again")
            }
        }
    } else {
        let result = match op {
            Operation::Insert => options.insert(&file, r.offset, r.length),
            _ => options.collapse(&file, r.offset, r.length),
        };
        result.map_err(|e| match e {
            // Auto without a lease tried native only: say why move-data was not.
            PunchError::Unsupported { .. } if lease.is_none() && strategy != wanted => {
                match WriteLease::acquire(&file) {
                    Err(le) => no_lease(&path, le.errno),
                    Ok(_) => shift_error(&path, e, args.force),
                }
            }
            e => shift_error(&path, e, args.force),
        })?
    };
    drop(lease);
    watchdog.finish();
    print_report(&path, &report, r.json)?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn run_resume(args: ResumeArgs) -> anyhow::Result<ExitCode> {
    let path = args.file.display().to_string();
    let journal = journal_of(&args.file, &path)?;
    // Nothing to open when there is nothing to do: `resume` on a file with
    // no journal succeeds without touching it.
    if journal
        .pending()
        .map_err(|e| anyhow::anyhow!("{path}: {e}"))?
        .is_none()
    {
        return nothing(&path, args.json);
    }
    let watchdog = Watchdog::start(args.timeout.timeout, format!("{path}: resume"));
    let file = open_for_writing(&args.file, "resume")?;
    watchdog.watch_cache(&file);
    watchdog.on_stall(OnStall {
        note: STALL_NOTE.into(),
        ..OnStall::default()
    });
    let stop = Arc::new(AtomicBool::new(false));
    let _signals = stop_signals(&stop)?;
    let (lease, _) = lease_for(&file, &path, ShiftStrategy::MoveData, args.force)?;
    let mut options = ShiftOptions::new(ShiftStrategy::MoveData)
        .stop_flag(stop)
        .journal(journal.clone());
    if let Some(lease) = &lease {
        options = options.exclusion(lease);
    }
    let resumed = options
        .resume(&file)
        .map_err(|e| shift_error(&path, e, args.force))?;
    drop(lease);
    watchdog.finish();
    match resumed {
        Resumed::Nothing => nothing(&path, args.json),
        Resumed::Discarded => {
            let line = format!(
                "{path}: {} held no complete record (the operation had not begun); the file is unchanged and the journal removed",
                journal.path().display()
            );
            if args.json {
                let doc = serde_json::json!({"file": path, "resumed": "discarded"});
                print_line(&doc.to_string(), Some(&line))?;
            } else {
                print_line(&line, Some(&line))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Resumed::Finished(report) => {
            let line = format!("{}: resumed and finished", report_line(&path, &report));
            if args.json {
                let mut doc = report_json(&path, &report);
                doc["resumed"] = "finished".into();
                print_line(&doc.to_string(), Some(&line))?;
            } else {
                print_line(&line, Some(&line))?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn nothing(path: &str, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        let doc = serde_json::json!({"file": path, "resumed": "nothing"});
        print_line(&doc.to_string(), None)?;
    } else {
        print_line(
            &format!("{path}: no interrupted collapse or insert to resume"),
            None,
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_report(path: &str, report: &Report<ShiftStrategy>, json: bool) -> anyhow::Result<()> {
    for fallback in &report.fallbacks {
        crate::fallback::note(format_args!("{path}: "), fallback);
    }
    let line = report_line(path, report);
    if json {
        print_line(&report_json(path, report).to_string(), Some(&line))
    } else {
        print_line(&line, Some(&line))
    }
}

fn options_journal(file: &Path) -> PathBuf {
    ShiftJournal::beside(file)
        .map(|j| j.path().to_owned())
        .unwrap_or_default()
}

fn journal_of(file: &Path, path: &str) -> anyhow::Result<ShiftJournal> {
    ShiftJournal::beside(file).ok_or_else(|| UsageError(format!("{path}: not a file name")).into())
}

/// Refuses an in-place command (punch, zero, dig, a different collapse or
/// insert) on a file whose journal records an unfinished operation: it
/// would change bytes the journal is about to write, or move.
pub(crate) fn refuse_if_pending(file: &Path, path: &str) -> anyhow::Result<()> {
    let Some(journal) = ShiftJournal::beside(file) else {
        return Ok(());
    };
    match journal.pending() {
        Ok(None) => Ok(()),
        Ok(Some(pending)) => Err(refusal(path, &journal, pending)),
        Err(e) => Err(anyhow::anyhow!("{path}: {e}")),
    }
}

fn refusal(path: &str, journal: &ShiftJournal, pending: Pending) -> anyhow::Error {
    anyhow::anyhow!(
        "{path}: refusing to change the file: {} records {pending}; run `sparsekit resume {path}` to finish it first",
        journal.path().display()
    )
}

/// Adds how to finish to the library's message (with `--force` if this
/// run needed it: where no lease can be had, the resume needs it too); a
/// stop exits 130.
fn shift_error(path: &str, e: PunchError, force: bool) -> anyhow::Error {
    let resume = if force {
        "sparsekit resume --force"
    } else {
        "sparsekit resume"
    };
    let hint = format!("run `{resume} {path}` (or the same command again) to finish");
    match e {
        PunchError::Stopped { changed: true, .. } => {
            WithExitCode(INTERRUPTED, anyhow::anyhow!("{path}: {e}; {hint}")).into()
        }
        PunchError::Stopped { .. } => {
            WithExitCode(INTERRUPTED, anyhow::anyhow!("{path}: {e}")).into()
        }
        PunchError::Partial { .. } if e.to_string().contains(".sparsekit-shift") => {
            anyhow::anyhow!("{path}: {e}; {hint}")
        }
        PunchError::LeaseBroken { changed: true, .. } => {
            anyhow::anyhow!("{path}: {e}; {hint}")
        }
        PunchError::JournalPending { .. } => {
            anyhow::anyhow!("{path}: {e}: run `{resume} {path}` to finish it first")
        }
        e => punch_error(path, e),
    }
}

/// SIGINT, SIGTERM and SIGHUP set the stop flag; a second one ends the
/// process at once, by the signal (the journal makes that as safe as a
/// SIGKILL). Unregistered on drop.
fn stop_signals(
    flag: &Arc<AtomicBool>,
) -> anyhow::Result<sparsekit_sys::stop_signals::StopSignals> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    sparsekit_sys::stop_signals::stop_on(&[SIGINT, SIGTERM, SIGHUP], flag)
        .map_err(|e| anyhow::anyhow!("cannot install signal handlers: {e}"))
}
