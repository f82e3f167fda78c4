//! The `sparsekit` CLI over a fault-injecting FUSE filesystem (see [`fs`])
//! whose backing directory lives on the filesystem under test: EIO on read
//! and on write at chosen offsets, short reads, slow replies, fallocate and
//! SEEK_DATA errors, and frozen files.
//!
//! Every case proves, of the release binary: no panic (exit 101 or
//! "panicked"); a failure is exit 1 with a message naming the file, the
//! errno (EIO) and an offset at or before the faulty byte; the source is
//! never written (its bytes, read from the backing directory, are the same
//! afterwards); no destination that looks complete (none where there was
//! none, an existing one unchanged, no temporary file left); no hang (a
//! frozen file with `--timeout` exits 3 within a bounded time, leaving
//! nothing); a fault the tool can absorb (short reads, slow replies) gives
//! the right bytes. Each case adds to the filesystem's fault counts
//! ([`tally`]): faults injected (the daemon's counters), survived, and data
//! lost (bytes that differ where nothing may).

mod frozen;
pub mod fs;
pub mod mount;
pub mod rule;
pub mod tally;

use crate::scenario::{Ctx, Scenario, ScenarioResult, Verdict};
use crate::scenarios::probe::deadmount::run_bounded;
use crate::scenarios::probe::fuse::{is_mounted, proc_state, wait_for};
use anyhow::{Context, bail, ensure};
use mount::FaultMount;
use rule::Rule;
use std::collections::BTreeSet;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The scenarios of this module.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario::new("faults/copy_source_read_eio", copy_source_read_eio),
        Scenario::new(
            "faults/copy_destination_write_eio",
            copy_destination_write_eio,
        ),
        Scenario::new("faults/copy_short_reads", copy_short_reads),
        Scenario::new("faults/copy_slow_replies", copy_slow_replies),
        Scenario::new("faults/map_eio", map_eio),
        Scenario::new("faults/dig_read_eio", dig_read_eio),
        Scenario::new("faults/punch_fallocate_eio", punch_fallocate_eio),
        Scenario::new("faults/collapse_emulated_eio", collapse_emulated_eio),
        Scenario::new("faults/insert_emulated_eio", insert_emulated_eio),
        Scenario::new("faults/caps_write_eio", caps_write_eio),
        Scenario::new("faults/frozen_stat", frozen::frozen_stat),
        Scenario::new("faults/frozen_map", frozen::frozen_map),
        Scenario::new("faults/frozen_dig", frozen::frozen_dig),
        Scenario::new("faults/frozen_punch", frozen::frozen_punch),
        Scenario::new("faults/frozen_copy_source", frozen::frozen_copy_source),
        Scenario::new(
            "faults/frozen_copy_destination",
            frozen::frozen_copy_destination,
        ),
        Scenario::new("faults/stalled_copy_source", frozen::stalled_copy_source),
        Scenario::new(
            "faults/stalled_copy_destination",
            frozen::stalled_copy_destination,
        ),
        Scenario::new("faults/cleanup_on_panic", cleanup_on_panic),
    ]
}

const MIB: u64 = 1 << 20;
/// The test file: 4 MiB, a hole at [1 MiB, 2 MiB), zeros written as data
/// at [2.5 MiB, 2.75 MiB) (for dig), pseudo-random bytes elsewhere.
const SIZE: u64 = 4 * MIB;
const HOLE: (u64, u64) = (MIB, 2 * MIB);
const ZEROS: (u64, u64) = (5 * MIB / 2, 11 * MIB / 4);
/// The longest any single command may take before it counts as a hang.
const LIMIT: Duration = Duration::from_secs(20);

/// The bytes of the test file (`seed` varies the data).
fn model(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v: Vec<u8> = (0..SIZE)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8 | 1
        })
        .collect();
    v[HOLE.0 as usize..HOLE.1 as usize].fill(0);
    v[ZEROS.0 as usize..ZEROS.1 as usize].fill(0);
    v
}

