//! `sparsekit punch|zero|collapse|insert FILE --offset SIZE --length SIZE
//! [--strategy …] [--json]` (collapse and insert run through
//! [`super::shift`], which adds the journal and signals)
//!
//! Each prints what was done and the strategy used; the strategies `auto`
//! left behind are named on stderr with their errno. A bad range, a file of
//! the wrong kind or a descriptor the strategy cannot use exits 2 with
//! nothing touched; a failing call exits 1 naming the file, offset and
//! errno (and, if the file was changed part-way, what it now holds).

use crate::exit::UsageError;
use crate::human::{check_range, human_size, parse_size};
use crate::input::{Accept, open_checked};
use crate::output::print_report;
use crate::watchdog::{OnStall, TimeoutArg, Watchdog};
use serde_json::json;
use sparsekit_punch::{
    Operation, PunchError, PunchStrategy, Report, ShiftStrategy, Strategy, ZeroStrategy,
};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The arguments every range operation shares.
#[derive(Debug, clap::Args)]
pub(crate) struct RangeArgs {
    /// The file to change (a regular file).
    pub(crate) file: PathBuf,
    /// Start of the range (bytes, or K/M/G/T).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub(crate) offset: u64,
    /// Length of the range (bytes, or K/M/G/T).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub(crate) length: u64,
    /// Print JSON: {"file","operation","strategy","fallbacks":[{"strategy","errno"}],
    /// "offset","length","block_size","size_before","size_after",
    /// "allocated_before","allocated_after","bytes_freed","bytes_written"}.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) timeout: TimeoutArg,
}

/// `sparsekit punch`.
#[derive(Debug, clap::Args)]
pub(crate) struct PunchArgs {
    #[command(flatten)]
    range: RangeArgs,
    /// punch-hole frees whole blocks; zero-range and write-zeros only make
    /// the range read as zeros. auto tries them in that order.
    #[arg(long, value_enum, default_value_t = PunchArg::Auto)]
    strategy: PunchArg,
}

