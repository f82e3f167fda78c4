//! Tests of every path: real statx on tempfiles, and fake kernels that lack
//! statx, filter it like seccomp, or block like a dead mount.

use crate::exec::{Availability, StatxState, Syscalls, TargetRef};
use crate::{Fallback, Fields, ProbeError, ProbeOptions, Strategy, SyncMode, WorkerPool};
use rustix::fs::{AtFlags, Stat, Statx};
use rustix::io::Errno;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// A fake kernel. Each test leaks its own, so the cached availability and
/// counters of one test never leak into another.
#[derive(Debug)]
struct Fake {
    /// What statx returns, or `None` to pass through to the real kernel.
    statx_error: Option<Errno>,
    /// What the definitive probe says.
    probe: Availability,
    /// Block in statx/fstatat until [`Fake::open_gate`].
    blocks: bool,
    gate: Mutex<bool>,
    gate_cv: Condvar,
    statx_calls: AtomicUsize,
    fstatat_calls: AtomicUsize,
    probe_calls: AtomicUsize,
    /// Calls currently inside the fake (blocked or not).
    inside: AtomicUsize,
    state: StatxState,
}

impl Fake {
    fn new(statx_error: Option<Errno>, probe: Availability) -> &'static Fake {
        Fake::with(statx_error, probe, false)
    }

    /// A kernel whose calls hang like a dead FUSE mount until released.
    fn blocking() -> &'static Fake {
        Fake::with(None, Availability::Available, true)
    }

    fn with(statx_error: Option<Errno>, probe: Availability, blocks: bool) -> &'static Fake {
        Box::leak(Box::new(Fake {
            statx_error,
            probe,
            blocks,
            gate: Mutex::new(false),
            gate_cv: Condvar::new(),
            statx_calls: AtomicUsize::new(0),
            fstatat_calls: AtomicUsize::new(0),
            probe_calls: AtomicUsize::new(0),
            inside: AtomicUsize::new(0),
            state: StatxState::new(),
        }))
    }

    fn wait_gate(&self) {
        if !self.blocks {
            return;
        }
        let mut open = self.gate.lock().unwrap();
        while !*open {
            open = self.gate_cv.wait(open).unwrap();
        }
    }

    fn open_gate(&self) {
        *self.gate.lock().unwrap() = true;
        self.gate_cv.notify_all();
    }
}

impl Syscalls for Fake {
    fn statx(&self, target: TargetRef<'_>, flags: AtFlags, mask: Fields) -> Result<Statx, Errno> {
        self.statx_calls.fetch_add(1, Ordering::SeqCst);
        self.inside.fetch_add(1, Ordering::SeqCst);
        self.wait_gate();
        let r = match self.statx_error {
            Some(e) => Err(e),
            None => crate::exec::KERNEL.statx(target, flags, mask),
        };
        self.inside.fetch_sub(1, Ordering::SeqCst);
        r
    }

    fn fstatat(&self, target: TargetRef<'_>, flags: AtFlags) -> Result<Stat, Errno> {
        self.fstatat_calls.fetch_add(1, Ordering::SeqCst);
        self.inside.fetch_add(1, Ordering::SeqCst);
        self.wait_gate();
        let r = crate::exec::KERNEL.fstatat(target, flags);
        self.inside.fetch_sub(1, Ordering::SeqCst);
        r
    }

    fn definitive_probe(&self) -> Availability {
        self.probe_calls.fetch_add(1, Ordering::SeqCst);
        self.probe
    }

    fn state(&self) -> &StatxState {
        &self.state
    }
}

fn file_with(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(bytes).unwrap();
    f.flush().unwrap();
    f
}

// ---- real kernel ----

#[test]
fn statx_on_a_path_reports_what_the_kernel_filled() {
    let f = file_with(b"hello");
    let m = ProbeOptions::new()
        .fields(Fields::SIZE | Fields::BLOCKS | Fields::BTIME)
        .probe_path(f.path())
        .unwrap();
    assert_eq!(m.strategy(), Strategy::Statx);
    assert!(m.fallback().is_none());
    assert_eq!(m.size(), Some(5));
    assert!(m.filled().contains(Fields::SIZE | Fields::BLOCKS));
    // Never invented: each field is there exactly when its mask bit is.
    assert_eq!(m.btime().is_some(), m.filled().contains(Fields::BTIME));
    assert_eq!(
        m.dio_align().is_some(),
        m.filled().contains(Fields::DIOALIGN)
    );
    assert_eq!(m.raw_mask() & Fields::KNOWN.bits(), m.filled().bits());
    assert_eq!(m.missing(), m.requested() - m.filled());
    assert!(m.attributes().is_some());
    let st = std::fs::metadata(f.path()).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(m.blocks().unwrap(), st.blocks());
    assert_eq!(
        u64::from(m.dev().major),
        u64::from(rustix::fs::major(st.dev()))
    );
}

