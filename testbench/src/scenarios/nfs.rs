//! NFS outages: the server stopped (`rpc.nfsd 0`) or unreachable (every
//! packet on `lo` dropped), seen through a second client mounted soft or
//! hard with short timeouts (`timeo=10,retrans=1,actimeo=0`, so every call
//! goes to the server). For each, the CLI must stay bounded:
//! - `stat --force-sync --timeout T` returns within T + 0.5 s (exit 1 with
//!   the errno where the kernel gives up, 3 where it hangs);
//! - `map --timeout T` and `caps --timeout T` within T plus the watchdog's
//!   grace and clean-up bound (1 s + 2 s) plus 0.5 s;
//! - each bound plus what starting and ending the process costs on this
//!   machine, measured first on the live mount (the slower of two runs,
//!   doubled: under TCG on a loaded host it is 1–4 s);
//! - `copy` from and to the dying server without `--timeout` ends with an
//!   error naming the file (soft), or blocks (hard, and soft NFSv4.2 with
//!   the server unreachable) and is ended by SIGTERM: the first asks for
//!   a clean stop, which a process blocked in an NFS call cannot reach, so
//!   a second one `SECOND_SIGNAL` later ends it at once (the first put the
//!   signal back to its default action), within `SIGNAL_EXIT` — and no
//!   destination ever appears under its final name.
//!
//! After the outage the client must answer again. What each mount type
//! did becomes a cell of the matrix (`outage_stopped_soft`, …): `native`
//! when the kernel reported the outage as an error by itself, `degraded`
//! when it blocked and only `--timeout` or a signal bounded the tool.

use crate::defs::FsDef;
use crate::fixture::nfs::{NfsClient, Unreachable};
use crate::scenario::{Ctx, Scenario, ScenarioResult, Verdict};
use crate::skip;
use anyhow::{Context, bail, ensure};
use sparsekit_caps::Cell;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `--timeout` of the bounded commands: longer than a soft mount's ~2–3 s
/// to EIO (timeo=10, retrans=1) under a loaded TCG guest, so soft mounts
/// show their own error rather than racing the watchdog.
const TIMEOUT: Duration = Duration::from_secs(8);
/// What `stat --timeout` may add (the bound).
const STAT_MARGIN: Duration = Duration::from_millis(500);
/// The CLI watchdog's grace (1 s) and clean-up bound (2 s), plus 0.5 s.
const WATCHDOG_MARGIN: Duration = Duration::from_millis(3500);
/// How long a copy blocked on a hard mount gets after the first SIGTERM.
const SECOND_SIGNAL: Duration = Duration::from_secs(2);
/// How long the process may take to exit after the second SIGTERM (the
/// documented bound: it exits at once; 2 s leaves room for a loaded guest).
const SIGNAL_EXIT: Duration = Duration::from_secs(2);
/// A copy on a soft mount that has not failed by itself within this is
/// taken as blocked, and ended like one on a hard mount.
const SOFT_COPY_LIMIT: Duration = Duration::from_secs(30);
/// After the outage, the client must answer within this (NFSv4 recovery
/// and the server's 10 s grace period included).
const RECOVERY: Duration = Duration::from_secs(90);

/// The outage scenarios.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario::new("nfs/outage_stopped_soft", |c| {
            outage(c, Kind::Stopped, false)
        }),
        Scenario::new("nfs/outage_stopped_hard", |c| {
            outage(c, Kind::Stopped, true)
        }),
        Scenario::new("nfs/outage_unreachable_soft", |c| {
            outage(c, Kind::Unreachable, false)
        }),
        Scenario::new("nfs/outage_unreachable_hard", |c| {
            outage(c, Kind::Unreachable, true)
        }),
    ]
}

/// The matrix cell scenario `name` makes on `def`, if it makes one:
/// `nfs/outage_stopped_soft` makes `outage_stopped_soft` on NFS definitions.
pub fn cell_of(name: &str, def: &FsDef) -> Option<String> {
    def.nfs_version()?;
    let cell = name.strip_prefix("nfs/")?;
    cell.starts_with("outage_").then(|| cell.to_owned())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Stopped,
    Unreachable,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Stopped => "stopped",
            Kind::Unreachable => "unreachable",
        }
    }
}

