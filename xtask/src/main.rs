//! `cargo xtask <task>`: the project's automation, one module per task.
//!
//! - `ci`: what CI runs — fmt check, clippy, unit tests, rustdoc, then the
//!   test bench (root) — the README's test command.
//! - `testbench [ARGS]`: the privileged bench on every filesystem of matrix.toml;
//!   with `--kernel SPEC[,SPEC…]` on other kernels in a VM (see `kernel`).
//! - `kernel-selftest`: a kernel that cannot boot fails cleanly.
//! - `bench [NAME…]`: benchmarks against peer tools (root).
//! - `matrix readme [--check]`, `matrix merge FILE…`: the published matrix.
//! - `man [--check]`: the CLI's man pages in crates/cli/man (clap_mangen).
//! - `check-results [DIR]`: junit.xml and kcidb.json checked with kcidb-io
//!   and junitparser (a sample run's without DIR).

mod bench;
mod ci;
mod kernel;
mod man;
mod matrix;
mod results;
mod setup;
mod testbench;
mod util;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask ci [--no-bench] [--no-kernel]
       cargo xtask testbench [--fs NAME[,NAME…]] [--filter TEXT] [--no-install] [--no-selftest] [--bless]
                             [--kernel debian:6.1|debian:6.12|host|PATH/vmlinuz-REL[,…] [--run-timeout SECONDS]]
       cargo xtask kernel-selftest
       cargo xtask bench [NAME…]
       cargo xtask matrix readme [--check] | matrix merge FILE… | matrix diff A B
       cargo xtask check-results [DIR]
       cargo xtask man [--check]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci::run_ci(&args[1..]),
        Some("testbench") => testbench::command(&args[1..]),
        Some("kernel-selftest") => kernel::selftest(),
        Some("bench") => bench::command(&args[1..]),
        Some("matrix") => matrix::command(&args[1..]),
        Some("check-results") => results::command(&args[1..]),
        Some("man") => man::command(&args[1..]),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
