//! `sparsekit dig` beside another writer (issue 11: 278 blocks written
//! while dig ran read back as zeros). The CLI runs as a child process; the
//! writer is a thread of the bench, so another process as far as the
//! kernel's leases are concerned. Every scenario counts the blocks the
//! writer wrote that do not read back, and fails unless that is 0.

use crate::scenario::{Ctx, Scenario, ScenarioResult, Verdict};
use anyhow::{Context, bail, ensure};
use sparsekit_punch::WriteLease;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The scenarios of this module.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario::new("punch/dig_writer_opens_mid_dig", writer_opens_mid_dig),
        Scenario::new("punch/dig_writer_races_dig", writer_races_dig),
        Scenario::new("punch/dig_writer_already_open", writer_already_open),
    ]
}

/// Blocks in the test image (16 MiB).
const BLOCKS: u64 = 4096;
/// The block size the image is laid out in; dig's granularity must match.
const B: u64 = 4096;
/// The longest any one `sparsekit dig` may take here.
const LIMIT: Duration = Duration::from_secs(60);

fn sparsekit() -> anyhow::Result<PathBuf> {
    crate::bench::measure::sparsekit_bin()
}

/// The image, on a filesystem whose block size is [`B`].
fn image_here(ctx: &Ctx<'_>) -> anyhow::Result<Result<PathBuf, String>> {
    let path = image(ctx, B)?;
    let b = std::fs::metadata(&path)?.blksize();
    if b != B {
        return Ok(Err(format!("block size {b}; the image is laid out in {B}")));
    }
    Ok(Ok(path))
}

/// A byte that identifies block `i` as the base image wrote it (odd blocks
/// are zeros).
fn base(i: u64) -> u8 {
    if i % 2 == 1 { 0 } else { (i % 251) as u8 | 1 }
}

/// What the writer puts in block `i` (never zero, never `base`).
fn written(i: u64) -> u8 {
    (i % 127) as u8 * 2 + 2
}

/// `BLOCKS` blocks, data and zeros alternating: every odd block is a zero
/// run dig will punch.
fn image(ctx: &Ctx<'_>, b: u64) -> anyhow::Result<PathBuf> {
    let path = ctx.path("disk.img");
    let f = ctx.create("disk.img")?;
    let mut buf = vec![0u8; (BLOCKS * b) as usize];
    for (i, block) in buf.chunks_mut(b as usize).enumerate() {
        block.fill(base(i as u64));
    }
    f.write_all_at(&buf, 0).context("write the image")?;
    f.sync_all().context("fsync the image")?;
    Ok(path)
}

/// Blocks that do not hold what they should: `written` where the writer
/// wrote, `base` elsewhere. Returns (lost writes, other damage).
fn verify(path: &Path, b: u64, wrote: &[u64]) -> anyhow::Result<(Vec<u64>, Vec<u64>)> {
    let f = File::open(path)?;
    let mut block = vec![0u8; b as usize];
    let (mut lost, mut damaged) = (Vec::new(), Vec::new());
    for i in 0..BLOCKS {
        f.read_exact_at(&mut block, i * b)?;
        let writer = wrote.contains(&i);
        let want = if writer { written(i) } else { base(i) };
        if block.iter().any(|&x| x != want) {
            if writer {
                lost.push(i);
            } else {
                damaged.push(i);
            }
        }
    }
    Ok((lost, damaged))
}

fn ensure_nothing_lost(path: &Path, b: u64, wrote: &[u64]) -> anyhow::Result<()> {
    let (lost, damaged) = verify(path, b, wrote)?;
    ensure!(
        lost.is_empty(),
        "{} of the {} blocks the writer wrote were lost (first: block {})",
        lost.len(),
        wrote.len(),
        lost[0]
    );
    ensure!(
        damaged.is_empty(),
        "{} blocks nobody wrote changed (first: block {})",
        damaged.len(),
        damaged[0]
    );
    Ok(())
}

fn spawn_dig(path: &Path, extra: &[&str]) -> anyhow::Result<Child> {
    Command::new(sparsekit()?)
        .arg("dig")
        .arg(path)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn sparsekit dig")
}

