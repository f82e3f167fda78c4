//! `--timeout DURATION`: one watchdog for every command that reads a file.
//!
//! A thread watches for progress: explicit ticks (one per extent in `map`,
//! per progress report in `copy`) and, for the calls that give none (dig,
//! an emulated collapse, a write-zeros punch), the process's own I/O
//! counters in `/proc/self/io` (bytes read and written by any thread) and
//! the page cache of the file being worked on (`cachestat(2)`: pages
//! arriving inside one long read, which `/proc/self/io` only counts when
//! the whole read returns). A slow but live mount keeps moving them, so it
//! never times out; a stall with no progress for the whole timeout exits 3.
//!
//! On a stall the watchdog first asks the command to stop by itself (a
//! copy's interrupt flag, so it cleans up as after Ctrl-C) and gives it a
//! short grace; a command stuck inside a system call (a frozen FUSE or NFS
//! mount) cannot hear that, so the watchdog then runs the command's
//! cleanup on a helper thread — bounded too, since unlinking on a frozen
//! mount can hang itself — names whatever it could not remove, and ends
//! the process with exit 3.

use crate::exit::{TIMEOUT, WithExitCode};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `--timeout DURATION`, flattened into every command that reads a file.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct TimeoutArg {
    /// Give up when no progress is made for this long (e.g. 10s, 500ms,
    /// 2m; a bare number is seconds) and exit 3. Progress is any data read
    /// or written, so a slow but live mount never times out.
    #[arg(long, value_name = "DURATION", value_parser = crate::cmd::stat::parse_duration)]
    pub(crate) timeout: Option<Duration>,
}

/// How long a command asked to stop gets before the watchdog exits for it.
const GRACE: Duration = Duration::from_secs(1);
/// How long cleanup (unlinking a staged file) may take before the watchdog
/// gives up on it and names the leftover.
const CLEANUP_BOUND: Duration = Duration::from_secs(2);

/// Removes what a stopped command staged; returns a description of what is
/// left (`None` if nothing).
pub(crate) type Cleanup = Box<dyn FnOnce() -> Option<String> + Send>;

/// What to do when the watchdog fires, set by the command before it starts
/// the work.
#[derive(Default)]
pub(crate) struct OnStall {
    /// What the file is left like, e.g. "nothing was changed".
    pub(crate) note: String,
    /// Asks the command to stop by itself (and clean up as it does for a
    /// signal).
    pub(crate) soft_stop: Option<Box<dyn Fn() + Send>>,
    /// Runs if the command did not stop within the grace, with what may be
    /// left if it cannot finish in time either.
    pub(crate) cleanup: Option<(Cleanup, String)>,
}

/// The handle a command holds; without `--timeout` every method is a no-op.
#[derive(Clone, Default)]
pub(crate) struct Watchdog(Option<Arc<Shared>>);

struct Shared {
    timeout: Duration,
    what: String,
    start: Instant,
    /// Nanoseconds since `start` of the last sign of progress.
    last: AtomicU64,
    paused: AtomicUsize,
    expired: AtomicBool,
    /// `Some` while the command runs; taken by whichever of `finish` and
    /// the expiry comes first, so a command that finished is never killed.
    on_stall: Mutex<Option<OnStall>>,
    /// The files whose page cache shows progress (see [`Watchdog::watch_cache`]).
    cached: Mutex<Vec<std::fs::File>>,
}

