//! A child process in its own process group, killed with everything it
//! started when the guard drops: the launcher's stages (apt, dpkg,
//! virtme-run and the QEMU it starts) never outlive a timeout, an error or a
//! panic of xtask.

use anyhow::{Context, bail};
use rustix::process::{Pid, Signal, WaitOptions, kill_process_group, waitpgid};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

/// Process groups alive now. A group of its own does not get the
/// terminal's SIGINT, so xtask's handler passes it on (SIGKILL) before
/// exiting: Ctrl-C never leaves a VM running.
static LIVE: Mutex<Vec<i32>> = Mutex::new(Vec::new());

fn install_signal_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
            return;
        };
        std::thread::spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let live = LIVE.lock().unwrap_or_else(|e| e.into_inner()).clone();
                for pgid in live {
                    if let Some(pid) = Pid::from_raw(pgid) {
                        let _ = kill_process_group(pid, Signal::KILL);
                    }
                }
                eprintln!(
                    "xtask: signal {sig}: killed {} process group(s), exiting",
                    LIVE.lock().map_or(0, |l| l.len())
                );
                std::process::exit(128 + sig);
            }
        });
    });
}

/// A running process group (see the module doc).
pub(crate) struct Group {
    child: Child,
    pgid: Pid,
    shown: String,
}

impl Group {
    /// Starts `cmd` as the leader of a new process group, its stdout and
    /// stderr appended to `log`.
    pub(crate) fn spawn(mut cmd: Command, log: &Path) -> anyhow::Result<Group> {
        let shown = format!(
            "{} {}",
            cmd.get_program().to_string_lossy(),
            cmd.get_args()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
        // Orphans of the group (QEMU, once virtme-run is killed) are
        // reparented to us rather than to PID 1, so `kill` can reap them: a
        // PID 1 that never reaps would keep them as zombies.
        let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
        install_signal_handler();
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| log.display().to_string())?;
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot run {shown}"))?;
        let pgid = Pid::from_raw(i32::try_from(child.id())?).context("pid 0")?;
        LIVE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(pgid.as_raw_nonzero().get());
        Ok(Group { child, pgid, shown })
    }

    /// The command line, for messages.
    pub(crate) fn shown(&self) -> &str {
        &self.shown
    }

    /// The leader's exit status if it has exited.
    pub(crate) fn try_wait(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Waits until the leader exits or `limit` passes (then kills the group
    /// and fails).
    pub(crate) fn wait_for(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.kill();
                bail!("`{}` timed out after {} s", self.shown, limit.as_secs());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGKILL to the whole group, then reaps the leader and every orphan
    /// of the group. Idempotent.
    pub(crate) fn kill(&mut self) {
        // ESRCH (the group is gone) is the goal, not an error.
        let _ = kill_process_group(self.pgid, Signal::KILL);
        let _ = self.child.wait();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match waitpgid(self.pgid, WaitOptions::NOHANG) {
                // Reaped one; there may be more.
                Ok(Some(_)) => {}
                // Some still dying.
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                // ECHILD: none left.
                Err(_) => break,
            }
        }
        let raw = self.pgid.as_raw_nonzero().get();
        LIVE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| *p != raw);
    }

    /// Whether any process of the group is still alive (read from /proc).
    pub(crate) fn any_alive(&self) -> bool {
        members_of(self.pgid.as_raw_nonzero().get())
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `cmd` to completion within `limit`, output appended to `log`.
pub(crate) fn run_bounded(cmd: Command, log: &Path, limit: Duration) -> anyhow::Result<()> {
    let mut g = Group::spawn(cmd, log)?;
    let status = g.wait_for(limit)?;
    if !status.success() {
        bail!("`{}` failed ({status})", g.shown());
    }
    Ok(())
}

/// Whether a live (not zombie) process of group `pgid` exists.
pub(crate) fn members_of(pgid: i32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            return false;
        };
        // pid (comm) state ppid pgrp …; comm may hold spaces and parens.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_kills_the_whole_group_grandchildren_included() {
        let log = std::env::temp_dir().join(format!("xtask-group-test-{}.log", std::process::id()));
        let mut cmd = Command::new("sh");
        // A grandchild in the background, as QEMU is under virtme-run.
        cmd.args(["-c", "sleep 300 & sleep 300"]);
        let mut g = Group::spawn(cmd, &log).unwrap();
        let pgid = g.pgid.as_raw_nonzero().get();
        let started = Instant::now();
        let err = g.wait_for(Duration::from_millis(500)).unwrap_err();
        assert!(err.to_string().contains("timed out"), "{err:#}");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(!members_of(pgid), "a process of group {pgid} survived");
        drop(g);
        let _ = std::fs::remove_file(&log);
    }

    #[test]
    fn a_failing_command_is_an_error_and_its_output_is_logged() {
        let log = std::env::temp_dir().join(format!("xtask-group-fail-{}.log", std::process::id()));
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo from-the-child; exit 3"]);
        let err = run_bounded(cmd, &log, Duration::from_secs(30)).unwrap_err();
        assert!(format!("{err:#}").contains("exit status: 3"), "{err:#}");
        assert!(
            std::fs::read_to_string(&log)
                .unwrap()
                .contains("from-the-child")
        );
        let _ = std::fs::remove_file(&log);
    }
}
