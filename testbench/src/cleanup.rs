//! Everything the bench creates is registered here until its guard undoes it,
//! so SIGINT/SIGTERM/SIGHUP can undo it too (a panic unwinds through the
//! guards' `Drop`; a signal would not).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Directory-name prefix of everything the bench makes (also what leak checks look for).
pub const PREFIX: &str = "sparsekit-testbench";

/// One more thing to undo, for fixtures that are more than a mount (an NFS
/// server: its daemons, its exports, its state directories).
#[derive(Debug, Clone)]
pub(crate) enum Undo {
    /// SIGTERM, then SIGKILL after 2 s, a daemon the bench started.
    Kill(u32),
    /// Run a command (`rpc.nfsd 0`), bounded by 10 s; its failure is reported.
    Run(Vec<String>),
    /// Unmount (as the mount point is).
    Unmount(PathBuf),
}

#[derive(Debug, Clone)]
struct Entry {
    id: u64,
    /// Undone first, newest first.
    undo: Vec<Undo>,
    mountpoint: Option<PathBuf>,
    loop_device: Option<PathBuf>,
    image: Option<PathBuf>,
    /// An nbd device and the qemu-nbd serving it (disconnected, then killed).
    nbd: Option<(PathBuf, u32)>,
    dir: PathBuf,
}

static REGISTRY: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn with_registry<R>(f: impl FnOnce(&mut Vec<Entry>) -> R) -> R {
    // A scenario panicking while holding the lock must not stop cleanup.
    let mut guard = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    f(&mut guard)
}

/// A registration handle: what one guard owns. Dropping it undoes what is
/// still registered, so an early return between creating a directory and
/// finishing a mount cannot leak either.
#[derive(Debug)]
pub(crate) struct Registration(u64);

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = self.cleanup();
    }
}

impl Registration {
    pub(crate) fn new(dir: &Path) -> Self {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        with_registry(|r| {
            r.push(Entry {
                id,
                undo: Vec::new(),
                mountpoint: None,
                loop_device: None,
                image: None,
                nbd: None,
                dir: dir.to_owned(),
            })
        });
        Registration(id)
    }

    fn update(&self, f: impl FnOnce(&mut Entry)) {
        with_registry(|r| {
            if let Some(e) = r.iter_mut().find(|e| e.id == self.0) {
                f(e)
            }
        });
    }

    pub(crate) fn set_mountpoint(&self, p: &Path) {
        self.update(|e| e.mountpoint = Some(p.to_owned()));
    }

    /// Registers one more thing to undo; undone before the mount point,
    /// the loop device and the directory, the newest first.
    pub(crate) fn push_undo(&self, undo: Undo) {
        self.update(|e| e.undo.push(undo));
    }

    pub(crate) fn set_loop(&self, device: &Path, image: &Path) {
        self.update(|e| {
            e.loop_device = Some(device.to_owned());
            e.image = Some(image.to_owned());
        });
    }

    pub(crate) fn set_nbd(&self, device: &Path, server: u32) {
        self.update(|e| e.nbd = Some((device.to_owned(), server)));
    }

    /// Undoes everything registered (unmount, detach, remove), then forgets it.
    pub(crate) fn cleanup(&self) -> Vec<String> {
        let entry = with_registry(|r| {
            let i = r.iter().position(|e| e.id == self.0)?;
            Some(r.remove(i))
        });
        entry.map(|e| undo(&e)).unwrap_or_default()
    }
}

/// Undo one entry; returns the problems met (also printed).
fn undo(e: &Entry) -> Vec<String> {
    let mut problems = Vec::new();
    for u in e.undo.iter().rev() {
        if let Err(msg) = undo_one(u) {
            problems.push(msg);
        }
    }
    if let Some(mnt) = &e.mountpoint {
        if let Err(msg) = unmount(mnt) {
            problems.push(msg);
        }
    }
    if let Some((dev, server)) = &e.nbd {
        if let Err(msg) = crate::nbd::disconnect(dev, *server) {
            problems.push(msg);
        }
    }
    if let (Some(dev), Some(image)) = (&e.loop_device, &e.image) {
        if let Err(msg) = detach(dev, image) {
            problems.push(msg);
        }
    }
    if let Err(err) = std::fs::remove_dir_all(&e.dir) {
        if err.kind() != std::io::ErrorKind::NotFound {
            problems.push(format!("remove {}: {err}", e.dir.display()));
        }
    }
    for p in &problems {
        eprintln!("testbench cleanup: {p}");
    }
    problems
}

fn undo_one(u: &Undo) -> Result<(), String> {
    match u {
        Undo::Kill(pid) => kill_daemon(*pid),
        Undo::Unmount(p) => unmount(p),
        Undo::Run(argv) => run_bounded(argv, Duration::from_secs(10)),
    }
}

/// SIGTERM, up to 2 s for the process to go (or turn zombie: its parent
/// reaps it), then SIGKILL.
fn kill_daemon(pid: u32) -> Result<(), String> {
    use rustix::process::{Pid, Signal, kill_process};
    let Some(p) = Pid::from_raw(pid as i32) else {
        return Err(format!("bad pid {pid}"));
    };
    let gone = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')))
            .unwrap_or(true)
    };
    if gone() {
        return Ok(());
    }
    let _ = kill_process(p, Signal::TERM);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if gone() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = kill_process(p, Signal::KILL);
    Ok(())
}