#[test]
fn statx_on_an_fd_matches_fstat() {
    let f = file_with(&[7u8; 10_000]);
    for sync in [SyncMode::AsStat, SyncMode::DontSync, SyncMode::ForceSync] {
        let m = ProbeOptions::new()
            .fields(Fields::BASIC)
            .sync(sync)
            .probe_fd(f.as_file())
            .unwrap();
        assert_eq!(m.sync(), sync);
        assert_eq!(m.size(), Some(10_000));
        let st = rustix::fs::fstat(f.as_file()).unwrap();
        assert_eq!(m.ino(), Some(st.st_ino));
        assert_eq!(m.mode(), Some(st.st_mode & 0o7777));
        assert_eq!(m.file_type(), Some(crate::FileType::Regular));
    }
}

#[test]
fn forced_fstatat_has_only_basic_fields_and_no_cache_control() {
    let f = file_with(b"abc");
    let probe = ProbeOptions::new()
        .fields(Fields::KNOWN)
        .sync(SyncMode::DontSync)
        .strategy(Strategy::Fstatat);
    for m in [
        probe.probe_path(f.path()).unwrap(),
        probe.probe_fd(f.as_file()).unwrap(),
    ] {
        assert_eq!(m.strategy(), Strategy::Fstatat);
        assert!(m.fallback().is_none(), "forced, not a fallback");
        assert_eq!(m.filled(), Fields::BASIC);
        assert_eq!(m.missing(), Fields::KNOWN - Fields::BASIC);
        assert_eq!(m.size(), Some(3));
        assert_eq!(m.btime(), None);
        assert_eq!(m.mount_id(), None);
        assert_eq!(m.attributes(), None);
        assert_eq!(m.sync(), SyncMode::AsStat);
        assert!(m.blksize() > 0);
    }
}

#[test]
fn missing_file_names_path_op_and_errno() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent");
    for timeout in [None, Some(Duration::from_secs(5))] {
        let err = ProbeOptions::new()
            .timeout(timeout)
            .probe_path(&path)
            .unwrap_err();
        assert_eq!(err.errno(), Some(Errno::NOENT));
        assert_eq!(err.path(), path);
        let msg = err.to_string();
        assert!(msg.contains("absent: statx: ENOENT"), "{msg}");
    }
}

#[test]
fn a_path_with_a_nul_byte_is_einval() {
    use std::os::unix::ffi::OsStrExt;
    let p = std::path::Path::new(std::ffi::OsStr::from_bytes(b"a\0b"));
    let err = ProbeOptions::new().probe_path(p).unwrap_err();
    assert_eq!(err.errno(), Some(Errno::INVAL));
    let err = ProbeOptions::new()
        .timeout(Duration::from_secs(1))
        .probe_path(p)
        .unwrap_err();
    assert_eq!(err.errno(), Some(Errno::INVAL));
}

#[test]
fn symlinks_are_followed_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("t");
    std::fs::write(&target, b"12345678").unwrap();
    let link = dir.path().join("l");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let followed = ProbeOptions::new().probe_path(&link).unwrap();
    assert_eq!(followed.file_type(), Some(crate::FileType::Regular));
    for strategy in [Strategy::Statx, Strategy::Fstatat] {
        let own = ProbeOptions::new()
            .strategy(strategy)
            .follow_symlinks(false)
            .probe_path(&link)
            .unwrap();
        assert_eq!(own.file_type(), Some(crate::FileType::Symlink));
    }
}

#[test]
fn timed_probe_of_a_healthy_file_reuses_one_worker() {
    let pool = WorkerPool::new(2);
    let f = file_with(b"xy");
    let probe = ProbeOptions::new()
        .timeout(Duration::from_secs(5))
        .pool(pool.clone());
    for _ in 0..200 {
        assert_eq!(probe.probe_fd(f.as_file()).unwrap().size(), Some(2));
        assert_eq!(probe.probe_path(f.path()).unwrap().size(), Some(2));
    }
    assert_eq!(pool.live_threads(), 1, "one caller needs one worker");
    assert_eq!(pool.idle_workers(), 1);
    assert_eq!(pool.stuck(), 0);
}

