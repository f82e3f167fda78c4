//! `sparsekit collapse|insert --strategy move-data` killed at random
//! moments (SIGKILL mostly, some SIGINT, SIGTERM and SIGHUP), finished by
//! `sparsekit resume`, and compared byte for byte with the model.
//!
//! The file alternates between two states: `F0`, whose range
//! `OFFSET..OFFSET + HOLE` is a hole, and `F0` collapsed by `length` at
//! `OFFSET`; inserting `length` at `OFFSET` turns the second back into the
//! first, so one file serves every kill without being rewritten. The model
//! is a pure function of the offset (`Layout::byte`), so checking a
//! 100 MiB file costs no memory.

use crate::scenario::{Ctx, Scenario, ScenarioResult, Verdict};
use anyhow::{Context, bail, ensure};
use sparsekit_sys::lease::{Lease, set_lease};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
/// Where the shifts happen.
const OFFSET: u64 = 4 * MIB;
/// The hole of `F0` at `OFFSET`: as long as the longest shift.
const HOLE: u64 = 16 * MIB;
/// The shift lengths: shorter than a segment (the source is saved in the
/// journal) and longer (redone from the file). Shifts are whole blocks of
/// the filesystem (`f_bsize`, as sparsekit-punch reads it): 64 KiB where
/// blocks are smaller, one block where they are larger (NFS: 512 KiB or
/// more).
fn lengths(dir: &Path) -> anyhow::Result<[u64; 2]> {
    let block = rustix::fs::statvfs(dir)?.f_bsize;
    ensure!(
        block.is_power_of_two() && block <= MIB,
        "block size {block}: OFFSET and HOLE are not whole blocks"
    );
    Ok([(64 << 10).max(block), HOLE])
}
/// Kills per filesystem.
const KILLS: usize = 24;

/// The scenarios of this module.
pub fn scenarios() -> Vec<Scenario> {
    vec![Scenario::new(
        "punch/shift_killed_at_random_resumes_to_the_model",
        killed_shifts,
    )]
}

/// `F0`: pattern data everywhere except the hole at `OFFSET` and a hole
/// every 7th MiB; a tail that is not block-aligned.
#[derive(Clone, Copy, Debug)]
struct Layout {
    size: u64,
}

impl Layout {
    fn is_hole(i: u64) -> bool {
        (OFFSET..OFFSET + HOLE).contains(&i) || (i / MIB) % 7 == 6
    }

    /// The byte of `F0` at `i`.
    fn byte(i: u64) -> u8 {
        if Self::is_hole(i) {
            return 0;
        }
        // Differs from block to block and from one shift to another.
        let w = (i / 8).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        ((w >> 56) as u8 ^ (i % 8) as u8) | 1
    }

    /// The byte at `i` of `F0` collapsed by `length` at `OFFSET`.
    fn collapsed_byte(i: u64, length: u64) -> u8 {
        Self::byte(if i < OFFSET { i } else { i + length })
    }

    /// Writes `F0` and closes the file again: the shifts take a write lease,
    /// which the kernel refuses while anyone else has the file open.
    fn write(&self, path: &Path) -> anyhow::Result<()> {
        let f = File::options().write(true).open(path)?;
        f.set_len(0)?;
        f.set_len(self.size)?;
        let mut buf = Vec::with_capacity(MIB as usize);
        let mut at = 0;
        while at < self.size {
            let end = (at + MIB).min(self.size);
            if !Self::is_hole(at) {
                buf.clear();
                buf.extend((at..end).map(Self::byte));
                f.write_all_at(&buf, at)?;
            }
            at = end;
        }
        f.sync_all()?;
        Ok(())
    }