/// Writes `bytes` to `path` leaving [`HOLE`] a real hole.
fn write_sparse(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let f = std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    f.set_len(bytes.len() as u64)?;
    let len = bytes.len();
    let hole = (HOLE.0 as usize).min(len)..(HOLE.1 as usize).min(len);
    f.write_all_at(&bytes[..hole.start], 0)?;
    f.write_all_at(&bytes[hole.end..], hole.end as u64)?;
    f.sync_all()?;
    Ok(())
}

/// Bytes of `path` that differ from `want` (a size difference counts in
/// full; a missing file loses everything).
fn lost_bytes(path: &Path, want: &[u8]) -> u64 {
    match std::fs::read(path) {
        Ok(have) => lost_bytes_slice(&have, want),
        Err(_) => want.len() as u64,
    }
}

/// Names in `dir`.
fn entries(dir: &Path) -> anyhow::Result<BTreeSet<String>> {
    std::fs::read_dir(dir)
        .with_context(|| format!("list {}", dir.display()))?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect()
}

/// What one `sparsekit` run did.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

/// The release CLI.
struct Cli(String);

impl Cli {
    fn new() -> anyhow::Result<Cli> {
        let bin = crate::bench::measure::sparsekit_bin()?;
        Ok(Cli(bin.to_str().context("binary path")?.to_owned()))
    }

    /// Runs `sparsekit ARGS`; a run past `limit` is killed and fails.
    fn run(&self, args: &[&str], limit: Duration) -> anyhow::Result<Run> {
        let mut argv = vec![self.0.as_str()];
        argv.extend_from_slice(args);
        let (status, stdout, stderr, elapsed) = run_bounded(&argv, limit)?;
        Ok(Run {
            code: status.code(),
            stdout,
            stderr,
            elapsed,
        })
    }

    /// Whether `sparsekit CMD` documents `--timeout`.
    fn has_timeout(&self, cmd: &str) -> anyhow::Result<bool> {
        let (_, out, _, _) = run_bounded(&[&self.0, cmd, "--help"], LIMIT)?;
        Ok(out.contains("--timeout"))
    }
}

/// No panic: an exit code (not a signal), not 101, no "panicked".
fn no_panic(what: &str, r: &Run) -> anyhow::Result<()> {
    ensure!(r.code.is_some(), "{what}: killed by a signal: {}", r.stderr);
    ensure!(
        r.code != Some(101) && !r.stderr.contains("panicked"),
        "{what}: panicked (exit {:?}): {}",
        r.code,
        r.stderr
    );
    Ok(())
}

/// The offsets a message names (`offset N`).
fn offsets_named(msg: &str) -> Vec<u64> {
    msg.match_indices("offset ")
        .filter_map(|(i, m)| {
            let rest = &msg[i + m.len()..];
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            rest[..end].parse().ok()
        })
        .collect()
}

/// A clear failure: exit 1, naming `file` and EIO, and (with `fault`) an
/// offset at or before the faulty byte, within the same MiB-sized request.
fn clear_eio(what: &str, r: &Run, file: &str, fault: Option<u64>) -> anyhow::Result<()> {
    no_panic(what, r)?;
    ensure!(
        r.code == Some(1),
        "{what}: exit {:?}, want 1: {}",
        r.code,
        r.stderr
    );
    ensure!(
        r.stderr.contains("EIO"),
        "{what}: the message does not name EIO: {}",
        r.stderr
    );
    ensure!(
        r.stderr.contains(file),
        "{what}: the message does not name {file}: {}",
        r.stderr
    );
    if let Some(fault) = fault {
        let named = offsets_named(&r.stderr);
        ensure!(
            named.iter().any(|&o| o <= fault && fault - o < SIZE),
            "{what}: the message names no offset at or before the fault at {fault} (named {named:?}): {}",
            r.stderr
        );
    }
    Ok(())
}