/// While alive, a blocked write to stdout does not count as a stall.
pub(crate) struct Paused<'a>(Option<&'a Shared>);

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.0 {
            s.tick();
            s.paused.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Shared {
    fn tick(&self) {
        let now = self.start.elapsed().as_nanos() as u64;
        self.last.fetch_max(now, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        let last = Duration::from_nanos(self.last.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

impl Watchdog {
    /// Starts watching (`timeout: None`: does nothing). `what` names the
    /// file and the command, e.g. `"disk.img: map"`. Start it before
    /// opening the file: the open itself can hang on a dead mount.
    pub(crate) fn start(timeout: Option<std::time::Duration>, what: impl Into<String>) -> Self {
        let Some(timeout) = timeout else {
            return Watchdog(None);
        };
        let shared = Arc::new(Shared {
            timeout,
            what: what.into(),
            start: Instant::now(),
            last: AtomicU64::new(0),
            paused: AtomicUsize::new(0),
            expired: AtomicBool::new(false),
            on_stall: Mutex::new(Some(OnStall {
                note: "nothing was changed".into(),
                ..OnStall::default()
            })),
            cached: Mutex::new(Vec::new()),
        });
        let watched = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || watch(&watched))
            .expect("spawning the watchdog thread");
        Watchdog(Some(shared))
    }

    /// Says what a stall leaves and how to stop and clean up.
    pub(crate) fn on_stall(&self, on_stall: OnStall) {
        if let Some(s) = &self.0 {
            let mut slot = s.on_stall.lock().unwrap_or_else(|e| e.into_inner());
            if slot.is_some() {
                *slot = Some(on_stall);
            }
        }
    }

    /// Counts changes in `file`'s page cache (pages read in, dirtied,
    /// written back, evicted) as progress. `cachestat(2)` only looks at the
    /// cache, so it never blocks on a dead mount; where it is missing
    /// (before Linux 6.5) this adds nothing.
    pub(crate) fn watch_cache(&self, file: &std::fs::File) {
        if let (Some(s), Ok(dup)) = (&self.0, file.try_clone()) {
            s.cached.lock().unwrap_or_else(|e| e.into_inner()).push(dup);
        }
    }

    /// A sign of progress.
    pub(crate) fn tick(&self) {
        if let Some(s) = &self.0 {
            s.tick();
        }
    }

    /// A `Fn` that ticks, for progress callbacks.
    pub(crate) fn ticker(&self) -> impl Fn() + Send + Sync + 'static {
        let me = self.clone();
        move || me.tick()
    }

    /// Holds off the watchdog while the guard lives.
    pub(crate) fn pause(&self) -> Paused<'_> {
        if let Some(s) = &self.0 {
            s.paused.fetch_add(1, Ordering::SeqCst);
        }
        Paused(self.0.as_deref())
    }

    /// Whether the watchdog fired (the command was asked to stop).
    #[cfg(test)]
    pub(crate) fn expired(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|s| s.expired.load(Ordering::SeqCst))
    }

    /// The work is over (successfully or not): from now on the watchdog
    /// never fires. Returns false if it already had.
    pub(crate) fn finish(&self) -> bool {
        match &self.0 {
            Some(s) => {
                let mut slot = s.on_stall.lock().unwrap_or_else(|e| e.into_inner());
                slot.take().is_some() && !s.expired.load(Ordering::SeqCst)
            }
            None => true,
        }
    }

    /// The exit-3 error for a command that stopped itself after the
    /// watchdog asked it to; `left` says what it left.
    pub(crate) fn timeout_error(&self, left: &str) -> anyhow::Error {
        let (what, timeout) = self
            .0
            .as_ref()
            .map_or(("", Duration::ZERO), |s| (s.what.as_str(), s.timeout));
        WithExitCode(
            TIMEOUT,
            anyhow::anyhow!("{what}: no progress for {timeout:?} (--timeout), stopped; {left}"),
        )
        .into()
    }
}

fn watch(s: &Arc<Shared>) {
    let poll = (s.timeout / 10).clamp(Duration::from_millis(10), Duration::from_millis(250));
    let mut io = IoCounters::default();
    let mut cache = Vec::new();
    loop {
        std::thread::sleep(poll);
        // Only the watchdog holds the last reference: the command is gone.
        if Arc::strong_count(s) == 1 {
            return;
        }
        let cache_moved = {
            let files = s.cached.lock().unwrap_or_else(|e| e.into_inner());
            let now: Vec<_> = files.iter().map(cache_state).collect();
            let moved = cache.len() == now.len() && cache != now;
            cache = now;
            moved
        };
        if io.moved() || cache_moved || s.paused.load(Ordering::SeqCst) > 0 {
            s.tick();
        }
        if s.idle() < s.timeout {
            continue;
        }
        let mut slot = s.on_stall.lock().unwrap_or_else(|e| e.into_inner());
        let Some(on_stall) = slot.take() else {
            return; // finished
        };
        s.expired.store(true, Ordering::SeqCst);
        if let Some(stop) = &on_stall.soft_stop {
            // Let the command stop and report by itself (it sees `expired`);
            // `finish` must not block on us meanwhile.
            *slot = Some(OnStall {
                note: on_stall.note.clone(),
                ..OnStall::default()
            });
            drop(slot);
            stop();
            let asked = Instant::now();
            while asked.elapsed() < GRACE {
                std::thread::sleep(Duration::from_millis(10));
                let slot = s.on_stall.lock().unwrap_or_else(|e| e.into_inner());
                if slot.is_none() {
                    return; // it finished: its own error reports exit 3
                }
            }
            slot = s.on_stall.lock().unwrap_or_else(|e| e.into_inner());
            if slot.take().is_none() {
                return;
            }
        }
        // Stuck in a system call: end the process ourselves, holding the
        // slot so `finish` cannot race us.
        let left = on_stall
            .cleanup
            .and_then(|(cleanup, if_stuck)| bounded(cleanup, &if_stuck));
        let note = match left {
            Some(left) => format!("{}; {left}", on_stall.note),
            None => on_stall.note,
        };
        // One write(2) on fd 2 without taking std's stderr lock: the
        // command's own thread may hold it, blocked.
        let message = format!(
            "sparsekit: {}: no progress for {:?} (--timeout), gave up; {note}\n",
            s.what, s.timeout
        );
        let _ = rustix::io::write(std::io::stderr().as_fd(), message.as_bytes());
        std::process::exit(i32::from(TIMEOUT));
    }
}

/// A file's whole page cache state (`len` 0: to the end of the file);
/// `None` where cachestat is missing.
fn cache_state(file: &std::fs::File) -> Option<[u64; 5]> {
    let c = sparsekit_sys::pagecache::cachestat(file, 0, 0).ok()?;
    Some([
        c.nr_cache,
        c.nr_dirty,
        c.nr_writeback,
        c.nr_evicted,
        c.nr_recently_evicted,
    ])
}

/// Runs `cleanup` on a helper thread for at most [`CLEANUP_BOUND`].
fn bounded(cleanup: Cleanup, if_stuck: &str) -> Option<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("cleanup".into())
        .spawn(move || {
            let _ = tx.send(cleanup());
        });
    if spawned.is_err() {
        return Some("cleanup could not run".into());
    }
    rx.recv_timeout(CLEANUP_BOUND).unwrap_or_else(|_| {
        Some(format!(
            "cleanup did not finish within {CLEANUP_BOUND:?} (the mount is not answering): {if_stuck}"
        ))
    })
}