#[test]
fn fd_errors_are_named_by_their_proc_link() {
    // A directory opened O_PATH can be probed; a closed fd cannot.
    let f = file_with(b"");
    let m = ProbeOptions::new().probe_fd(f.as_file()).unwrap();
    assert_eq!(m.size(), Some(0));
    let name = crate::options::fd_name_for_test(f.as_file());
    assert_eq!(name, f.path());
}

// ---- fallback: statx missing or filtered ----

#[test]
fn enosys_confirmed_by_the_probe_falls_back_to_fstatat_and_says_why() {
    let fake = Fake::new(Some(Errno::NOSYS), Availability::Unavailable(Errno::NOSYS));
    let f = file_with(b"12345");
    let probe = ProbeOptions::new()
        .fields(Fields::SIZE | Fields::BTIME)
        .sync(SyncMode::DontSync)
        .syscalls(fake);
    let m = probe.probe_path(f.path()).unwrap();
    assert_eq!(m.strategy(), Strategy::Fstatat);
    let why = *m.statx_unavailable().expect("a fallback must be reported");
    assert_eq!(
        m.fallback(),
        Some(Fallback::new(Strategy::Statx, Errno::NOSYS))
    );
    assert_eq!(why.statx_errno, Some(Errno::NOSYS));
    assert_eq!(why.probe_errno, Errno::NOSYS);
    assert!(why.to_string().contains("ENOSYS"), "{why}");
    assert_eq!(m.size(), Some(5));
    assert_eq!(
        m.btime(),
        None,
        "fstatat has no btime: it must not be invented"
    );
    assert_eq!(m.missing(), Fields::BTIME);
    assert_eq!(
        m.sync(),
        SyncMode::AsStat,
        "the fallback cannot honour dont-sync"
    );

    // The verdict is cached: no more statx, no more probes.
    let m = probe.probe_fd(f.as_file()).unwrap();
    assert_eq!(m.statx_unavailable().unwrap().statx_errno, None);
    assert_eq!(fake.statx_calls.load(Ordering::SeqCst), 1);
    assert_eq!(fake.probe_calls.load(Ordering::SeqCst), 1);
    assert_eq!(fake.fstatat_calls.load(Ordering::SeqCst), 2);
}

#[test]
fn seccomp_eperm_is_confirmed_before_falling_back() {
    let fake = Fake::new(Some(Errno::PERM), Availability::Unavailable(Errno::PERM));
    let f = file_with(b"1");
    let m = ProbeOptions::new()
        .syscalls(fake)
        .probe_path(f.path())
        .unwrap();
    assert_eq!(m.strategy(), Strategy::Fstatat);
    assert_eq!(m.statx_unavailable().unwrap().probe_errno, Errno::PERM);
    assert_eq!(fake.probe_calls.load(Ordering::SeqCst), 1);
}

#[test]
fn eperm_from_a_working_statx_is_a_real_error() {
    // A FUSE server answering EPERM: the probe shows statx works, so the
    // error is the file's and no fallback hides it.
    let fake = Fake::new(Some(Errno::PERM), Availability::Available);
    let f = file_with(b"1");
    let probe = ProbeOptions::new().syscalls(fake);
    let err = probe.probe_path(f.path()).unwrap_err();
    assert_eq!(err.errno(), Some(Errno::PERM));
    assert!(err.to_string().contains("statx: EPERM"), "{err}");
    assert_eq!(fake.fstatat_calls.load(Ordering::SeqCst), 0);
    // Known available now: the next EPERM is trusted without a probe.
    probe.probe_path(f.path()).unwrap_err();
    assert_eq!(fake.probe_calls.load(Ordering::SeqCst), 1);
}

#[test]
fn an_undecided_probe_reports_the_error_and_decides_later() {
    let fake = Fake::new(Some(Errno::NOSYS), Availability::Undecided);
    let f = file_with(b"1");
    let probe = ProbeOptions::new().syscalls(fake);
    assert_eq!(
        probe.probe_path(f.path()).unwrap_err().errno(),
        Some(Errno::NOSYS)
    );
    assert_eq!(
        probe.probe_path(f.path()).unwrap_err().errno(),
        Some(Errno::NOSYS)
    );
    assert_eq!(fake.probe_calls.load(Ordering::SeqCst), 2, "not cached");
}