/// One fault case: runs `body` (which returns the bytes lost, its checks
/// and what the command said on stderr), and records the faults the daemon injected meanwhile. A case
/// that injected nothing proved nothing and fails.
fn case(
    fm: &mut FaultMount,
    what: &str,
    body: impl FnOnce(&mut FaultMount) -> anyhow::Result<(u64, anyhow::Result<()>, String)>,
) -> anyhow::Result<()> {
    let before = fm.injected()?;
    let outcome = body(fm);
    // Whatever happened, the next case starts without faults.
    fm.clear()?;
    let injected = fm.injected()? - before;
    let (lost, checks, said) = match outcome {
        Ok(r) => r,
        Err(e) => (0, Err(e), String::new()),
    };
    let held = checks.is_ok() && injected > 0 && lost == 0;
    tally::record(injected, held, lost);
    checks.with_context(|| what.to_owned())?;
    ensure!(lost == 0, "{what}: {lost} bytes lost");
    ensure!(injected > 0, "{what}: no fault was injected (never hit)");
    let said = said.lines().last().unwrap_or("(nothing on stderr)");
    println!("    faults: {what}: {injected} injected, 0 bytes lost; {said}");
    Ok(())
}

/// A fault mount in the scenario's directory, backed on the filesystem
/// under test, and an `out` directory beside it (on that filesystem too).
fn setup(ctx: &Ctx<'_>) -> anyhow::Result<(FaultMount, PathBuf)> {
    let fm = FaultMount::start(&ctx.path("mnt"), &ctx.path("backing"))?;
    let out = ctx.path("out");
    std::fs::create_dir_all(&out)?;
    Ok((fm, out))
}

fn s(p: &Path) -> anyhow::Result<&str> {
    p.to_str().context("non-UTF-8 path")
}

/// `faults/copy_source_read_eio`: EIO reading the source: exit 1 naming
/// it, EIO and the offset; no destination (new) or the old one unchanged;
/// the source unchanged; nothing left in the destination's directory.
pub fn copy_source_read_eio(ctx: &Ctx<'_>) -> ScenarioResult {
    let cli = Cli::new()?;
    let (mut fm, out) = setup(ctx)?;
    let src = model(1);
    write_sparse(&fm.backing("src"), &src)?;
    let fault = 3 * MIB + 3 * 4096 + 5;
    let old = model(2);
    for (label, args, existing) in [
        ("new destination", vec![], false),
        ("existing destination", vec![], true),
        (
            "--reflink never --cache keep",
            vec!["--reflink", "never", "--cache", "keep"],
            false,
        ),
    ] {
        let dst = out.join("dst");
        let _ = std::fs::remove_file(&dst);
        if existing {
            write_sparse(&dst, &old)?;
        }
        let before = entries(&out)?;
        case(&mut fm, &format!("copy, {label}"), |fm| {
            fm.set(
                "src",
                &Rule {
                    read_eio: Some(fault),
                    ..Rule::default()
                },
            )?;
            let srcp = fm.path("src");
            let mut argv = vec!["copy", s(&srcp)?, s(&dst)?];
            argv.extend(&args);
            let r = cli.run(&argv, LIMIT)?;
            let mut lost = lost_bytes(&fm.backing("src"), &src);
            if existing {
                lost += lost_bytes(&dst, &old);
            }
            let checks = (|| {
                clear_eio("copy", &r, s(&srcp)?, Some(fault))?;
                ensure!(
                    existing || !dst.exists(),
                    "a destination was left after a failed copy"
                );
                let after = entries(&out)?;
                ensure!(
                    after == before,
                    "left in {}: {after:?}, before {before:?}",
                    out.display()
                );
                Ok(())
            })();
            Ok((lost, checks, r.stderr.clone()))
        })?;
    }
    fm.teardown()?;
    Ok(Verdict::Pass)
}

