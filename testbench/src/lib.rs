//! The sparsekit test bench: real filesystems on loop devices, scenarios
//! that drive every op crate with each strategy forced, and (with the full
//! bench) the capability matrix.
//!
//! Needs root. Run it with `cargo xtask testbench`; plain `cargo test` only
//! runs this crate's hermetic unit tests.
//!
//! # Brief overview
//! - [`defs`]: the `[[filesystem]]` definitions of `matrix.toml`.
//! - [`fixture`]: [`MountedFs`](fixture::MountedFs) and
//!   [`LoopImage`](fixture::LoopImage) guards; their `Drop` unmounts,
//!   detaches and removes, so a panicking scenario leaves nothing behind.
//! - [`cleanup`]: the registry that lets SIGINT/SIGTERM/SIGHUP undo the same.
//! - [`scenario`]: the [`Scenario`](scenario::Scenario) API — a function
//!   `fn(&Ctx) -> ScenarioResult` returning `Ok(Verdict::Pass)`,
//!   `Ok(Verdict::Skip(reason))` (use [`skip!`] / [`require!`]) or `Err`
//!   (fail). Panics are caught and count as failures.
//! - [`scenarios`]: one module per op crate; `scenarios::all()` lists them.
//! - [`runner`]: runs them per filesystem and prints pass/fail/skip counts.
//! - [`results`], [`junit`], [`kcidb`]: the run as test cases, and as the
//!   `junit.xml` (fstests' xunit shape) and `kcidb.json` (KCIDB v5) that
//!   CI systems read.
//! - [`bench`](mod@bench): benchmarks against peer tools (`cargo xtask bench NAME`).
//!
//! # Adding scenarios
//! Write `testbench/src/scenarios/<crate>.rs` with
//! `pub fn scenarios() -> Vec<Scenario>` and add it to `scenarios::all()`.
//! Each scenario gets a fresh scratch directory on the filesystem under
//! test (`ctx.dir()`, `ctx.create(name)`), removed afterwards. Observe
//! support by trial and `skip!` with the errno when it is missing; never
//! decide from the filesystem's name alone what it supports.

pub mod bench;
pub mod cleanup;
pub mod defs;
pub mod fixture;
pub mod identity;
pub mod junit;
pub mod kcidb;
pub mod markdown;
pub mod matrix;
pub mod nbd;
pub mod proptest_support;
pub mod publish;
pub mod results;
pub mod runner;
pub mod scenario;
pub mod scenarios;
pub mod selftest;
pub mod tools;