    /// Compares the file with `F0` (`collapsed == None`) or `F0` collapsed
    /// by `length`; the first differing offset otherwise.
    fn check(&self, path: &Path, collapsed: Option<u64>) -> anyhow::Result<Result<(), String>> {
        let f = File::open(path)?;
        let size = f.metadata()?.len();
        let want = self.size - collapsed.unwrap_or(0);
        if size != want {
            return Ok(Err(format!("size {size}, the model's {want}")));
        }
        let mut buf = vec![0u8; MIB as usize];
        let mut at = 0;
        while at < size {
            let n = (size - at).min(MIB) as usize;
            f.read_exact_at(&mut buf[..n], at)?;
            for (k, &got) in buf[..n].iter().enumerate() {
                let i = at + k as u64;
                let model = match collapsed {
                    None => Self::byte(i),
                    Some(length) => Self::collapsed_byte(i, length),
                };
                if got != model {
                    return Ok(Err(format!(
                        "byte {i} is {got:#04x}, the model's {model:#04x}"
                    )));
                }
            }
            at += n as u64;
        }
        Ok(Ok(()))
    }
}

/// A small xorshift generator: the kill moments and signals, reproducible
/// from the seed printed on failure.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn journal(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap().to_string_lossy();
    path.with_file_name(format!(".{name}.sparsekit-shift"))
}

/// Whether the shifts here need `--force`: moving data takes a write lease
/// to keep other writers out, and a filesystem without leases (NFSv3:
/// EINVAL) refuses it; the kills and the resume are what is tested, so the
/// scenario vouches that no one else writes (as `--force` asks).
fn needs_force(dir: &Path) -> anyhow::Result<bool> {
    let probe = dir.join("lease-probe");
    let f = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&probe)?;
    let refused = match set_lease(&f, Lease::Write) {
        Ok(()) => {
            set_lease(&f, Lease::Unlocked)?;
            false
        }
        // EINVAL: no leases (NFSv3); EAGAIN on a file only we hold open:
        // an NFSv4 client without a write delegation (Debian 6.1's server
        // grants none).
        Err(e) => [rustix::io::Errno::INVAL, rustix::io::Errno::AGAIN]
            .iter()
            .any(|n| e.raw_os_error() == n.raw_os_error()),
    };
    drop(f);
    std::fs::remove_file(&probe)?;
    Ok(refused)
}

fn shift_args(path: &Path, collapse: bool, length: u64, force: bool) -> Vec<String> {
    let mut args = vec![
        if collapse { "collapse" } else { "insert" }.into(),
        path.display().to_string(),
        "--offset".into(),
        OFFSET.to_string(),
        "--length".into(),
        length.to_string(),
        "--strategy".into(),
        "move-data".into(),
    ];
    if force {
        args.push("--force".into());
    }
    args
}

fn run_to_end(bin: &Path, args: &[String]) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let o = Command::new(bin).args(args).output()?;
    ensure!(
        o.status.success(),
        "sparsekit {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(start.elapsed())
}