/// `faults/copy_destination_write_eio`: EIO writing the (staged)
/// destination on the fault mount, or from its fsync (a write-back error
/// the copy must not take for success): exit 1 naming EIO (and the offset
/// of the write); no
/// destination or the old one unchanged; no temporary file left in the
/// backing directory (O_TMPFILE is not there, so copy stages under a
/// visible name that must go); the source unchanged.
pub fn copy_destination_write_eio(ctx: &Ctx<'_>) -> ScenarioResult {
    let cli = Cli::new()?;
    let (mut fm, out) = setup(ctx)?;
    let src = model(3);
    let srcp = out.join("src");
    write_sparse(&srcp, &src)?;
    // Healthy first: the copy stages under a visible name here (FUSE has no
    // O_TMPFILE), the path whose failures must leave nothing.
    let healthy = fm.path("healthy");
    let r = cli.run(&["copy", s(&srcp)?, s(&healthy)?, "--json"], LIMIT)?;
    no_panic("healthy copy", &r)?;
    ensure!(
        r.code == Some(0),
        "healthy copy to the fault mount: {}",
        r.stderr
    );
    let report: serde_json::Value = serde_json::from_str(&r.stdout).context("copy --json")?;
    ensure!(
        report["staging"] == "named_temp",
        "want a named staged file on FUSE: {}",
        r.stdout
    );
    ensure!(
        lost_bytes(&fm.backing("healthy"), &src) == 0,
        "the healthy copy differs"
    );
    std::fs::remove_file(fm.backing("healthy"))?;
    let old = model(4);
    let fault = 2 * MIB + 12345;
    let eio_at = Rule {
        write_eio: Some(fault),
        ..Rule::default()
    };
    let fsync_eio = Rule {
        fsync_eio: true,
        ..Rule::default()
    };
    for (label, existing, cache, rule) in [
        ("new destination", false, "auto", &eio_at),
        ("existing destination", true, "auto", &eio_at),
        ("new destination, --cache keep", false, "keep", &eio_at),
        ("new destination, fsync failing", false, "keep", &fsync_eio),
        (
            "existing destination, fsync failing",
            true,
            "auto",
            &fsync_eio,
        ),
    ] {
        let _ = std::fs::remove_file(fm.backing("dst"));
        if existing {
            write_sparse(&fm.backing("dst"), &old)?;
        }
        let before = entries(fm.backing_dir())?;
        case(
            &mut fm,
            &format!("copy to the fault mount, {label}"),
            |fm| {
                // The staged file's name is not known in advance: every file.
                fm.set("*", rule)?;
                let dstp = fm.path("dst");
                let r = cli.run(&["copy", s(&srcp)?, s(&dstp)?, "--cache", cache], LIMIT)?;
                let mut lost = lost_bytes(&srcp, &src);
                if existing {
                    lost += lost_bytes(&fm.backing("dst"), &old);
                }
                let checks = (|| {
                    clear_eio("copy", &r, s(&dstp)?, rule.write_eio)?;
                    ensure!(
                        existing || !fm.backing("dst").exists(),
                        "a destination was left after a failed copy"
                    );
                    let after = entries(fm.backing_dir())?;
                    ensure!(
                        after == before,
                        "left on the mount: {after:?}, before {before:?}"
                    );
                    Ok(())
                })();
                Ok((lost, checks, r.stderr.clone()))
            },
        )?;
    }
    fm.teardown()?;
    Ok(Verdict::Pass)
}

/// `faults/copy_short_reads`: every read of the source answers half of
/// what was asked: the copy must loop and give the same bytes.
pub fn copy_short_reads(ctx: &Ctx<'_>) -> ScenarioResult {
    let cli = Cli::new()?;
    let (mut fm, out) = setup(ctx)?;
    let src = model(5);
    write_sparse(&fm.backing("src"), &src)?;
    for (label, args) in [
        ("auto", vec![]),
        (
            "--reflink never --cache keep",
            vec!["--reflink", "never", "--cache", "keep"],
        ),
    ] {
        let dst = out.join("dst");
        let _ = std::fs::remove_file(&dst);
        case(&mut fm, &format!("copy with short reads, {label}"), |fm| {
            fm.set(
                "src",
                &Rule {
                    short_read: true,
                    ..Rule::default()
                },
            )?;
            let srcp = fm.path("src");
            let mut argv = vec!["copy", s(&srcp)?, s(&dst)?];
            argv.extend(&args);
            let r = cli.run(&argv, LIMIT)?;
            let lost = lost_bytes(&fm.backing("src"), &src) + lost_bytes(&dst, &src);
            let checks = (|| {
                no_panic("copy", &r)?;
                ensure!(r.code == Some(0), "copy exited {:?}: {}", r.code, r.stderr);
                Ok(())
            })();
            Ok((lost, checks, r.stderr.clone()))
        })?;
    }
    fm.teardown()?;
    Ok(Verdict::Pass)
}