/// `sparsekit zero`.
#[derive(Debug, clap::Args)]
pub(crate) struct ZeroArgs {
    #[command(flatten)]
    range: RangeArgs,
    /// How to zero while keeping the range allocated; auto tries zero-range,
    /// punch-and-allocate, write-zeros.
    #[arg(long, value_enum, default_value_t = ZeroArg::Auto)]
    strategy: ZeroArg,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum PunchArg {
    Auto,
    PunchHole,
    ZeroRange,
    WriteZeros,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ZeroArg {
    Auto,
    ZeroRange,
    PunchAndAllocate,
    WriteZeros,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum ShiftArg {
    Auto,
    Native,
    MoveData,
}

impl From<PunchArg> for PunchStrategy {
    fn from(a: PunchArg) -> Self {
        match a {
            PunchArg::Auto => PunchStrategy::Auto,
            PunchArg::PunchHole => PunchStrategy::PunchHole,
            PunchArg::ZeroRange => PunchStrategy::ZeroRange,
            PunchArg::WriteZeros => PunchStrategy::WriteZeros,
        }
    }
}

impl From<ZeroArg> for ZeroStrategy {
    fn from(a: ZeroArg) -> Self {
        match a {
            ZeroArg::Auto => ZeroStrategy::Auto,
            ZeroArg::ZeroRange => ZeroStrategy::ZeroRange,
            ZeroArg::PunchAndAllocate => ZeroStrategy::PunchAndAllocate,
            ZeroArg::WriteZeros => ZeroStrategy::WriteZeros,
        }
    }
}

impl From<ShiftArg> for ShiftStrategy {
    fn from(a: ShiftArg) -> Self {
        match a {
            ShiftArg::Auto => ShiftStrategy::Auto,
            ShiftArg::Native => ShiftStrategy::Native,
            ShiftArg::MoveData => ShiftStrategy::MoveData,
        }
    }
}

pub(crate) fn run_punch(args: PunchArgs) -> anyhow::Result<ExitCode> {
    let r = &args.range;
    run(r, Operation::Punch, |f| {
        sparsekit_punch::punch_hole(f, r.offset, r.length, args.strategy.into())
    })
}

pub(crate) fn run_zero(args: ZeroArgs) -> anyhow::Result<ExitCode> {
    let r = &args.range;
    run(r, Operation::Zero, |f| {
        sparsekit_punch::zero_range(f, r.offset, r.length, args.strategy.into())
    })
}

fn run<S: Strategy>(
    args: &RangeArgs,
    operation: Operation,
    op: impl FnOnce(&File) -> Result<Report<S>, PunchError>,
) -> anyhow::Result<ExitCode> {
    let path = args.file.display().to_string();
    let op_name = operation.as_str();
    check_range(&format!("{path}: {op_name}"), args.offset, args.length).map_err(UsageError)?;
    let watchdog = Watchdog::start(args.timeout.timeout, format!("{path}: {op_name}"));
    let file = open_for_writing(&args.file, op_name)?;
    watchdog.watch_cache(&file);
    watchdog.on_stall(OnStall {
        note: stall_note(operation).into(),
        ..OnStall::default()
    });
    super::shift::refuse_if_pending(&args.file, &path)?;
    let report = op(&file).map_err(|e| punch_error(&path, e))?;
    watchdog.finish();
    for fallback in &report.fallbacks {
        crate::fallback::note(format_args!("{path}: "), fallback);
    }
    let line = report_line(&path, &report);
    if args.json {
        print_report(&report_json(&path, &report).to_string(), Some(&line))?;
    } else {
        print_report(&line, Some(&line))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// What a request stuck in the kernel may leave: it can still complete
/// after we exit (the filesystem holds it), or have done part of its work.
fn stall_note(op: Operation) -> &'static str {
    match op {
        Operation::Collapse | Operation::Insert => {
            "the file may be partly shifted: a native request may still complete, a move-data one stopped between chunks"
        }
        _ => {
            "the range may be partly done, and the request may still complete when the filesystem answers"
        }
    }
}

/// Read-write, never created, checked first so a fifo or device cannot
/// hang the open (see [`crate::input`]).
pub(crate) fn open_for_writing(file: &Path, op: &str) -> anyhow::Result<File> {
    open_checked(file, op, Accept::Regular, true)
}

/// Bad input exits 2 (nothing was touched); the rest exits 1.
pub(crate) fn punch_error(path: &str, e: PunchError) -> anyhow::Error {
    if e.is_bad_input() {
        UsageError(format!("{path}: {e}")).into()
    } else {
        anyhow::anyhow!("{path}: {e}")
    }
}

/// `disk.img: punched 1.0 MiB at offset 4096 with punch_hole; 1.0 MiB freed, size 8.0 GiB`
pub(crate) fn report_line<S: Strategy>(path: &str, r: &Report<S>) -> String {
    let len = human_size(r.length);
    let what = match r.operation {
        Operation::Punch => format!("punched {len}"),
        Operation::Zero => format!("zeroed {len}"),
        Operation::Collapse => format!("removed {len}"),
        Operation::Insert => format!("inserted a {len} hole"),
        op => format!("{op} {len}"),
    };
    let mut line = format!("{path}: {what} at offset {} with {}", r.offset, r.strategy);
    if r.bytes_written > 0 {
        line += &format!(" ({} written)", human_size(r.bytes_written));
    }
    match r.operation {
        Operation::Punch => line += &format!("; {} freed", human_size(r.freed())),
        Operation::Zero => line += &format!("; {} allocated", human_size(r.allocated_after)),
        _ => {}
    }
    if r.size_before == r.size_after {
        line += &format!(", size {}", human_size(r.size_after));
    } else {
        // Exact bytes: a block's difference vanishes in "8.0 GiB".
        line += &format!(", size {} -> {} bytes", r.size_before, r.size_after);
    }
    line
}

/// The stable JSON document documented on `--json`.
pub(crate) fn report_json<S: Strategy>(path: &str, r: &Report<S>) -> serde_json::Value {
    let fallbacks: Vec<_> = r.fallbacks.iter().map(crate::fallback::record).collect();
    json!({
        "file": path,
        "operation": r.operation.as_str(),
        "strategy": r.strategy.as_str(),
        "fallbacks": fallbacks,
        "offset": r.offset,
        "length": r.length,
        "block_size": r.block_size,
        "size_before": r.size_before,
        "size_after": r.size_after,
        "allocated_before": r.allocated_before,
        "allocated_after": r.allocated_after,
        "bytes_freed": r.freed(),
        "bytes_written": r.bytes_written,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::io::Errno;
    use sparsekit_punch::Fallback;

    fn report() -> Report<ShiftStrategy> {
        Report {
            operation: Operation::Collapse,
            strategy: ShiftStrategy::MoveData,
            fallbacks: vec![Fallback {
                strategy: ShiftStrategy::Native,
                errno: Errno::OPNOTSUPP,
            }],
            offset: 1 << 20,
            length: 64 << 10,
            block_size: 4096,
            size_before: 8 << 30,
            size_after: (8 << 30) - (64 << 10),
            allocated_before: 800 << 20,
            allocated_after: 799 << 20,
            bytes_written: 700 << 20,
        }
    }

    #[test]
    fn human_line() {
        insta::assert_snapshot!(report_line("disk.img", &report()));
    }

    #[test]
    fn json_document() {
        insta::assert_json_snapshot!(report_json("disk.img", &report()));
    }

    #[test]
    fn punch_line_says_what_was_freed() {
        let r = Report {
            operation: Operation::Punch,
            strategy: PunchStrategy::PunchHole,
            fallbacks: vec![],
            offset: 4096,
            length: 1 << 20,
            block_size: 4096,
            size_before: 8 << 30,
            size_after: 8 << 30,
            allocated_before: 2 << 20,
            allocated_after: 1 << 20,
            bytes_written: 0,
        };
        assert_eq!(
            report_line("disk.img", &r),
            "disk.img: punched 1.0 MiB at offset 4096 with punch_hole; 1.0 MiB freed, size 8.0 GiB"
        );
    }
}