fn killed_shifts(ctx: &Ctx<'_>) -> ScenarioResult {
    let bin = crate::bench::measure::sparsekit_bin()?;
    let path = ctx.path("image.raw");
    drop(ctx.create("image.raw")?);
    let seed = std::env::var("SPARSEKIT_BENCH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
        | 1;
    let mut rng = Rng(seed);
    let lengths = lengths(ctx.dir())?;
    let force = needs_force(ctx.dir())?;

    // Calibrate: a file whose shift takes 0.3 s or more (capped at 128 MiB,
    // a quarter of the bench's images, so btrfs's copy-on-write has room,
    // and the journal and an insert's growth fit on the 512 MiB tmpfs).
    let mut layout = Layout {
        size: 32 * MIB + 100,
    };
    let took = loop {
        layout.write(&path)?;
        let took = run_to_end(&bin, &shift_args(&path, true, lengths[0], force))?;
        run_to_end(&bin, &shift_args(&path, false, lengths[0], force))?;
        if took >= Duration::from_millis(300) || layout.size > 128 * MIB {
            break took;
        }
        layout.size = (layout.size - 100) * 2 + 100;
    };
    if let Err(e) = layout.check(&path, None)? {
        bail!("the uninterrupted collapse and insert: {e}");
    }

    let (mut midway, mut stopped) = (0, 0);
    // Kill moments are drawn from `0..window`; the window shrinks each time
    // a kill comes after the end (the first run, cold, is the slowest), so
    // most kills land mid-way wherever the filesystem is fast.
    let mut window = took.mul_f64(1.2);
    // Kills before this moment found no journal yet; it rises as they do.
    let mut early = Duration::ZERO;
    // `None`: the file is F0; `Some(length)`: collapsed by `length`.
    let mut state: Option<u64> = None;
    for kill in 0..KILLS {
        let (collapse, length) = match state {
            None => (true, lengths[kill / 2 % 2]),
            Some(length) => (false, length),
        };
        let after = if collapse { Some(length) } else { None };
        // Mostly SIGKILL; every fourth kill a signal that must stop cleanly.
        let signal = match kill % 8 {
            3 => rustix::process::Signal::INT,
            5 => rustix::process::Signal::TERM,
            7 => rustix::process::Signal::HUP,
            _ => rustix::process::Signal::KILL,
        };
        // Between the latest kill that came too early (before the journal
        // had a record: process start-up dominates on slow machines) and the
        // window's end.
        let span = window.saturating_sub(early).as_micros().max(1) as u64;
        let at = early + Duration::from_micros(rng.below(span));
        let what = format!(
            "kill {kill} (seed {seed}): {} {length} at {OFFSET}, {signal:?} after {at:?} of ~{took:?}",
            if collapse { "collapse" } else { "insert" }
        );
        let mut child = Command::new(&bin)
            .args(shift_args(&path, collapse, length, force))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        std::thread::sleep(at);
        let _ = rustix::process::kill_process(rustix::process::Pid::from_child(&child), signal);
        let status = child.wait()?;
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            std::io::Read::read_to_string(&mut e, &mut stderr)?;
        }
        let pending = journal(&path).exists();
        match (signal, status.code(), status.signal()) {
            (_, Some(0), _) => {
                ensure!(!pending, "{what}: finished but left the journal");
                window = window.mul_f64(0.8);
            }
            (rustix::process::Signal::KILL, _, Some(9)) => {}
            // Before the handlers were installed the signal's default action ends it.
            (_, _, Some(s)) if s == signal.as_raw() && !pending => {}
            (_, Some(130), _) => {
                stopped += 1;
                // Where the shift needed --force, so does its resume.
                let resume = if force {
                    "sparsekit resume --force"
                } else {
                    "sparsekit resume"
                };
                ensure!(
                    stderr.contains(resume) || stderr.contains("nothing was changed"),
                    "{what}: exit 130 without saying how to finish ({resume}): {stderr}"
                );
            }
            _ => bail!("{what}: unexpected {status}: {stderr}"),
        }
        midway += usize::from(pending);
        if !pending && status.code() != Some(0) {
            early = at.min(window.mul_f64(0.8));
        }
        let o = Command::new(&bin)
            .arg("resume")
            .arg(&path)
            .arg("--json")
            .args(force.then_some("--force"))
            .output()
            .context("sparsekit resume")?;
        ensure!(
            o.status.success(),
            "{what}: resume: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        ensure!(!journal(&path).exists(), "{what}: resume left the journal");
        let resumed = String::from_utf8_lossy(&o.stdout);
        match layout.check(&path, after)? {
            Ok(()) => state = after,
            // Killed before its journal had a record: the file must be as
            // it was, and nothing may have been resumed.
            Err(e) if !resumed.contains("finished") => {
                if let Err(e2) = layout.check(&path, state)? {
                    bail!("{what}: neither done ({e}) nor untouched ({e2})");
                }
            }
            Err(e) => bail!("{what}: resumed ({resumed}) but {e}"),
        }
    }
    ensure!(
        midway >= KILLS / 3,
        "only {midway} of {KILLS} kills landed while the journal existed"
    );
    println!(
        "    {}: {KILLS} kills of a {} MiB shift taking ~{took:?} (seed {seed}): {midway} mid-way, {stopped} stopped cleanly, all resumed to the model",
        ctx.fs_name(),
        layout.size / MIB
    );
    Ok(Verdict::Pass)
}