/// `faults/copy_slow_replies`: every request of the source waits 3 ms: the
/// copy is slow, not stalled, so it finishes (also under `--timeout`,
/// where the CLI has it) with the same bytes.
pub fn copy_slow_replies(ctx: &Ctx<'_>) -> ScenarioResult {
    let cli = Cli::new()?;
    let (mut fm, out) = setup(ctx)?;
    let src = model(6);
    write_sparse(&fm.backing("src"), &src)?;
    let timeout = cli.has_timeout("copy")?;
    let dst = out.join("dst");
    case(&mut fm, "copy with slow replies", |fm| {
        fm.set(
            "src",
            &Rule {
                delay: Duration::from_millis(3),
                ..Rule::default()
            },
        )?;
        let srcp = fm.path("src");
        // Slow (3 ms a reply) but never stuck: 500 ms without progress is
        // ample on a real machine; under TCG the watchdog fired (stretched).
        let no_progress = format!(
            "{}ms",
            crate::scenario::wall_budget(Duration::from_millis(500)).as_millis()
        );
        let mut argv = vec!["copy", s(&srcp)?, s(&dst)?];
        if timeout {
            argv.extend(["--timeout", no_progress.as_str()]);
        }
        let r = cli.run(&argv, LIMIT)?;
        let lost = lost_bytes(&fm.backing("src"), &src) + lost_bytes(&dst, &src);
        let checks = (|| {
            no_panic("copy", &r)?;
            ensure!(r.code == Some(0), "copy exited {:?}: {}", r.code, r.stderr);
            Ok(())
        })();
        Ok((lost, checks, r.stderr.clone()))
    })?;
    fm.teardown()?;
    if !timeout {
        println!("    faults: copy has no --timeout yet: the slow copy ran without one");
    }
    Ok(Verdict::Pass)
}

/// `faults/map_eio`: SEEK_DATA failing with EIO, and (`--method scan`) a
/// read failing with EIO: exit 1 naming the file and EIO (and the offset
/// of the read); the file unchanged.
pub fn map_eio(ctx: &Ctx<'_>) -> ScenarioResult {
    let cli = Cli::new()?;
    let (mut fm, _) = setup(ctx)?;
    let bytes = model(7);
    write_sparse(&fm.backing("f"), &bytes)?;
    let fault = 3 * MIB + 100;
    case(&mut fm, "map with SEEK_DATA failing", |fm| {
        fm.set(
            "f",
            &Rule {
                lseek_eio: true,
                ..Rule::default()
            },
        )?;
        let p = fm.path("f");
        let r = cli.run(&["map", s(&p)?, "--method", "seek"], LIMIT)?;
        let lost = lost_bytes(&fm.backing("f"), &bytes);
        let checks = clear_eio("map --method seek", &r, s(&p)?, None);
        Ok((lost, checks, r.stderr.clone()))
    })?;
    case(&mut fm, "map (auto) with SEEK_DATA failing", |fm| {
        fm.set(
            "f",
            &Rule {
                lseek_eio: true,
                ..Rule::default()
            },
        )?;
        let p = fm.path("f");
        // EIO is no "unsupported": no silent fallback to another method.
        let r = cli.run(&["map", s(&p)?], LIMIT)?;
        let lost = lost_bytes(&fm.backing("f"), &bytes);
        let checks = clear_eio("map", &r, s(&p)?, None);
        Ok((lost, checks, r.stderr.clone()))
    })?;
    case(&mut fm, "map --method scan with a read failing", |fm| {
        fm.set(
            "f",
            &Rule {
                read_eio: Some(fault),
                ..Rule::default()
            },
        )?;
        let p = fm.path("f");
        let r = cli.run(&["map", s(&p)?, "--method", "scan"], LIMIT)?;
        let lost = lost_bytes(&fm.backing("f"), &bytes);
        let checks = clear_eio("map --method scan", &r, s(&p)?, Some(fault));
        Ok((lost, checks, r.stderr.clone()))
    })?;
    fm.teardown()?;
    Ok(Verdict::Pass)
}

