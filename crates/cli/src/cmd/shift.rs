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
use crate::exit::{UsageError, WithExitCode};
use sparsekit_punch::{
    Operation, Pending, PunchError, Report, Resumed, ShiftJournal, ShiftOptions, ShiftStrategy,
};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// Exit status of an operation stopped by SIGINT, SIGTERM or SIGHUP, as for
/// `copy` (128 + SIGINT, whichever signal it was).
const INTERRUPTED: u8 = 130;

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
    let journal = journal_of(&r.file, &path)?;
    let file = open_for_writing(&r.file, &path)?;
    let pending = journal
        .pending()
        .map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
    let same = matches!(pending, Some(Pending::Shift { op: o, offset, length, .. })
        if o == op && offset == r.offset && length == r.length);
    if let Some(pending) = pending.filter(|_| !same) {
        return Err(refusal(&path, &journal, pending));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let _signals = Signals::register(&stop)?;
    let options = ShiftOptions::new(args.strategy.into())
        .stop_flag(stop)
        .journal(journal);
    let report = if same {
        eprintln!(
            "sparsekit: {path}: resuming the unfinished {op} recorded in {}",
            options_journal(&r.file).display()
        );
        match options.resume(&file).map_err(|e| shift_error(&path, e))? {
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
        result.map_err(|e| shift_error(&path, e))?
    };
    print_report(&path, &report, r.json);
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
        return Ok(nothing(&path, args.json));
    }
    let file = open_for_writing(&args.file, &path)?;
    let stop = Arc::new(AtomicBool::new(false));
    let _signals = Signals::register(&stop)?;
    let options = ShiftOptions::new(ShiftStrategy::MoveData)
        .stop_flag(stop)
        .journal(journal.clone());
    match options.resume(&file).map_err(|e| shift_error(&path, e))? {
        Resumed::Nothing => Ok(nothing(&path, args.json)),
        Resumed::Discarded => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"file": path, "resumed": "discarded"})
                );
            } else {
                println!(
                    "{path}: {} held no complete record (the operation had not begun); the file is unchanged and the journal removed",
                    journal.path().display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Resumed::Finished(report) => {
            if args.json {
                let mut doc = report_json(&path, &report);
                doc["resumed"] = "finished".into();
                println!("{doc}");
            } else {
                println!("{}: resumed and finished", report_line(&path, &report));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn nothing(path: &str, json: bool) -> ExitCode {
    if json {
        println!(
            "{}",
            serde_json::json!({"file": path, "resumed": "nothing"})
        );
    } else {
        println!("{path}: no interrupted collapse or insert to resume");
    }
    ExitCode::SUCCESS
}

fn print_report(path: &str, report: &Report<ShiftStrategy>, json: bool) {
    for fallback in &report.fallbacks {
        eprintln!("sparsekit: {path}: {fallback}, falling back");
    }
    if json {
        println!("{}", report_json(path, report));
    } else {
        println!("{}", report_line(path, report));
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

/// Adds how to finish to the library's message; a stop exits 130.
fn shift_error(path: &str, e: PunchError) -> anyhow::Error {
    let hint = format!("run `sparsekit resume {path}` (or the same command again) to finish");
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
        PunchError::JournalPending { .. } => {
            anyhow::anyhow!("{path}: {e}: run `sparsekit resume {path}` to finish it first")
        }
        e => punch_error(path, e),
    }
}

/// SIGINT, SIGTERM and SIGHUP set the stop flag; a second one while it is
/// set ends the process at once with 128 + signal (the journal makes that
/// as safe as a SIGKILL). Unregistered on drop.
struct Signals(Vec<signal_hook::SigId>);

impl Signals {
    fn register(flag: &Arc<AtomicBool>) -> anyhow::Result<Signals> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut ids = Signals(Vec::new());
        for sig in [SIGINT, SIGTERM, SIGHUP] {
            // The shutdown handler runs first and only exits when an
            // earlier signal already set the flag.
            let registered =
                signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, Arc::clone(flag))
                    .and_then(|id| {
                        ids.0.push(id);
                        signal_hook::flag::register(sig, Arc::clone(flag))
                    })
                    .map_err(|e| anyhow::anyhow!("cannot install signal handlers: {e}"))?;
            ids.0.push(registered);
        }
        Ok(ids)
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for id in self.0.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}