/// Runs `argv`, killed after `limit`; an error says which and why.
pub(crate) fn run_bounded(argv: &[String], limit: Duration) -> Result<(), String> {
    let Some((prog, args)) = argv.split_first() else {
        return Ok(());
    };
    let shown = argv.join(" ");
    let mut child = std::process::Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("{shown}: {e}"))?;
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return Err(format!("{shown}: {st}: {}", err.trim()));
            }
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{shown}: still running after {limit:?}, killed"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("{shown}: {e}")),
        }
    }
}

/// umount2, retried while busy (a process may still be closing files), then
/// lazily detached as a last resort so the bench never leaves a mount.
pub(crate) fn unmount(mnt: &Path) -> Result<(), String> {
    use rustix::io::Errno;
    use rustix::mount::{UnmountFlags, unmount};
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match unmount(mnt, UnmountFlags::empty()) {
            Ok(()) => return Ok(()),
            Err(Errno::INVAL | Errno::NOENT) => return Ok(()), // not mounted (any more)
            Err(Errno::BUSY) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(e) => {
                return match unmount(mnt, UnmountFlags::DETACH) {
                    Ok(()) => Err(format!(
                        "{}: umount: {e}; detached lazily instead",
                        mnt.display()
                    )),
                    Err(e2) => Err(format!("{}: umount: {e}, lazy umount: {e2}", mnt.display())),
                };
            }
        }
    }
}

/// What `/sys/block/loopN/loop/backing_file` says the device is attached to.
pub(crate) fn backing_file(dev: &Path) -> Option<PathBuf> {
    let name = dev.file_name()?.to_str()?;
    let text = std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).ok()?;
    Some(PathBuf::from(text.trim_end()))
}

/// Waits for autoclear to detach the device from `image`; if it has not,
/// LOOP_CLR_FD, retried while udev or blkid still hold the device.
pub(crate) fn detach(dev: &Path, image: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match backing_file(dev) {
            Some(b) if b.to_string_lossy().starts_with(&*image.to_string_lossy()) => {}
            _ => return Ok(()), // detached, or already reused by someone else
        }
        match loopdev::LoopDevice::open(dev).and_then(|ld| ld.detach()) {
            // Done, or (while another fd is still open, e.g. in the signal
            // path) the kernel detaches it at the last close.
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NXIO.raw_os_error()) => {
                return Ok(());
            }
            Err(e) if Instant::now() > deadline => {
                return Err(format!(
                    "{}: still attached to {} ({e})",
                    dev.display(),
                    image.display(),
                ));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Process groups of the commands the benchmarks are timing: killed
/// first on a signal, since a tool with files open keeps its mount busy.
static RUNNING: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Held by the signal thread from the signal to the exit, so the main
/// thread, which sees its timed command die, waits instead of exiting
/// half-way through the cleanup.
static CLEANING: Mutex<()> = Mutex::new(());

/// A command being timed, in its own process group: killed with its
/// children if a signal comes while it runs.
#[derive(Debug)]
pub struct Running(i32);

impl Running {
    /// `pgid`: a child started with `process_group(0)` (its pid).
    pub fn new(pgid: u32) -> Self {
        let pgid = pgid as i32;
        RUNNING.lock().unwrap_or_else(|p| p.into_inner()).push(pgid);
        Running(pgid)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|&g| g != self.0);
    }
}

/// Before exiting: if a signal's cleanup is under way, wait for it (it
/// exits the process itself); otherwise the lock is free at once.
pub fn settle() {
    drop(CLEANING.lock());
}

/// Undo everything still registered (the signal path).
pub fn cleanup_all() {
    for pgid in RUNNING.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
        if let Some(group) = rustix::process::Pid::from_raw(pgid) {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
    }
    let entries = with_registry(std::mem::take);
    // Newest first: a mount on an image inside another entry's directory goes first.
    for e in entries.iter().rev() {
        undo(e);
    }
}

/// On SIGINT, SIGTERM or SIGHUP: clean up and exit with 128 + signal.
pub fn install_signal_handlers() -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new()
        .name("testbench-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let _cleaning = CLEANING.lock().unwrap_or_else(|p| p.into_inner());
                eprintln!("testbench: signal {sig}: unmounting and detaching everything");
                cleanup_all();
                std::process::exit(128 + sig);
            }
        })?;
    Ok(())
}

/// Mounts and loop devices of process `pid`'s bench still present (for leak checks).
pub fn leaks_of(pid: u32) -> Vec<String> {
    let marker = format!("{PREFIX}-{pid}-");
    let mut found = Vec::new();
    if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
        found.extend(
            mounts
                .lines()
                .filter(|l| l.contains(&marker))
                .map(|l| format!("mount: {l}")),
        );
    }
    if let Ok(dir) = std::fs::read_dir("/sys/block") {
        for ent in dir.flatten() {
            let dev = Path::new("/dev").join(ent.file_name());
            if let Some(b) = backing_file(&dev) {
                if b.to_string_lossy().contains(&marker) {
                    found.push(format!("loop: {} -> {}", dev.display(), b.display()));
                }
            }
        }
    }
    found.extend(crate::nbd::leaks(&marker));
    if let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) {
        found.extend(
            dir.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&marker))
                .map(|e| format!("dir: {}", e.path().display())),
        );
    }
    found
}