#[test]
fn ordinary_errors_do_not_trigger_the_probe() {
    let fake = Fake::new(Some(Errno::NOENT), Availability::Unavailable(Errno::NOSYS));
    let err = ProbeOptions::new()
        .syscalls(fake)
        .probe_path("/x")
        .unwrap_err();
    assert_eq!(err.errno(), Some(Errno::NOENT));
    assert_eq!(fake.probe_calls.load(Ordering::SeqCst), 0);
}

#[test]
fn forced_statx_never_falls_back() {
    let fake = Fake::new(Some(Errno::NOSYS), Availability::Unavailable(Errno::NOSYS));
    let f = file_with(b"1");
    let err = ProbeOptions::new()
        .strategy(Strategy::Statx)
        .syscalls(fake)
        .probe_path(f.path())
        .unwrap_err();
    assert_eq!(err.errno(), Some(Errno::NOSYS));
    assert_eq!(fake.fstatat_calls.load(Ordering::SeqCst), 0);
}

#[test]
fn the_fallback_also_runs_under_a_timeout() {
    let fake = Fake::new(Some(Errno::NOSYS), Availability::Unavailable(Errno::NOSYS));
    let f = file_with(b"1234");
    let m = ProbeOptions::new()
        .syscalls(fake)
        .timeout(Duration::from_secs(5))
        .pool(WorkerPool::new(1))
        .probe_fd(f.as_file())
        .unwrap();
    assert_eq!(m.strategy(), Strategy::Fstatat);
    assert_eq!(m.size(), Some(4));
}

// ---- timeout mode on a kernel that blocks ----

/// Generous for a loaded CI machine, yet far below any real hang.
const MARGIN: Duration = Duration::from_millis(250);

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_blocking_call_times_out_within_the_margin() {
    let fake = Fake::blocking();
    let pool = WorkerPool::new(4);
    let f = file_with(b"1");
    let timeout = Duration::from_millis(200);
    let probe = ProbeOptions::new()
        .syscalls(fake)
        .timeout(timeout)
        .pool(pool.clone());
    let start = Instant::now();
    let err = probe.probe_path(f.path()).unwrap_err();
    let took = start.elapsed();
    let ProbeError::TimedOut {
        path,
        after,
        timeout: t,
    } = &err
    else {
        panic!("expected TimedOut, got {err}");
    };
    assert_eq!(path, f.path());
    assert_eq!(*t, timeout);
    assert!(*after >= timeout, "returned early: {after:?}");
    assert!(took < timeout + MARGIN, "took {took:?}");
    assert!(err.is_timeout());
    let msg = err.to_string();
    assert!(
        msg.contains(&f.path().display().to_string()) && msg.contains("0.2"),
        "{msg}"
    );
    assert_eq!(pool.stuck(), 1);
    assert_eq!(pool.stuck_probes()[0].path(), f.path());

    // The kernel answers at last: the worker comes back, unstuck and reusable.
    fake.open_gate();
    wait_until("the worker to come back", || {
        pool.stuck() == 0 && pool.idle_workers() == 1
    });
    let m = probe.probe_path(f.path()).unwrap();
    assert_eq!(m.size(), Some(1));
    assert_eq!(pool.live_threads(), 1);
}