/// Runs a command that rewrites `f` in place; if it refuses without
/// `--force` (another writer cannot be excluded on FUSE), runs it again
/// with `--force`: the fault, not the refusal, is under test.
fn run_in_place(cli: &Cli, argv: &[&str]) -> anyhow::Result<Run> {
    let r = cli.run(argv, LIMIT)?;
    if r.code != Some(0) && r.stderr.contains("--force") {
        let mut forced = argv.to_vec();
        forced.push("--force");
        return cli.run(&forced, LIMIT);
    }
    Ok(r)
}

/// `faults/dig_read_eio`: dig reading a block that fails: exit 1 naming
/// the file, EIO and the offset; no byte of the file changed.
pub fn dig_read_eio(ctx: &Ctx<'_>) -> ScenarioResult {
    let cli = Cli::new()?;
    let (mut fm, _) = setup(ctx)?;
    let bytes = model(8);
    write_sparse(&fm.backing("f"), &bytes)?;
    // After the zeros dig would punch, so a dig that punches as it reads
    // has punched them before it fails.
    let fault = 3 * MIB + 4096 * 7;
    case(&mut fm, "dig with a read failing", |fm| {
        fm.set(
            "f",
            &Rule {
                read_eio: Some(fault),
                ..Rule::default()
            },
        )?;
        let p = fm.path("f");
        let r = run_in_place(&cli, &["dig", s(&p)?])?;
        let lost = lost_bytes(&fm.backing("f"), &bytes);
        let checks = clear_eio("dig", &r, s(&p)?, Some(fault));
        Ok((lost, checks, r.stderr.clone()))
    })?;
    fm.teardown()?;
    Ok(Verdict::Pass)
}

/// `faults/punch_fallocate_eio`: fallocate failing with EIO under punch
/// and zero: exit 1 naming the file and EIO (not a silent fallback to
/// writing zeros: EIO is no "unsupported"); no byte of the file changed.
pub fn punch_fallocate_eio(ctx: &Ctx<'_>) -> ScenarioResult {
    let cli = Cli::new()?;
    let (mut fm, _) = setup(ctx)?;
    let bytes = model(9);
    write_sparse(&fm.backing("f"), &bytes)?;
    for cmd in ["punch", "zero"] {
        case(&mut fm, &format!("{cmd} with fallocate failing"), |fm| {
            fm.set(
                "f",
                &Rule {
                    fallocate_eio: true,
                    ..Rule::default()
                },
            )?;
            let p = fm.path("f");
            let r = run_in_place(&cli, &[cmd, s(&p)?, "--offset", "3M", "--length", "64K"])?;
            let lost = lost_bytes(&fm.backing("f"), &bytes);
            let checks = clear_eio(cmd, &r, s(&p)?, None);
            Ok((lost, checks, r.stderr.clone()))
        })?;
    }
    fm.teardown()?;
    Ok(Verdict::Pass)
}

