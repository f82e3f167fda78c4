//! `sparsekit`: map, punch, copy, clone and probe large sparse files.
//!
//! Exit codes: 0 success, 1 the operation failed, 2 usage error (nothing
//! touched), 3 timeout, 130 interrupted (SIGINT/SIGTERM). Only this crate prints.

mod cmd;
mod exit;
mod fallback;
mod generate;
mod human;
mod verbosity;
mod version;

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
    /// Remove a block-aligned range, shifting the rest of the file down.
    Collapse(cmd::punch::ShiftArgs),
    /// Insert a block-aligned hole, shifting the rest of the file up.
    Insert(cmd::punch::ShiftArgs),
    /// Punch the all-zero blocks inside the data; no byte changes.
    Dig(cmd::dig::Args),
    /// Copy a file or block device, keeping holes, sparing the page cache,
    /// and leaving nothing that looks complete if it fails.
    Copy(cmd::copy::Args),
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
        Command::Collapse(args) => cmd::punch::run_collapse(args),
        Command::Insert(args) => cmd::punch::run_insert(args),
        Command::Dig(args) => cmd::dig::run(args),
        Command::Copy(args) => cmd::copy::run(args),
        Command::Caps(args) => cmd::caps::run(args),
        Command::Completions(args) => generate::run_completions(Cli::command(), args),
        Command::Man(args) => generate::run_man(Cli::command(), args),
    };
    exit::report(result)
}
