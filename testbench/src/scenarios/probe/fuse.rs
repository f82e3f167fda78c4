//! A tiny FUSE filesystem served by a child process that can be frozen
//! (SIGSTOP) and thawed: the standard way to get a "dead mount" without a
//! network.
//!
//! The child is this bench binary run as `probe-fuse-daemon MOUNTPOINT
//! TTL_MS`; it serves a root directory with one read-only file, [`FILE`],
//! of [`FILE_SIZE`] bytes of [`pattern`], with entry and attribute cache
//! times of `TTL_MS`. [`FuseMount`] starts it and undoes everything on
//! drop (also while unwinding from a panic): it thaws the daemon, unmounts,
//! and reaps it. The daemon dies with the bench (`PR_SET_PDEATHSIG`), and
//! the mount is in the cleanup registry, so a signal leaves nothing either.

use crate::cleanup::{self, Registration};
use anyhow::{Context, bail, ensure};
use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, Generation, INodeNo, LockOwner,
    MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, Request,
};
use rustix::process::{Pid, Signal};
use std::ffi::OsStr;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// The name of the one file.
pub const FILE: &str = "file";
/// Its size.
pub const FILE_SIZE: u64 = 3 * 1024 * 1024 + 17;
const FILE_INO: u64 = 2;

/// The byte at offset `i` of [`FILE`].
pub fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

struct PatternFs {
    ttl: Duration,
    started: SystemTime,
    /// Sleep before answering each read: a slow but live mount.
    read_delay: Duration,
}

impl PatternFs {
    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let (kind, perm, size, nlink) = match ino {
            1 => (FileType::Directory, 0o755, 0, 2),
            FILE_INO => (FileType::RegularFile, 0o444, FILE_SIZE, 1),
            _ => return None,
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            crtime: self.started,
            kind,
            perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }
}

impl Filesystem for PatternFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match (u64::from(parent), name.to_str()) {
            (1, Some(FILE)) => {
                let attr = self.attr(FILE_INO).expect("file attr");
                reply.entry(&self.ttl, &attr, Generation(0));
            }
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(u64::from(ino)) {
            Some(attr) => reply.attr(&self.ttl, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if u64::from(ino) != FILE_INO {
            return reply.error(Errno::EISDIR);
        }
        std::thread::sleep(self.read_delay);
        let end = FILE_SIZE.min(offset.saturating_add(u64::from(size)));
        let data: Vec<u8> = (offset.min(end)..end).map(pattern).collect();
        reply.data(&data);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if u64::from(ino) != 1 {
            return reply.error(Errno::ENOTDIR);
        }
        let entries = [
            (1, FileType::Directory, "."),
            (1, FileType::Directory, ".."),
            (FILE_INO, FileType::RegularFile, FILE),
        ];
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

/// The daemon side (`probe-fuse-daemon MOUNTPOINT TTL_MS [READ_DELAY_MS]`):
/// mounts, says `READY`, serves until unmounted.
pub fn daemon_main(args: &[String]) -> anyhow::Result<()> {
    let (mnt, ttl_ms, delay_ms) = match args {
        [mnt, ttl_ms] => (mnt, ttl_ms, "0"),
        [mnt, ttl_ms, delay_ms] => (mnt, ttl_ms, delay_ms.as_str()),
        _ => bail!("usage: probe-fuse-daemon MOUNTPOINT TTL_MS [READ_DELAY_MS]"),
    };
    // Never outlive the bench, even as a stopped process: SIGKILL ends a
    // stopped process too.
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
    let ttl = Duration::from_millis(ttl_ms.parse().context("TTL_MS")?);
    let fs = PatternFs {
        ttl,
        started: SystemTime::now(),
        read_delay: Duration::from_millis(delay_ms.parse().context("READ_DELAY_MS")?),
    };
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName("sparsekit-probe-fuse".to_owned()),
        MountOption::Subtype("sparsekit".to_owned()),
    ];
    config.n_threads = Some(2);
    let session = fuser::spawn_mount(fs, mnt, &config).context("mount the FUSE filesystem")?;
    println!("READY");
    std::io::Write::flush(&mut std::io::stdout())?;
    session.join().context("FUSE session")?;
    Ok(())
}

/// A mounted FUSE filesystem and its daemon process (this bench binary run
/// with a daemon subcommand); see the module docs. Also the guard of the
/// fault-injecting filesystem (`scenarios::faults::fs`), whose daemon takes
/// commands on its stdin ([`FuseMount::control`]).
#[derive(Debug)]
pub struct FuseMount {
    child: Option<Child>,
    mnt: PathBuf,
    reg: Option<Registration>,
    /// The daemon's stdin and stdout, for daemons that take commands.
    control: Option<(ChildStdin, BufReader<ChildStdout>)>,
}

/// Whether `mnt` is a mount point now (from /proc/self/mountinfo, which
/// never asks the filesystem, so it cannot hang on a dead mount).
pub fn is_mounted(mnt: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = mnt.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|p| p == want)
}

/// The state letter of `/proc/PID/stat` (`R`, `S`, `T` for stopped, …).
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces.
    stat.rsplit_once(") ")?.1.chars().next()
}

impl FuseMount {
    /// Creates `mnt` and mounts the pattern filesystem there, served by a new daemon.
    pub fn start(mnt: &Path, ttl: Duration) -> anyhow::Result<FuseMount> {
        Self::start_slow(mnt, ttl, Duration::ZERO)
    }

    /// Like [`start`](Self::start), with every read answered only after
    /// `read_delay`: a slow but live mount.
    pub fn start_slow(
        mnt: &Path,
        ttl: Duration,
        read_delay: Duration,
    ) -> anyhow::Result<FuseMount> {
        Self::spawn(
            mnt,
            &[
                "probe-fuse-daemon".into(),
                ttl.as_millis().to_string().into(),
                read_delay.as_millis().to_string().into(),
            ],
            false,
        )
    }