/// An emulated shift (`collapse` / `insert`, refused natively by FUSE)
/// meeting EIO on its first read or first write: exit 1 naming the file
/// and EIO; the file's first `SIZE` bytes unchanged. If the tool says how
/// to finish (`sparsekit resume`), finishing must give the model's bytes.
fn shift_eio(ctx: &Ctx<'_>, cmd: &str) -> ScenarioResult {
    let cli = Cli::new()?;
    let (mut fm, _) = setup(ctx)?;
    let bytes = model(10);
    let (offset, length) = (MIB, MIB);
    let expected: Vec<u8> = if cmd == "collapse" {
        [
            &bytes[..offset as usize],
            &bytes[(offset + length) as usize..],
        ]
        .concat()
    } else {
        let mut v = bytes[..offset as usize].to_vec();
        v.resize((offset + length) as usize, 0);
        v.extend_from_slice(&bytes[offset as usize..]);
        v
    };
    // The data moves away from the hole made or towards the range removed:
    // collapse reads from offset + length first and writes at offset; insert
    // works from the end back, reading the last block first.
    let first_read = if cmd == "collapse" {
        offset + length
    } else {
        SIZE - 1
    };
    let rules = [
        (
            "the first read",
            Rule {
                read_eio: Some(first_read),
                ..Rule::default()
            },
        ),
        (
            "a write",
            Rule {
                write_eio: Some(if cmd == "collapse" {
                    offset
                } else {
                    SIZE + length - 1
                }),
                ..Rule::default()
            },
        ),
    ];
    for (label, rule) in rules {
        write_sparse(&fm.backing("f"), &bytes)?;
        case(
            &mut fm,
            &format!("{cmd} (emulated), EIO on {label}"),
            |fm| {
                fm.set("f", &rule)?;
                let p = fm.path("f");
                let ps = s(&p)?.to_owned();
                let r = run_in_place(&cli, &[cmd, &ps, "--offset", "1M", "--length", "1M"])?;
                let checks = clear_eio(cmd, &r, &ps, rule.read_eio.or(rule.write_eio));
                // Torn but finishable is allowed; torn for good is data lost.
                let resumable = r.stderr.contains("resume");
                let lost = if resumable {
                    fm.clear()?;
                    let fin = cli.run(&["resume", &ps], LIMIT)?;
                    no_panic("resume", &fin)?;
                    lost_bytes(&fm.backing("f"), &expected)
                } else {
                    let have = std::fs::read(fm.backing("f"))?;
                    let head = &have[..have.len().min(SIZE as usize)];
                    lost_bytes_slice(head, &bytes)
                };
                Ok((lost, checks, r.stderr.clone()))
            },
        )?;
    }
    fm.teardown()?;
    Ok(Verdict::Pass)
}

/// Bytes of `have` that differ from `want`, a size difference in full.
fn lost_bytes_slice(have: &[u8], want: &[u8]) -> u64 {
    let common = have.len().min(want.len());
    (have[..common]
        .iter()
        .zip(&want[..common])
        .filter(|(a, b)| a != b)
        .count()
        + have.len().abs_diff(want.len())) as u64
}

/// `faults/collapse_emulated_eio`: see `shift_eio`.
pub fn collapse_emulated_eio(ctx: &Ctx<'_>) -> ScenarioResult {
    shift_eio(ctx, "collapse")
}

/// `faults/insert_emulated_eio`: see `shift_eio`.
pub fn insert_emulated_eio(ctx: &Ctx<'_>) -> ScenarioResult {
    shift_eio(ctx, "insert")
}

/// `faults/caps_write_eio`: caps on the fault mount with every write
/// failing: no panic, an answer (exit 0 or 1), no capability that needs a
/// write to verify classified native, and no scratch file left.
pub fn caps_write_eio(ctx: &Ctx<'_>) -> ScenarioResult {
    let cli = Cli::new()?;
    let (mut fm, _) = setup(ctx)?;
    let before = entries(fm.backing_dir())?;
    let rules = [
        (
            "caps with every write failing",
            Rule {
                write_eio: Some(0),
                ..Rule::default()
            },
        ),
        (
            "caps with every fallocate failing",
            Rule {
                fallocate_eio: true,
                ..Rule::default()
            },
        ),
    ];
    for (what, rule) in rules {
        case(&mut fm, what, |fm| {
            fm.set("*", &rule)?;
            let dir = fm.mountpoint().to_owned();
            let r = cli.run(&["caps", s(&dir)?, "--json"], LIMIT)?;
            let out = &r.stdout;
            let checks = (|| {
                no_panic("caps", &r)?;
                ensure!(
                    matches!(r.code, Some(0 | 1)),
                    "caps exited {:?}: {}",
                    r.code,
                    r.stderr
                );
                if r.code == Some(0) {
                    let v: serde_json::Value = serde_json::from_str(out).context("caps --json")?;
                    let text = v.to_string();
                    for cap in ["punch_hole", "zero_range"] {
                        let cell = find_cap(&v, cap);
                        ensure!(
                            cell.as_deref().is_none_or(|c| !c.contains("native")),
                            "{cap} is native with every write failing: {cell:?} ({} bytes of json)",
                            text.len()
                        );
                    }
                }
                let after = entries(fm.backing_dir())?;
                ensure!(after == before, "caps left {after:?} (before {before:?})");
                Ok(())
            })();
            Ok((0, checks, r.stderr.clone()))
        })?;
    }
    fm.teardown()?;
    Ok(Verdict::Pass)
}

