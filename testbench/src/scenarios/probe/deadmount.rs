//! The proof on a real dead mount: a FUSE daemon frozen with SIGSTOP.
//!
//! With the daemon frozen and its cache times expired, `stat(1)` hangs;
//! `sparsekit stat --timeout 1s` exits 3 within 1.5 s naming the path and
//! the time waited; the library's timed probes time out, are counted as
//! stuck, and hit the cap; `--no-sync` on an already open file answers from
//! cached attributes while a synced probe of the same fd hangs. After a
//! thaw everything answers again, and nothing stays mounted or stopped.

use super::fuse::{FILE_SIZE, FuseMount, is_mounted, pattern, proc_state, wait_for};
use crate::scenario::{Ctx, ScenarioResult, Verdict, wall_budget};
use anyhow::{Context, bail, ensure};
use rustix::fd::AsRawFd;
use sparsekit_probe::{Fields, ProbeError, ProbeOptions, SyncMode, WorkerPool};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Entry and attribute cache time of the FUSE filesystem.
const TTL: Duration = Duration::from_millis(300);

/// The `sparsekit` binary built next to the bench (`cargo build --release -p sparsekit-cli`).
fn sparsekit() -> anyhow::Result<PathBuf> {
    crate::bench::measure::sparsekit_bin()
}