/// The matrix cell of an outage: `outage_stopped_soft`, … (the scenario
/// that records it is `nfs/` and the same name, see [`cell_of`]).
fn cell_name(kind: Kind, hard: bool) -> String {
    format!(
        "outage_{}_{}",
        kind.name(),
        if hard { "hard" } else { "soft" }
    )
}

static CELLS: Mutex<Vec<(String, Cell)>> = Mutex::new(Vec::new());

/// The outage cells recorded on the running filesystem, emptied (the
/// runner adds them to its capability report).
pub fn take_cells() -> Vec<(String, Cell)> {
    std::mem::take(&mut *CELLS.lock().unwrap_or_else(|p| p.into_inner()))
}

/// How one command ended during the outage.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ended {
    /// Exited by itself with an error (the kernel gave up): exit code.
    Error(i32),
    /// Exit 3: the `--timeout` watchdog ended it.
    TimedOut,
    /// Still blocked; ended by SIGTERM (exit status shown).
    Signalled(String),
}

impl Ended {
    fn by_itself(&self) -> bool {
        matches!(self, Ended::Error(_))
    }
}

/// The matrix cell of one mount type from what its commands did.
fn outage_cell(what: &str, results: &[(&str, Ended)]) -> Cell {
    let how = format!(
        "{what}: stat --force-sync, map, caps with --timeout {}s; copy from and to the server \
         without --timeout (SIGTERM twice if blocked); each bounded",
        TIMEOUT.as_secs()
    );
    let detail = results
        .iter()
        .map(|(cmd, e)| {
            let e = match e {
                Ended::Error(code) => format!("error (exit {code})"),
                Ended::TimedOut => "--timeout (exit 3)".to_owned(),
                Ended::Signalled(st) => format!("blocked, SIGTERM ({st})"),
            };
            format!("{cmd}: {e}")
        })
        .collect::<Vec<_>>()
        .join("; ");
    let blocked: Vec<&str> = results
        .iter()
        .filter(|(_, e)| !e.by_itself())
        .map(|(c, _)| *c)
        .collect();
    let cell = if blocked.is_empty() {
        Cell::native(how)
    } else {
        Cell::degraded(
            format!(
                "the kernel blocks ({}): only --timeout (exit 3) or a second SIGINT/SIGTERM bounds the tool",
                blocked.join(", ")
            ),
            how,
        )
    };
    cell.with_detail(detail)
}