    /// Creates `mnt` and runs `bench-binary ARGS[0] MNT ARGS[1..]`, a daemon
    /// that mounts there and prints `READY`. With `control`, its stdin stays
    /// open for [`control`](Self::control) (closing it is the daemon's
    /// signal to stop injecting anything, sent first on teardown).
    pub fn spawn(mnt: &Path, args: &[OsString], control: bool) -> anyhow::Result<FuseMount> {
        std::fs::create_dir_all(mnt).with_context(|| format!("mkdir {}", mnt.display()))?;
        let exe = std::env::current_exe()?;
        let (sub, rest) = args.split_first().context("no daemon subcommand")?;
        let child = Command::new(exe)
            .arg(sub)
            .arg(mnt)
            .args(rest)
            .stdin(if control {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawn the FUSE daemon")?;
        let reg = Registration::new(mnt);
        let mut me = FuseMount {
            child: Some(child),
            mnt: mnt.to_owned(),
            reg: Some(reg),
            control: None,
        };
        let child = me.child.as_mut().expect("child");
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        stdout.read_line(&mut line)?;
        if let Some(stdin) = child.stdin.take() {
            me.control = Some((stdin, stdout));
        }
        if line.trim() != "READY" {
            let _ = child.kill();
            let out = child.wait_with_output_taken();
            bail!("the FUSE daemon did not mount {}: {out}", mnt.display());
        }
        if let Some(reg) = &me.reg {
            reg.set_mountpoint(mnt);
        }
        ensure!(
            is_mounted(mnt),
            "{} is not in mountinfo after READY",
            mnt.display()
        );
        Ok(me)
    }

    /// The mount point.
    pub fn mountpoint(&self) -> &Path {
        &self.mnt
    }

    /// The path of [`FILE`].
    pub fn file(&self) -> PathBuf {
        self.mnt.join(FILE)
    }

    /// Sends one command line to a daemon started with `control` and returns
    /// its answer (a line starting with `OK`; `ERR …` becomes an error).
    pub fn control(&mut self, command: &str) -> anyhow::Result<String> {
        let (stdin, stdout) = self
            .control
            .as_mut()
            .context("this FUSE daemon takes no commands")?;
        writeln!(stdin, "{command}").with_context(|| format!("send {command:?} to the daemon"))?;
        stdin.flush()?;
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let line = line.trim();
        match line.strip_prefix("OK") {
            Some(rest) => Ok(rest.trim().to_owned()),
            None => bail!("FUSE daemon: {command:?}: {line:?}"),
        }
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn signal(&self, sig: Signal) -> anyhow::Result<()> {
        let pid = Pid::from_raw(self.pid() as i32).context("no daemon")?;
        rustix::process::kill_process(pid, sig)
            .with_context(|| format!("kill({pid:?}, {sig:?})"))?;
        Ok(())
    }

    /// SIGSTOP, and waits until the kernel shows the daemon stopped.
    pub fn freeze(&self) -> anyhow::Result<()> {
        self.signal(Signal::STOP)?;
        wait_for("the daemon to stop", Duration::from_secs(5), || {
            proc_state(self.pid()) == Some('T')
        })
    }

    /// SIGCONT, and waits until the daemon runs again.
    pub fn thaw(&self) -> anyhow::Result<()> {
        self.signal(Signal::CONT)?;
        wait_for("the daemon to continue", Duration::from_secs(5), || {
            proc_state(self.pid()) != Some('T')
        })
    }

    /// Thaws, unmounts, and reaps the daemon; reports what went wrong.
    pub fn teardown(mut self) -> anyhow::Result<()> {
        self.teardown_inner()
    }

    fn teardown_inner(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let mut problems = Vec::new();
        // EOF on its stdin: a controlled daemon stops injecting and answers
        // every request it holds, so nothing is busy when we unmount.
        drop(self.control.take());
        if let Ok(pid) = i32::try_from(child.id()) {
            if let Some(pid) = Pid::from_raw(pid) {
                // Pending requests are answered, so unmounting is not busy.
                let _ = rustix::process::kill_process(pid, Signal::CONT);
            }
        }
        if let Some(reg) = self.reg.take() {
            // Unmounts (retrying while busy, lazily as a last resort) and
            // removes the mount point directory.
            problems.extend(reg.cleanup());
        } else if let Err(e) = cleanup::unmount(&self.mnt) {
            problems.push(e);
        }
        // Unmounting ends the session; the daemon exits by itself.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    problems.push(format!(
                        "FUSE daemon {} did not exit after unmount; killed",
                        child.id()
                    ));
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
        if is_mounted(&self.mnt) {
            problems.push(format!("{} is still mounted", self.mnt.display()));
        }
        ensure!(
            problems.is_empty(),
            "FUSE teardown: {}",
            problems.join("; ")
        );
        Ok(())
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        if let Err(e) = self.teardown_inner() {
            eprintln!("testbench: {e:#}");
        }
    }
}

trait TakenOutput {
    fn wait_with_output_taken(&mut self) -> String;
}

impl TakenOutput for Child {
    /// The daemon's stderr after it exited (its stdout was taken).
    fn wait_with_output_taken(&mut self) -> String {
        use std::io::Read;
        let _ = self.wait();
        let mut err = String::new();
        if let Some(mut e) = self.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        err.trim().to_owned()
    }
}

/// Polls `cond` every 10 ms for at most `limit`.
pub fn wait_for(what: &str, limit: Duration, cond: impl Fn() -> bool) -> anyhow::Result<()> {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > limit {
            bail!("gave up after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}