/// Waits for `child` at most `limit`; `None` if it is still running.
fn wait_bounded(
    child: &mut std::process::Child,
    limit: Duration,
) -> anyhow::Result<Option<ExitStatus>> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if start.elapsed() >= limit {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `argv` with a hard bound; returns (status, stdout, stderr, elapsed).
pub(crate) fn run_bounded(
    argv: &[&str],
    limit: Duration,
) -> anyhow::Result<(ExitStatus, String, String, Duration)> {
    let start = Instant::now();
    let mut child = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawn {argv:?}"))?;
    let Some(status) = wait_bounded(&mut child, limit)? else {
        let _ = child.kill();
        let _ = child.wait();
        bail!("{argv:?} still running after {limit:?} (killed)");
    };
    let elapsed = start.elapsed();
    let out = child.wait_with_output()?;
    Ok((
        status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed,
    ))
}

/// Proves `stat(1)` hangs on `path`: still running after `limit`. Kills
/// and reaps it (a queued FUSE request is abandoned on SIGKILL).
fn assert_stat1_hangs(path: &Path, limit: Duration) -> anyhow::Result<()> {
    let mut child = Command::new("stat")
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("spawn stat(1)")?;
    let result = wait_bounded(&mut child, limit)?;
    let _ = child.kill();
    let reaped = wait_bounded(&mut child, Duration::from_secs(5))?;
    ensure!(
        result.is_none(),
        "stat(1) on the frozen mount returned ({result:?}) instead of hanging: the mount is not dead"
    );
    ensure!(reaped.is_some(), "stat(1) could not be killed within 5 s");
    Ok(())
}

/// `probe/dead_fuse_mount`: the whole proof (see the module docs).
pub fn dead_fuse_mount(ctx: &Ctx<'_>) -> ScenarioResult {
    let bin = sparsekit()?;
    let bin = bin.to_str().context("binary path")?;
    let fuse = FuseMount::start(&ctx.path("fuse"), TTL)?;
    let file_path = fuse.file();
    let file_str = file_path.to_str().context("path")?.to_owned();

    // Healthy: data reads back, stat(1) and sparsekit answer.
    let file = std::fs::File::open(&file_path)?;
    let mut buf = vec![0u8; 4096];
    file.read_exact_at(&mut buf, 1 << 20)?;
    ensure!(
        buf.iter()
            .enumerate()
            .all(|(i, b)| *b == pattern((1 << 20) + i as u64)),
        "FUSE file content is wrong"
    );
    let (status, out, err, _) = run_bounded(
        &[bin, "stat", "--timeout", "1s", "--json", &file_str],
        Duration::from_secs(10),
    )?;
    ensure!(
        status.success(),
        "healthy sparsekit stat failed: {status} {err}"
    );
    let v: serde_json::Value = serde_json::from_str(&out).context("stat --json output")?;
    ensure!(
        v["fields"]["size"] == FILE_SIZE,
        "healthy size, want {FILE_SIZE}: {out}"
    );
    // Fill the attribute cache of the open file, then freeze.
    let warm = ProbeOptions::new().fields(Fields::BASIC).probe_fd(&file)?;
    ensure!(warm.size() == Some(FILE_SIZE));

    fuse.freeze()?;
    ensure!(proc_state(fuse.pid()) == Some('T'), "daemon not stopped");
    // Let the entry and attribute caches expire, so every synced request
    // must reach the (frozen) daemon.
    std::thread::sleep(TTL * 2);

    // 1. stat(1) hangs.
    assert_stat1_hangs(&file_path, Duration::from_millis(1500))?;

    // 2. sparsekit stat --timeout 1s: exit 3 within 1.5 s, naming path and time.
    let (status, _, err, elapsed) = run_bounded(
        &[bin, "stat", "--timeout", "1s", &file_str],
        Duration::from_secs(10),
    )?;
    ensure!(
        status.code() == Some(3),
        "sparsekit stat --timeout 1s exited {status}, want 3: {err}"
    );
    // 0.5 s for starting and ending the process (stretched under TCG).
    let bound = Duration::from_secs(1) + wall_budget(Duration::from_millis(500));
    ensure!(elapsed < bound, "took {elapsed:?}, more than {bound:?}");
    ensure!(
        elapsed >= Duration::from_secs(1),
        "returned after {elapsed:?}, before the timeout"
    );
    ensure!(
        err.contains(&file_str),
        "message does not name the path: {err}"
    );
    ensure!(
        err.contains("no answer after 1.0"),
        "message does not give the time waited: {err}"
    );
    println!(
        "    probe: frozen FUSE: stat(1) still hung after 1.5 s; sparsekit stat --timeout 1s exited 3 after {:.3} s: {}",
        elapsed.as_secs_f64(),
        err.trim()
    );

    // 3. The library: timed-out probes are counted as stuck, capped, and the
    //    next call fails fast saying why.
    let pool = WorkerPool::new(2);
    let timed = ProbeOptions::new()
        .timeout(Duration::from_millis(200))
        .pool(pool.clone());
    for i in 1..=2 {
        let start = Instant::now();
        match timed.probe_path(&file_path) {
            Err(ProbeError::TimedOut { after, .. }) => {
                ensure!(
                    start.elapsed()
                        < Duration::from_millis(200) + wall_budget(Duration::from_millis(300)),
                    "timed out only after {after:?}"
                )
            }
            other => bail!("probe {i} on the frozen mount: want TimedOut, got {other:?}"),
        }
        ensure!(
            pool.stuck() == i,
            "stuck count {} after {i} timeouts",
            pool.stuck()
        );
    }
    let start = Instant::now();
    match timed.probe_path(&file_path) {
        Err(e @ ProbeError::TooManyStuck { .. }) => {
            ensure!(
                start.elapsed() < wall_budget(Duration::from_millis(100)),
                "TooManyStuck was not fast"
            );
            let msg = e.to_string();
            ensure!(
                msg.contains("2 earlier timed-out probes") && msg.contains(&file_str),
                "{msg}"
            );
        }
        other => bail!("third probe: want TooManyStuck, got {other:?}"),
    }
    ensure!(
        pool.live_threads() == 2,
        "{} worker threads for a cap of 2",
        pool.live_threads()
    );

    // 4. --no-sync on the already open file answers from the cache, while a
    //    synced probe of the same fd hangs (so the cache really was stale).
    let fd_path = format!("/proc/{}/fd/{}", std::process::id(), file.as_raw_fd());
    let (status, out, err, elapsed) = run_bounded(
        &[
            bin,
            "stat",
            "--no-sync",
            "--timeout",
            "1s",
            "--fields",
            "basic",
            "--json",
            &fd_path,
        ],
        Duration::from_secs(10),
    )?;
    ensure!(
        status.success(),
        "stat --no-sync on the open file failed ({status}): {err}"
    );
    ensure!(
        elapsed < wall_budget(Duration::from_secs(1)),
        "--no-sync took {elapsed:?}"
    );
    let v: serde_json::Value = serde_json::from_str(&out).context("stat --json output")?;
    ensure!(
        v["fields"]["size"] == FILE_SIZE,
        "cached size, want {FILE_SIZE}: {out}"
    );
    ensure!(
        v["sync"] == "dont-sync" && v["strategy"] == "statx",
        "{out}"
    );
    let own_pool = WorkerPool::new(1);
    let cached = ProbeOptions::new()
        .sync(SyncMode::DontSync)
        .timeout(Duration::from_millis(500))
        .pool(own_pool.clone())
        .probe_fd(&file)?;
    ensure!(cached.size() == Some(FILE_SIZE));
    match ProbeOptions::new()
        .timeout(Duration::from_millis(200))
        .pool(own_pool.clone())
        .probe_fd(&file)
    {
        Err(ProbeError::TimedOut { .. }) => {}
        other => bail!("a synced probe of the open file should hang while frozen: {other:?}"),
    }

    // 5. Thaw: the stuck workers come back, and everything answers again.
    fuse.thaw()?;
    wait_for("stuck workers to return", Duration::from_secs(5), || {
        pool.stuck() == 0 && own_pool.stuck() == 0
    })?;
    let (status, _, err, _) = run_bounded(&["stat", &file_str], Duration::from_secs(5))?;
    ensure!(status.success(), "stat(1) after thaw: {status} {err}");
    ensure!(timed.probe_path(&file_path)?.size() == Some(FILE_SIZE));

    drop(file);
    let mnt = fuse.mountpoint().to_owned();
    let pid = fuse.pid();
    fuse.teardown()?;
    ensure!(!is_mounted(&mnt), "{} still mounted", mnt.display());
    ensure!(
        proc_state(pid).is_none_or(|s| s == 'Z'),
        "daemon {pid} still exists"
    );
    Ok(Verdict::Pass)
}

/// `probe/dead_fuse_mount_cleanup_on_panic`: a scenario that panics with the
/// daemon frozen and a probe stuck still leaves nothing mounted or stopped.
pub fn cleanup_on_panic(ctx: &Ctx<'_>) -> ScenarioResult {
    let mnt = ctx.path("fuse-panic");
    let pid = std::sync::Mutex::new(0u32);
    let result = std::thread::scope(|s| {
        s.spawn(|| {
            let fuse = FuseMount::start(&mnt, TTL).expect("start FUSE");
            *pid.lock().unwrap() = fuse.pid();
            fuse.freeze().expect("freeze");
            std::thread::sleep(TTL * 2);
            let timed = ProbeOptions::new()
                .timeout(Duration::from_millis(100))
                .pool(WorkerPool::new(1));
            assert!(timed.probe_path(fuse.file()).is_err());
            // Unwinds exactly like a panic (the guard's Drop runs), without
            // the panic hook printing a backtrace into the bench's output.
            std::panic::resume_unwind(Box::new(
                "deliberate panic with the FUSE daemon frozen (cleanup test)",
            ));
        })
        .join()
    });
    ensure!(result.is_err(), "the thread was meant to panic");
    let pid = *pid.lock().unwrap();
    ensure!(pid != 0, "the FUSE daemon never started");
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