fn outage(ctx: &Ctx<'_>, kind: Kind, hard: bool) -> ScenarioResult {
    let Some(server) = ctx.fs().nfs_server() else {
        skip!("not an NFS mount");
    };
    let version = ctx.fs().def().nfs_version().unwrap_or("4.2").to_owned();
    let bin = crate::bench::measure::sparsekit_bin()?;
    // Files made through the bench's own mount, written back.
    let rel = ctx
        .dir()
        .strip_prefix(ctx.fs().mountpoint())
        .context("scratch dir outside the mount")?
        .to_owned();
    let image = sparse_image();
    std::fs::write(ctx.path("src.img"), &image)?;
    std::fs::File::open(ctx.path("src.img"))?.sync_all()?;
    let local = tempfile::tempdir().context("local tempdir")?;
    std::fs::write(local.path().join("src.img"), &image)?;
    let mode = if hard { "hard" } else { "soft" };
    let client = NfsClient::mount(
        server,
        &version,
        &format!("vers={version},{mode},timeo=10,retrans=1,actimeo=0"),
    )?;
    let via = client.mountpoint().join(&rel);
    let src = via.join("src.img");
    ensure!(
        std::fs::metadata(&src)?.len() == image.len() as u64,
        "the second client does not see {}",
        src.display()
    );
    // What starting and ending the CLI costs here, outside any wait of its
    // own (a TCG guest reads the binary over 9p): the same command on the
    // live mount, the slower of two, doubled: on a loaded 2-core host
    // running several TCG guests it varied between 1 and 4 s.
    let mut overhead = Duration::ZERO;
    for _ in 0..2 {
        let (st, _, err, took) = crate::scenarios::probe::deadmount::run_bounded(
            &[
                &bin.to_string_lossy(),
                "stat",
                "--force-sync",
                "--timeout",
                "8s",
                &src.to_string_lossy(),
            ],
            Duration::from_secs(60),
        )?;
        ensure!(st.success(), "stat before the outage: {st}: {}", err.trim());
        overhead = overhead.max(took);
    }
    let overhead = overhead * 2;
    let name = kind.name();
    let what = format!("NFS {version} {mode} mount, server {name}");

    let results = {
        // The outage guard drops before the client (declared after it), so
        // the client always unmounts from a live server.
        let _outage = match kind {
            Kind::Stopped => {
                server.stop()?;
                Outage::Stopped(server)
            }
            Kind::Unreachable => Outage::Unreachable(Unreachable::start()?),
        };
        during_outage(&bin, &src, &via, local.path(), hard, overhead)
    };
    let results = match results {
        Ok(r) => r,
        Err(failures) => bail!("{what}: {}", failures.join("; ")),
    };
    // Back: the client answers again. A soft mount may still fail a call
    // or two with EIO while its transport reconnects (seen on NFSv3 after
    // packets were dropped): asked again until RECOVERY is spent.
    let started = Instant::now();
    loop {
        let left = RECOVERY.saturating_sub(started.elapsed());
        let back = crate::scenarios::probe::deadmount::run_bounded(
            &[
                &bin.to_string_lossy(),
                "stat",
                "--force-sync",
                &src.to_string_lossy(),
            ],
            left,
        )
        .with_context(|| format!("{what}: no answer within {RECOVERY:?} after the outage ended"))?;
        if back.0.success() {
            break;
        }
        let recovering = !hard && back.2.contains("EIO") && left > Duration::from_secs(2);
        ensure!(
            recovering,
            "{what}: stat after the outage ({:.1} s after it ended): {} {}",
            started.elapsed().as_secs_f64(),
            back.0,
            back.2.trim()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    // No copy left anything under its final name, even now that the
    // server answers again.
    for dst in [local.path().join("from-nfs.img"), via.join("to-nfs.img")] {
        ensure!(
            !dst.exists(),
            "{what}: {} exists after a copy that failed",
            dst.display()
        );
    }
    println!(
        "    {what}: recovered in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    CELLS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((cell_name(kind, hard), outage_cell(&what, &results)));
    drop(client);
    Ok(Verdict::Pass)
}

/// Undoes an outage on drop: the server restarted, or the packet rule gone.
enum Outage<'a> {
    Stopped(&'a crate::fixture::nfs::NfsServer),
    Unreachable(#[allow(dead_code)] Unreachable),
}

impl Drop for Outage<'_> {
    fn drop(&mut self) {
        if let Outage::Stopped(server) = self {
            if let Err(e) = server.restart() {
                eprintln!("nfs outage: restarting the server: {e:#}");
            }
        }
    }
}

/// 4 MiB of data in a 16 MiB file (data, hole, data, hole).
fn sparse_image() -> Vec<u8> {
    let mut v = vec![0u8; 16 << 20];
    for (i, b) in v[..2 << 20].iter_mut().enumerate() {
        *b = (i % 251) as u8 + 1;
    }
    for (i, b) in v[8 << 20..10 << 20].iter_mut().enumerate() {
        *b = (i % 241) as u8 + 1;
    }
    v
}

/// Runs every command against the dead server; returns how each ended, or
/// every failure (all commands run either way).
fn during_outage(
    bin: &Path,
    src: &Path,
    via: &Path,
    local: &Path,
    hard: bool,
    overhead: Duration,
) -> Result<Vec<(&'static str, Ended)>, Vec<String>> {
    let mut failures = Vec::new();
    let bin_s = bin.to_string_lossy().into_owned();
    let t = format!("{}s", TIMEOUT.as_secs());
    let mut results = Vec::new();
    let bounded: [(&'static str, Vec<String>, Duration); 3] = [
        (
            "stat",
            vec![
                "stat".into(),
                "--force-sync".into(),
                "--timeout".into(),
                t.clone(),
            ],
            TIMEOUT + STAT_MARGIN,
        ),
        (
            "map",
            vec!["map".into(), "--timeout".into(), t.clone()],
            TIMEOUT + WATCHDOG_MARGIN,
        ),
        (
            "caps",
            vec!["caps".into(), "--timeout".into(), t.clone()],
            TIMEOUT + WATCHDOG_MARGIN,
        ),
    ];
    for (cmd, args, limit) in bounded {
        let target = if cmd == "caps" { via } else { src };
        let mut argv: Vec<String> = vec![bin_s.clone()];
        argv.extend(args);
        argv.push(target.to_string_lossy().into_owned());
        match bounded_command(&argv, limit, overhead) {
            Ok(ended) => results.push((cmd, ended)),
            Err(e) => failures.push(format!("{cmd}: {e:#}")),
        }
    }
    let copies = [
        (
            "copy from",
            src.to_owned(),
            local.join("from-nfs.img"),
            false,
        ),
        (
            "copy to",
            local.join("src.img"),
            via.join("to-nfs.img"),
            true,
        ),
    ];
    for (cmd, from, to, dst_on_nfs) in copies {
        match copy_during(&bin_s, &from, &to, hard, dst_on_nfs, cmd) {
            Ok(ended) => results.push((cmd, ended)),
            Err(e) => failures.push(format!("{cmd}: {e:#}")),
        }
    }
    if failures.is_empty() {
        Ok(results)
    } else {
        Err(failures)
    }
}

/// Runs a `--timeout` command: it must end within `limit` plus what
/// starting and ending the process costs here (`overhead`, measured on the
/// live mount) with exit 1 (an error, which must name the file) or 3.
fn bounded_command(argv: &[String], limit: Duration, overhead: Duration) -> anyhow::Result<Ended> {
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    // The hard bound is generous; the check below is the real one.
    let limit_hard = limit + overhead;
    let (status, _out, err, elapsed) = crate::scenarios::probe::deadmount::run_bounded(
        &refs,
        limit_hard + Duration::from_secs(30),
    )
    .with_context(|| format!("{argv:?} hung past its --timeout"))?;
    ensure!(
        elapsed <= limit + overhead,
        "{argv:?} took {elapsed:?}, more than {limit:?} + {overhead:?} (twice the start and exit \
         of the process on the live mount): {}",
        err.trim()
    );
    match status.code() {
        Some(3) => Ok(Ended::TimedOut),
        Some(1) => {
            let path = argv.last().unwrap();
            ensure!(
                err.contains(path.as_str()),
                "{argv:?}: the error does not name the path: {}",
                err.trim()
            );
            Ok(Ended::Error(1))
        }
        _ => bail!(
            "{argv:?} during the outage: {status} (want exit 1 or 3): {}",
            err.trim()
        ),
    }
}

/// A copy during the outage, without `--timeout`: on a soft mount it should
/// fail by itself naming the file; on a hard mount (or a soft one that has
/// not failed within `SOFT_COPY_LIMIT`) it may block, and then two
/// SIGTERMs end it (see the module docs). Either way `dst` must not
/// exist under its final name afterwards.
fn copy_during(
    bin: &str,
    src: &Path,
    dst: &Path,
    hard: bool,
    dst_on_nfs: bool,
    what: &str,
) -> anyhow::Result<Ended> {
    let mut child = Command::new(bin)
        .arg("copy")
        .arg(src)
        .arg(dst)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawn {bin} copy"))?;
    // A soft mount gives up by itself; a hard one gets a few seconds to
    // show it is blocked.
    let first_wait = if hard {
        Duration::from_secs(5)
    } else {
        SOFT_COPY_LIMIT
    };
    let ended = match wait(&mut child, first_wait)? {
        Some(st) => {
            let err = stderr_of(&mut child);
            ensure!(
                !st.success(),
                "{what} succeeded during the outage: the server was not cut off"
            );
            let named = [src, dst]
                .iter()
                .any(|p| err.contains(&*p.to_string_lossy()));
            ensure!(
                named,
                "{what}: the error names neither file: {}",
                err.trim()
            );
            Ended::Error(st.code().unwrap_or(-1))
        }
        // A soft mount that has not given up by now blocks like a hard one
        // (seen: NFSv4.2 with the server unreachable, where the client's
        // lease recovery waits past every soft timeout): the signals must
        // end it the same way, and the cell says the kernel blocked.
        None => {
            println!(
                "    {what}: still running after {first_wait:?}; its threads wait in: {}",
                thread_waits(&child)
            );
            signal(&child, rustix::process::Signal::TERM);
            let st = match wait(&mut child, SECOND_SIGNAL)? {
                Some(st) => st,
                None => {
                    let sent = Instant::now();
                    signal(&child, rustix::process::Signal::TERM);
                    match wait(&mut child, SIGNAL_EXIT)? {
                        Some(st) => st,
                        None => {
                            let blocked_in = kernel_stack(&child);
                            kill(&mut child);
                            bail!(
                                "{what}: still running {:?} after the second SIGTERM, in {blocked_in}",
                                sent.elapsed()
                            );
                        }
                    }
                }
            };
            ensure!(!st.success(), "{what}: a signalled copy exited 0");
            Ended::Signalled(st.to_string())
        }
    };
    // Only a local destination can be looked at now: on the dead mount the
    // look-up itself would block (hard) or fail (soft). Both are looked at
    // again once the server is back (see `outage`).
    if !dst_on_nfs {
        ensure!(
            !dst.exists(),
            "{what}: {} exists under its final name after the copy failed",
            dst.display()
        );
    }
    Ok(ended)
}

fn wait(child: &mut Child, limit: Duration) -> anyhow::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(Some(st));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal(child: &Child, sig: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// Where a process waits in the kernel (`/proc/PID/stack`, else its
/// `wchan`), for the failure message.
fn kernel_stack(child: &Child) -> String {
    let proc = format!("/proc/{}", child.id());
    std::fs::read_to_string(format!("{proc}/stack"))
        .or_else(|_| std::fs::read_to_string(format!("{proc}/wchan")))
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|e| format!("(unknown: {e})"))
}

/// Where each thread of `child` sleeps (`/proc/PID/task/*/wchan`): in the
/// NFS client, or in user space (`0`), e.g. writing into the page cache.
fn thread_waits(child: &Child) -> String {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", child.id())) else {
        return "(gone)".into();
    };
    let mut waits: Vec<String> = tasks
        .flatten()
        .map(|t| {
            std::fs::read_to_string(t.path().join("wchan")).unwrap_or_else(|e| format!("({e})"))
        })
        .collect();
    waits.sort();
    waits.join(", ")
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut s);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use sparsekit_caps::Support;

    fn def(fstype: &str, mount_options: &str) -> FsDef {
        FsDef {
            name: format!("{fstype}-test"),
            fstype: fstype.into(),
            mkfs: Vec::new(),
            package: None,
            mount_options: mount_options.into(),
            image_size: "512M".into(),
            device: None,
            nbd_options: Vec::new(),
            over: Some("xfs".into()),
            over_def: None,
        }
    }

    #[test]
    fn each_outage_scenario_names_the_cell_it_records() {
        let nfs = def("nfs", "vers=4.2");
        let names: Vec<&str> = scenarios().iter().map(|s| s.name).collect();
        for kind in [Kind::Stopped, Kind::Unreachable] {
            for hard in [false, true] {
                let cell = cell_name(kind, hard);
                let scenario = format!("nfs/{cell}");
                assert!(names.contains(&scenario.as_str()), "{scenario}");
                assert_eq!(cell_of(&scenario, &nfs), Some(cell));
            }
        }
        assert_eq!(cell_of("nfs/outage_stopped_soft", &def("xfs", "")), None);
        assert_eq!(cell_of("copy/auto", &nfs), None);
    }

    #[test]
    fn a_mount_that_errors_by_itself_is_native_one_that_blocks_is_degraded() {
        let soft = [("stat", Ended::Error(1)), ("copy from", Ended::Error(1))];
        let cell = outage_cell("soft", &soft);
        assert_eq!(cell.support, Support::Native);
        assert!(cell.detail.unwrap().contains("stat: error (exit 1)"));
        let hard = [
            ("stat", Ended::TimedOut),
            ("copy from", Ended::Signalled("signal: 15".into())),
            ("map", Ended::Error(1)),
        ];
        let cell = outage_cell("hard", &hard);
        assert_eq!(cell.support, Support::Degraded);
        let why = cell.reason.unwrap();
        assert!(why.contains("stat, copy from"), "{why}");
        assert!(!why.contains("map"), "{why}");
    }
}
