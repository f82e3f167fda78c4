//! `sparsekit`: map, punch, copy, clone and probe large sparse files.
//!
//! Exit codes: 0 success (or the reader of a pipe left), 1 the operation
//! failed (also a missing file, a dangling link, a stdout that cannot be
//! written), 2 usage error (nothing touched), 3 `--timeout`, 130 interrupted
//! (SIGINT/SIGTERM; and SIGHUP for collapse, insert and resume). Only this
//! crate prints, and only through `output`.

mod cmd;
mod exit;
mod fallback;
mod generate;
mod human;
mod input;
mod output;
mod verbosity;
mod version;
mod watchdog;

use clap::{CommandFactory, Parser, Subcommand};
use std::process::ExitCode;

/// Inspect, alter, copy, clone and probe large sparse files (virtual disk images).
#[derive(Debug, Parser)]
#[command(
    name = "sparsekit",
    version = version::SHORT,
    long_version = version::LONG,
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Also say on stderr which expected fallbacks were taken (they are
    /// always in --json); without it stderr has warnings and errors only.
    #[arg(short, long, global = true)]
    verbose: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show where a file has data, holes and unwritten extents.
    Map(cmd::map::Args),
    /// Describe a file with statx: only the fields asked for, only what the
    /// kernel filled; --timeout exits 3 instead of hanging on a dead mount.
    Stat(cmd::stat::Args),
    /// Share a file's (or a range's) extents with another file (FICLONE /
    /// FICLONERANGE). Never copies: fails where the filesystem cannot share.
    Clone(cmd::clone::CloneArgs),
    /// Share a range's extents with an equal range of another file
    /// (FIDEDUPERANGE); differing data are left unchanged and reported.
    Dedupe(cmd::clone::DedupeArgs),
    /// Make a range read as zeros and free its whole blocks; the size stays.
    Punch(cmd::punch::PunchArgs),
    /// Make a range read as zeros and keep it allocated; the size stays.
    Zero(cmd::punch::ZeroArgs),
    /// Remove a block-aligned range, shifting the rest of the file down
    /// (interrupted: finish with `sparsekit resume FILE`).
    Collapse(cmd::shift::ShiftArgs),
    /// Insert a block-aligned hole, shifting the rest of the file up
    /// (interrupted: finish with `sparsekit resume FILE`).
    Insert(cmd::shift::ShiftArgs),
    /// Finish a collapse or insert that a signal, SIGKILL or crash
    /// interrupted, from its journal (.NAME.sparsekit-shift beside FILE).
    Resume(cmd::shift::ResumeArgs),
    /// Punch the all-zero blocks inside the data; no byte changes.
    ///
    /// Other writers are kept out with a write lease (fcntl F_SETLEASE): dig
    /// refuses (exit 1) if another process has the file open or the
    /// filesystem has no leases, unless --force; if another process opens
    /// the file while dig runs, dig stops before its next punch, releases
    /// the file to it and exits 1 (nothing it writes is lost; run dig again).
    Dig(cmd::dig::Args),
    /// Copy a file or block device, keeping holes, sparing the page cache,
    /// and leaving nothing that looks complete if it fails.
    Copy(cmd::copy::Args),
    /// Compare two files or block devices by content, reading only their
    /// data (holes in both are skipped): exit 0 equal, 1 different.
    Compare(cmd::compare::Args),
    /// Find out what a directory's filesystem really supports, by trial on
    /// scratch files: native, degraded, emulated or unsupported, and how
    /// each was verified.
    Caps(cmd::caps::Args),
    /// Print a shell completion script (bash, zsh or fish) to stdout.
    Completions(generate::CompletionsArgs),
    /// Write the man pages into a directory (`cargo xtask man` runs this).
    #[command(name = "__man", hide = true)]
    Man(generate::ManArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return exit::clap_error(e),
    };
    verbosity::set_verbose(cli.verbose);
    let result = match cli.command {
        Command::Map(args) => cmd::map::run(args),
        Command::Stat(args) => cmd::stat::run(args),
        Command::Clone(args) => cmd::clone::run_clone(args),
        Command::Dedupe(args) => cmd::clone::run_dedupe(args),
        Command::Punch(args) => cmd::punch::run_punch(args),
        Command::Zero(args) => cmd::punch::run_zero(args),
        Command::Collapse(args) => cmd::shift::run_collapse(args),
        Command::Insert(args) => cmd::shift::run_insert(args),
        Command::Resume(args) => cmd::shift::run_resume(args),
        Command::Dig(args) => cmd::dig::run(args),
        Command::Copy(args) => cmd::copy::run(args),
        Command::Compare(args) => cmd::compare::run(args),
        Command::Caps(args) => cmd::caps::run(args),
        Command::Completions(args) => generate::run_completions(Cli::command(), args),
        Command::Man(args) => generate::run_man(Cli::command(), args),
    };
    exit::report(result)
}
