//! `check-results [DIR]`: junit.xml and kcidb.json read back by readers we
//! did not write (kcidb-io, KernelCI's schema library, and junitparser),
//! with the counts compared to the bench's.
//!
//! This lives in xtask, not in `cargo test`, because it needs pip packages
//! and `cargo test` stays hermetic; `cargo test` pins the documents with
//! snapshots and checks their structure itself, and `cargo xtask ci` runs
//! this check on a sample run (no root needed) and again on the real
//! bench's output.

use crate::util::{root, run};
use std::path::{Path, PathBuf};
use std::process::Command;

const SCRIPT: &str = include_str!("check_results.py");

/// Checks the documents in `dir` (a bench's `target/testbench`).
pub(crate) fn check(dir: &Path) -> anyhow::Result<()> {
    let python = crate::setup::python_tools()?;
    let script = root().join("target/xtask-check_results.py");
    std::fs::write(&script, SCRIPT)?;
    let mut c = Command::new(python);
    c.arg(&script).arg(dir);
    run(c)
}

/// Writes the sample run's documents (every kind of case, hostile
/// strings) and checks them.
pub(crate) fn check_sample() -> anyhow::Result<()> {
    let dir: PathBuf = root().join("target/testbench/sample");
    let mut c = crate::util::bench_binary("results-sample", true);
    c.arg(&dir);
    run(c)?;
    check(&dir)
}

/// `check-results [DIR]`: DIR, or the sample when none is given.
pub(crate) fn command(args: &[String]) -> anyhow::Result<()> {
    match args {
        [] => check_sample(),
        [dir] => check(Path::new(dir)),
        _ => anyhow::bail!("usage: cargo xtask check-results [DIR]"),
    }
}