/// Bytes read and written by the whole process (`rchar` + `wchar` of
/// `/proc/self/io`), less what reading that file itself adds.
struct IoCounters {
    /// `/proc/self/io`; the tests watch `/proc/thread-self/io`, since the
    /// other tests of the process do I/O of their own.
    path: &'static str,
    last: Option<u64>,
    /// Bytes our own previous read of `/proc/self/io` added to `rchar`.
    own: u64,
}

impl Default for IoCounters {
    fn default() -> Self {
        IoCounters {
            path: "/proc/self/io",
            last: None,
            own: 0,
        }
    }
}

impl IoCounters {
    fn moved(&mut self) -> bool {
        let Some((now, own)) = read_proc_io(self.path) else {
            return false;
        };
        let moved = self.last.is_some_and(|last| now > last + self.own);
        self.last = Some(now);
        self.own = own;
        moved
    }
}

/// `(rchar + wchar, bytes this read returned)`; `None` where the kernel has
/// no task I/O accounting.
fn read_proc_io(path: &str) -> Option<(u64, u64)> {
    use std::io::Read;
    let mut buf = [0u8; 1024];
    // One read: seq_file gives the whole document at once, so the bytes it
    // adds to rchar are exactly `n`.
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut buf))
        .ok()?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
    };
    Some((field("rchar:")?.wrapping_add(field("wchar:")?), n as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn this_thread() -> IoCounters {
        IoCounters {
            path: "/proc/thread-self/io",
            ..IoCounters::default()
        }
    }

    #[test]
    fn own_reads_of_proc_io_are_not_progress() {
        let mut io = this_thread();
        assert!(!io.moved());
        for _ in 0..5 {
            assert!(!io.moved(), "reading /proc/self/io counted as progress");
        }
    }

    #[test]
    fn reading_a_file_is_progress() {
        let mut io = this_thread();
        io.moved();
        let f = tempfile::tempfile().unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"x", 0).unwrap();
        assert!(io.moved());
    }

    #[test]
    fn new_pages_in_the_cache_are_seen() {
        let f = tempfile::tempfile().unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(&[1; 1 << 16], 0).unwrap();
        let Some(before) = cache_state(&f) else {
            return; // no cachestat on this kernel: the watchdog adds nothing
        };
        assert_eq!(cache_state(&f), Some(before), "no change, no progress");
        f.write_all_at(&[1; 1 << 16], 1 << 20).unwrap();
        assert_ne!(cache_state(&f), Some(before));
    }

    #[test]
    fn without_a_timeout_nothing_runs() {
        let w = Watchdog::start(None, "x");
        w.tick();
        assert!(!w.expired());
        assert!(w.finish());
    }

    #[test]
    fn ticks_keep_it_alive_and_a_soft_stop_reports_expiry() {
        let w = Watchdog::start(Some(Duration::from_millis(300)), "f: op");
        let stopped = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stopped);
        w.on_stall(OnStall {
            note: "n".into(),
            soft_stop: Some(Box::new(move || flag.store(true, Ordering::SeqCst))),
            cleanup: None,
        });
        // Ticking every 50 ms for 1 s: far longer than the timeout, no stall.
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(50));
            w.tick();
        }
        assert!(!w.expired());
        // Then a stall: the soft stop is asked for.
        let t = Instant::now();
        while !stopped.load(Ordering::SeqCst) {
            assert!(t.elapsed() < Duration::from_secs(5), "never fired");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(w.expired());
        assert!(!w.finish(), "finish after expiry reports it");
        let e = w.timeout_error("nothing left");
        assert!(
            e.to_string().contains("f: op: no progress for 300ms"),
            "{e}"
        );
    }

    #[test]
    fn a_finished_command_is_never_fired_at() {
        let w = Watchdog::start(Some(Duration::from_millis(50)), "f");
        assert!(w.finish());
        std::thread::sleep(Duration::from_millis(200));
        assert!(!w.expired());
    }
}