/// Waits for `child` at most [`LIMIT`] (killing it after that).
fn finish(mut child: Child) -> anyhow::Result<Output> {
    let start = Instant::now();
    while child.try_wait()?.is_none() {
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            bail!("sparsekit dig still running after {LIMIT:?} (killed)");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(child.wait_with_output()?)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Whether `/proc/locks` lists a lease held by `pid`.
fn holds_lease(pid: u32) -> bool {
    let pid = pid.to_string();
    std::fs::read_to_string("/proc/locks")
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains("LEASE") && l.split_whitespace().any(|w| w == pid))
}

fn signal(pid: u32, sig: rustix::process::Signal) -> anyhow::Result<()> {
    let pid = rustix::process::Pid::from_raw(pid as i32).context("pid 0")?;
    rustix::process::kill_process(pid, sig).context("kill")?;
    Ok(())
}

/// Whether a write lease can be taken on a file of this filesystem (the
/// errno when not): the scenarios that need one skip naming it.
fn lease_errno(ctx: &Ctx<'_>) -> anyhow::Result<Option<rustix::io::Errno>> {
    let f = ctx.create("lease-probe")?;
    let r = WriteLease::acquire(&f).map(drop).err().map(|e| e.errno);
    drop(f);
    std::fs::remove_file(ctx.path("lease-probe"))?;
    Ok(r)
}

/// Dig is frozen (SIGSTOP) while it holds its lease, a writer opens the
/// file (blocking) and writes every zero block; dig, resumed, must stop
/// before its next punch with the message, and the writes all survive.
fn writer_opens_mid_dig(ctx: &Ctx<'_>) -> ScenarioResult {
    if let Some(errno) = lease_errno(ctx)? {
        crate::skip!(
            "no write lease here ({}); punch/dig_writer_already_open checks the refusal",
            sparsekit_sys::ErrnoName(errno)
        );
    }
    let b = B;
    // Dig may finish before this process sees its lease in /proc/locks (a
    // fast filesystem on a busy machine): then the image is made again and
    // dig run again, a few times, before that counts as a failure.
    let mut attempt = 0;
    let (path, dig, pid) = loop {
        attempt += 1;
        let path = match image_here(ctx)? {
            Ok(p) => p,
            Err(why) => crate::skip!("{why}"),
        };
        let mut dig = spawn_dig(&path, &[])?;
        let pid = dig.id();
        let deadline = Instant::now() + Duration::from_secs(10);
        let seen = loop {
            if holds_lease(pid) {
                break true;
            }
            if dig.try_wait()?.is_some() || Instant::now() > deadline {
                break false;
            }
            std::hint::spin_loop();
        };
        if seen {
            break (path, dig, pid);
        }
        let o = finish(dig)?;
        if attempt == 5 || !o.status.success() {
            bail!(
                "dig took no lease that could be seen in {attempt} attempts (last exit {:?}: {})",
                o.status.code(),
                stderr(&o)
            );
        }
    };
    signal(pid, rustix::process::Signal::STOP)?;
    let zeros: Vec<u64> = (1..BLOCKS).step_by(2).collect();
    let writer = {
        let (path, zeros) = (path.clone(), zeros.clone());
        std::thread::spawn(move || -> anyhow::Result<Duration> {
            let t = Instant::now();
            // Blocks until dig releases the lease.
            let w = File::options().write(true).open(&path)?;
            let waited = t.elapsed();
            for &i in &zeros {
                w.write_all_at(&vec![written(i); b as usize], i * b)?;
            }
            w.sync_all()?;
            Ok(waited)
        })
    };
    // Let the writer reach open() and start the break.
    std::thread::sleep(Duration::from_millis(200));
    signal(pid, rustix::process::Signal::CONT)?;
    let o = finish(dig)?;
    let waited = writer
        .join()
        .map_err(|_| anyhow::anyhow!("the writer panicked"))??;
    let e = stderr(&o);
    ensure!(
        o.status.code() == Some(1),
        "dig exited {:?} with a writer waiting: {e}",
        o.status.code()
    );
    for want in [
        "another process opened the file for writing",
        "stopped before offset",
        "nothing the other process writes is lost",
        "run dig again",
    ] {
        ensure!(e.contains(want), "dig's message lacks {want:?}: {e}");
    }
    ensure!(
        waited < Duration::from_secs(30),
        "the writer waited {waited:?}: dig did not release the lease promptly"
    );
    ensure_nothing_lost(&path, b, &zeros)?;
    // Nobody else has it open now: a second dig takes the lease and
    // finishes, and there is nothing left to punch (the zeros were written).
    let o = finish(spawn_dig(&path, &["--json"])?)?;
    ensure!(o.status.success(), "second dig: {}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    ensure!(v["writers"] == "excluded", "second dig: {v}");
    ensure!(v["holes_punched"] == 0, "second dig punched data: {v}");
    ensure_nothing_lost(&path, b, &zeros)?;
    Ok(Verdict::Pass)
}

/// The trial: a writer opens, writes a zero block, closes, again
/// and again, while dig runs and is re-run until it completes. Dig may
/// finish, stop at a break, or be refused (the writer had the file open at
/// that moment); whatever the interleaving, no written block is lost.
fn writer_races_dig(ctx: &Ctx<'_>) -> ScenarioResult {
    if let Some(errno) = lease_errno(ctx)? {
        crate::skip!(
            "no write lease here ({}): dig refuses without --force (punch/dig_writer_already_open)",
            sparsekit_sys::ErrnoName(errno)
        );
    }
    let path = match image_here(ctx)? {
        Ok(p) => p,
        Err(why) => crate::skip!("{why}"),
    };
    let b = B;
    const WRITES: u64 = 300;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (path, done) = (path.clone(), done.clone());
        std::thread::spawn(move || -> anyhow::Result<Vec<u64>> {
            let mut wrote = Vec::new();
            // Spread over the file: odd blocks, a stride coprime with it.
            for k in 0..WRITES {
                let i = (2 * (k * 37 % (BLOCKS / 2))) + 1;
                let w = File::options().write(true).open(&path)?;
                w.write_all_at(&vec![written(i); b as usize], i * b)?;
                drop(w);
                wrote.push(i);
                std::thread::sleep(Duration::from_millis(2));
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(wrote)
        })
    };
    let (mut finished, mut broken, mut refused, mut runs) = (0, 0, 0, 0);
    let start = Instant::now();
    loop {
        let writer_done = done.load(std::sync::atomic::Ordering::SeqCst);
        let o = finish(spawn_dig(&path, &[])?)?;
        runs += 1;
        let e = stderr(&o);
        match o.status.code() {
            Some(0) => finished += 1,
            Some(1) if e.contains("another process opened the file") => broken += 1,
            Some(1) if e.contains("refused") && e.contains("EAGAIN") => refused += 1,
            code => bail!("dig exited {code:?}: {e}"),
        }
        // Done once a dig completed after the last write.
        if writer_done && o.status.success() {
            break;
        }
        ensure!(
            start.elapsed() < Duration::from_secs(120),
            "dig never completed after the writer stopped ({runs} runs)"
        );
    }
    let wrote = writer
        .join()
        .map_err(|_| anyhow::anyhow!("the writer panicked"))??;
    ensure_nothing_lost(&path, b, &wrote)?;
    ensure!(
        broken + refused > 0,
        "dig ran {runs} times ({finished} complete) and never met the writer: the race was not exercised"
    );
    Ok(Verdict::Pass)
}

/// Another process has the file open before dig starts: dig refuses (exit
/// 1, naming the errno and --force), changing nothing; `--force` digs and
/// says it was unprotected. Where the filesystem has no leases at all, the
/// refusal names that errno instead (EINVAL): the same checks apply.
fn writer_already_open(ctx: &Ctx<'_>) -> ScenarioResult {
    let no_lease = lease_errno(ctx)?;
    let path = match image_here(ctx)? {
        Ok(p) => p,
        Err(why) => crate::skip!("{why}"),
    };
    let b = B;
    let before = std::fs::metadata(&path)?.blocks();
    let holder = File::options().write(true).open(&path)?;
    let want = no_lease
        .map(|e| {
            sparsekit_sys::ErrnoName(e)
                .symbol()
                .unwrap_or("?")
                .to_owned()
        })
        .unwrap_or_else(|| "EAGAIN".to_owned());
    let o = finish(spawn_dig(&path, &[])?)?;
    let e = stderr(&o);
    ensure!(
        o.status.code() == Some(1),
        "dig beside an open writer exited {:?}: {e}",
        o.status.code()
    );
    ensure!(
        e.contains("refused") && e.contains(&want) && e.contains("--force"),
        "the refusal should name {want} and --force: {e}"
    );
    ensure!(
        std::fs::metadata(&path)?.blocks() == before,
        "a refused dig changed the allocation"
    );
    ensure_nothing_lost(&path, b, &[])?;
    // --force: digs, says so on stderr and in the JSON.
    let o = finish(spawn_dig(&path, &["--force", "--json"])?)?;
    let e = stderr(&o);
    ensure!(o.status.success(), "dig --force: {e}");
    ensure!(
        e.contains("--force: digging without a write lease"),
        "no warning: {e}"
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    ensure!(
        v["writers"] == "not_excluded" && v["lease_errno"] == want.as_str(),
        "{v}"
    );
    ensure!(v["holes_punched"] == BLOCKS / 2, "{v}");
    drop(holder);
    ensure_nothing_lost(&path, b, &[])?;
    Ok(Verdict::Pass)
}