/// The JSON text of capability `name` in a `caps --json` answer, wherever
/// it sits (an object keyed by name, or a list of objects with a name).
fn find_cap(v: &serde_json::Value, name: &str) -> Option<String> {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(c) = m.get(name) {
                return Some(c.to_string().to_lowercase());
            }
            if m.get("name").and_then(|n| n.as_str()) == Some(name) {
                return Some(v.to_string().to_lowercase());
            }
            m.values().find_map(|x| find_cap(x, name))
        }
        serde_json::Value::Array(a) => a.iter().find_map(|x| find_cap(x, name)),
        _ => None,
    }
}

/// `faults/cleanup_on_panic`: a scenario that panics while a request is
/// held on a frozen file still leaves nothing mounted and no daemon.
pub fn cleanup_on_panic(ctx: &Ctx<'_>) -> ScenarioResult {
    let mnt = ctx.path("mnt");
    let backing = ctx.path("backing");
    let pid = std::sync::Mutex::new(0u32);
    let result = std::thread::scope(|sc| {
        sc.spawn(|| {
            let mut fm = FaultMount::start(&mnt, &backing).expect("start");
            *pid.lock().unwrap() = fm.pid();
            std::fs::write(fm.backing("f"), b"x").expect("write");
            fm.freeze("f").expect("freeze");
            // A reader held by the frozen file, still waiting when we unwind.
            let p = fm.path("f");
            std::thread::spawn(move || std::fs::read(p));
            std::thread::sleep(Duration::from_millis(100));
            // Unwinds exactly like a panic, without the hook's backtrace.
            std::panic::resume_unwind(Box::new("deliberate panic with a file frozen"));
        })
        .join()
    });
    ensure!(result.is_err(), "the thread was meant to panic");
    let pid = *pid.lock().unwrap();
    if pid == 0 {
        bail!("the fault daemon never started");
    }
    ensure!(
        !is_mounted(&mnt),
        "{} still mounted after the panic",
        mnt.display()
    );
    wait_for("the daemon to be gone", Duration::from_secs(5), || {
        proc_state(pid).is_none_or(|s| s == 'Z')
    })?;
    Ok(Verdict::Pass)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_read_from_messages() {
        assert_eq!(
            offsets_named("x: pread at offset 3145728: EIO (I/O error); at offset 7"),
            vec![3145728, 7]
        );
        assert!(offsets_named("no offset here").is_empty());
    }

    #[test]
    fn the_model_has_its_hole_and_zeros_and_data_elsewhere() {
        let m = model(1);
        assert_eq!(m.len() as u64, SIZE);
        assert!(m[HOLE.0 as usize..HOLE.1 as usize].iter().all(|&b| b == 0));
        assert!(
            m[ZEROS.0 as usize..ZEROS.1 as usize]
                .iter()
                .all(|&b| b == 0)
        );
        assert!(m[..HOLE.0 as usize].iter().all(|&b| b != 0));
        assert_ne!(model(1), model(2));
    }

    #[test]
    fn lost_bytes_counts_differences_and_size() {
        assert_eq!(lost_bytes_slice(b"abcd", b"abcd"), 0);
        assert_eq!(lost_bytes_slice(b"abXd", b"abcd"), 1);
        assert_eq!(lost_bytes_slice(b"ab", b"abcd"), 2);
        assert_eq!(lost_bytes(Path::new("/nonexistent/x"), b"abc"), 3);
    }
}