#[test]
fn stuck_workers_are_capped_and_later_calls_fail_fast_saying_why() {
    let fake = Fake::blocking();
    let pool = WorkerPool::new(3);
    let f = file_with(b"1");
    let probe = ProbeOptions::new()
        .syscalls(fake)
        .timeout(Duration::from_millis(300))
        .pool(pool.clone());
    for i in 1..=3 {
        let err = probe.probe_fd(f.as_file()).unwrap_err();
        assert!(matches!(err, ProbeError::TimedOut { .. }), "{err}");
        assert_eq!(pool.stuck(), i);
    }
    wait_until("three calls inside the dead kernel", || {
        fake.inside.load(Ordering::SeqCst) == 3
    });
    // Cap reached: many more calls, no new thread, each fails at once.
    let threads = pool.live_threads();
    assert_eq!(threads, 3);
    for _ in 0..50 {
        let start = Instant::now();
        let err = probe.probe_path(f.path()).unwrap_err();
        // Far below the 300 ms timeout: nothing was waited for.
        assert!(
            start.elapsed() < Duration::from_millis(100),
            "must fail fast"
        );
        let ProbeError::TooManyStuck {
            path,
            stuck,
            cap,
            oldest,
        } = &err
        else {
            panic!("expected TooManyStuck, got {err}");
        };
        assert_eq!((path.as_path(), *stuck, *cap), (f.path(), 3, 3));
        assert_eq!(
            oldest.as_ref().unwrap().path(),
            f.path(),
            "fd probes are named by their file"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("3 earlier timed-out probes are still stuck"),
            "{msg}"
        );
        assert!(msg.contains("cap 3"), "{msg}");
        assert!(err.is_timeout());
    }
    assert_eq!(pool.live_threads(), threads);
    assert_eq!(fake.statx_calls.load(Ordering::SeqCst), 3);

    fake.open_gate();
    wait_until("all workers back", || pool.stuck() == 0);
    assert!(probe.probe_path(f.path()).is_ok());
    // Idle workers beyond the limit exit, so threads never accumulate.
    wait_until("surplus idle workers", || pool.live_threads() <= 4);
}

#[test]
fn separate_pools_isolate_a_dead_mount() {
    let dead = Fake::blocking();
    let dead_pool = WorkerPool::new(1);
    let f = file_with(b"1");
    let dead_probe = ProbeOptions::new()
        .syscalls(dead)
        .timeout(Duration::from_millis(30))
        .pool(dead_pool.clone());
    assert!(matches!(
        dead_probe.probe_path(f.path()),
        Err(ProbeError::TimedOut { .. })
    ));
    assert!(matches!(
        dead_probe.probe_path(f.path()),
        Err(ProbeError::TooManyStuck { .. })
    ));
    // Another pool still works.
    let healthy = ProbeOptions::new()
        .timeout(Duration::from_secs(5))
        .pool(WorkerPool::new(1));
    assert!(healthy.probe_path(f.path()).is_ok());
    dead.open_gate();
    wait_until("dead pool recovers", || dead_pool.stuck() == 0);
}

#[test]
fn an_abandoned_fd_probe_keeps_its_own_descriptor() {
    // The caller closes its fd while the worker is stuck; the worker holds a
    // duplicate, so when the kernel answers it stats the right file.
    let fake = Fake::blocking();
    let pool = WorkerPool::new(2);
    let f = file_with(b"1");
    let file = std::fs::File::open(f.path()).unwrap();
    let probe = ProbeOptions::new()
        .syscalls(fake)
        .timeout(Duration::from_millis(30))
        .pool(pool.clone());
    let err = probe.probe_fd(&file).unwrap_err();
    assert!(matches!(err, ProbeError::TimedOut { .. }));
    assert_eq!(err.path(), f.path());
    drop(file);
    fake.open_gate();
    wait_until("worker back", || pool.stuck() == 0);
}

#[test]
fn many_threads_probing_a_dead_kernel_stay_bounded() {
    let fake = Fake::blocking();
    let pool = WorkerPool::new(2);
    let f = file_with(b"1");
    let probe = ProbeOptions::new()
        .syscalls(fake)
        .timeout(Duration::from_millis(20))
        .pool(pool.clone());
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..20 {
                    let err = probe.probe_path(f.path()).unwrap_err();
                    assert!(err.is_timeout(), "{err}");
                }
            });
        }
    });
    // At most the cap plus the callers racing past the check at once.
    assert!(
        pool.live_threads() <= 2 + 8,
        "{} threads",
        pool.live_threads()
    );
    assert!(pool.stuck() >= 2);
    fake.open_gate();
    wait_until("recovery", || pool.stuck() == 0);
}

#[test]
fn the_real_definitive_probe_finds_statx_here() {
    // Every kernel this project supports has statx (4.11+), and cargo test
    // does not run under a seccomp filter that hides it.
    assert_eq!(
        crate::exec::KERNEL.definitive_probe(),
        Availability::Available
    );
}

#[test]
fn a_huge_timeout_does_not_overflow() {
    let f = file_with(b"12");
    let m = ProbeOptions::new()
        .timeout(Duration::MAX)
        .pool(WorkerPool::new(1))
        .probe_path(f.path())
        .unwrap();
    assert_eq!(m.size(), Some(2));
}
