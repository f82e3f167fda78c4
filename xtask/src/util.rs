//! Running commands from the workspace root, loudly.

use anyhow::{Context, bail};
use std::path::PathBuf;
use std::process::Command;

/// The workspace root (xtask's parent directory).
pub(crate) fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

/// `cargo` as invoked by `cargo xtask` (respects $CARGO).
pub(crate) fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// `cargo run --release --locked -p sparsekit-testbench -- SUBCOMMAND`:
/// the bench binary (release: the scenarios do real I/O), for the tasks it
/// does (`run`, `bench`, `matrix`, `results-sample`); `quiet` hides cargo's
/// own lines where the output is a short report.
pub(crate) fn bench_binary(subcommand: &str, quiet: bool) -> Command {
    let mut c = cargo();
    c.arg("run");
    if quiet {
        c.arg("--quiet");
    }
    c.args(["--release", "--locked", "-p", "sparsekit-testbench", "--"])
        .arg(subcommand);
    c
}

/// Prints the command, runs it, fails with its exit status.
pub(crate) fn run(mut cmd: Command) -> anyhow::Result<()> {
    let shown = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("$ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {shown}"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Whether we run as root (the bench needs it).
pub(crate) fn is_root() -> bool {
    // Effective uid from /proc: no libc or unsafe needed in xtask.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
