//! Timeout mode: the probe runs on a worker thread the caller can abandon.
//!
//! A call into a dead NFS or FUSE mount cannot be cancelled: the thread
//! making it is stuck until the server answers (or the mount is aborted).
//! So the caller hands the call to a worker and waits at most the timeout.
//! A worker whose call does not return in time is *abandoned*: it counts as
//! stuck, and when the kernel finally returns it discards the answer and
//! goes back to the idle list. While as many workers as the pool's cap are
//! stuck, new timed probes fail at once instead of starting more threads,
//! so a mount that stays dead costs at most `cap` threads.
//!
//! Workers are reused: a healthy timed probe costs two thread hand-offs,
//! not a thread creation.

use crate::Metadata;
use crate::error::{ProbeError, StuckProbe};
use crate::exec::{self, Failure, Request, Syscalls, TargetRef};
use rustix::fd::{AsFd, OwnedFd};
use std::ffi::CString;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

/// The cap of the [global](WorkerPool::global) pool.
pub const DEFAULT_MAX_STUCK: usize = 4;

/// Idle workers kept per pool; more exit after finishing their probe.
const MAX_IDLE: usize = 4;

/// An idle worker exits after this long without work.
const IDLE_EXIT: Duration = Duration::from_secs(10);

/// Worker stacks hold one probe's state: small is plenty.
const WORKER_STACK: usize = 64 * 1024;

/// How long each side of a hand-off spins before sleeping on the condvar.
/// A healthy statx takes well under a microsecond, and callers that probe
/// many files post the next job within a few: spinning this long saves two
/// futex wake-ups per probe (several microseconds) and costs at most this
/// much CPU when the other side is slow.
const SPIN: Duration = Duration::from_micros(20);

/// Spins until `flag` is set or [`SPIN`] has passed; true if it was set.
fn spin_until(flag: &AtomicBool) -> bool {
    let start = Instant::now();
    loop {
        // Few pauses between yields: measured on a busy 2-core machine, 4
        // gave the lowest p50 and p99 (64 cost 4 µs per probe, 1 cost 2 µs).
        for _ in 0..4 {
            if flag.load(Ordering::Acquire) {
                return true;
            }
            std::hint::spin_loop();
        }
        if start.elapsed() >= SPIN {
            return flag.load(Ordering::Acquire);
        }
        // The other side may be waiting for this very CPU (two threads, one
        // free core): let it run rather than burn the rest of the window.
        // With a free core, sched_yield returns at once.
        std::thread::yield_now();
    }
}

/// The worker threads that run timed probes, and the count of those stuck
/// in the kernel.
///
/// [`ProbeOptions`](crate::ProbeOptions) uses [`WorkerPool::global`] unless
/// given another pool. A program that watches several mounts can give each
/// its own pool, so one dead mount using up its cap does not stop probes of
/// the others. Clones share the same pool.
#[derive(Clone)]
pub struct WorkerPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    max_stuck: usize,
    idle: Mutex<Vec<Arc<Worker>>>,
    stuck: Mutex<Vec<(u64, StuckProbe)>>,
    next_id: AtomicU64,
    live: Arc<AtomicUsize>,
}

static GLOBAL: LazyLock<WorkerPool> = LazyLock::new(|| WorkerPool::new(DEFAULT_MAX_STUCK));

impl WorkerPool {
    /// A new pool that lets at most `max_stuck` timed-out probes wait in the
    /// kernel at once (at least 1).
    pub fn new(max_stuck: usize) -> WorkerPool {
        WorkerPool {
            inner: Arc::new(PoolInner {
                max_stuck: max_stuck.max(1),
                idle: Mutex::new(Vec::new()),
                stuck: Mutex::new(Vec::new()),
                next_id: AtomicU64::new(0),
                live: Arc::new(AtomicUsize::new(0)),
            }),
        }
    }

    /// The process-wide pool, capped at [`DEFAULT_MAX_STUCK`].
    pub fn global() -> &'static WorkerPool {
        &GLOBAL
    }

    /// The cap on stuck workers.
    pub fn max_stuck(&self) -> usize {
        self.inner.max_stuck
    }

    /// Workers abandoned by a timed-out probe and still in the kernel.
    pub fn stuck(&self) -> usize {
        lock(&self.inner.stuck).len()
    }

    /// The stuck probes, oldest first.
    pub fn stuck_probes(&self) -> Vec<StuckProbe> {
        let mut v: Vec<StuckProbe> = lock(&self.inner.stuck)
            .iter()
            .map(|(_, p)| p.clone())
            .collect();
        v.sort_by_key(|p| p.since);
        v
    }

    /// Workers waiting for work.
    pub fn idle_workers(&self) -> usize {
        lock(&self.inner.idle).len()
    }

    /// Worker threads alive: idle, busy or stuck. Bounded by the idle
    /// limit, the stuck cap and the number of threads probing at once.
    pub fn live_threads(&self) -> usize {
        self.inner.live.load(Ordering::Relaxed)
    }

    /// Runs one probe on a worker, waiting at most `timeout`.
    pub(crate) fn run(
        &self,
        job: Job,
        timeout: Duration,
        name: &dyn Fn() -> PathBuf,
    ) -> Result<Metadata, ProbeError> {
        let start = Instant::now();
        let inner = &self.inner;
        {
            let stuck = lock(&inner.stuck);
            if stuck.len() >= inner.max_stuck {
                return Err(ProbeError::TooManyStuck {
                    path: name(),
                    stuck: stuck.len(),
                    cap: inner.max_stuck,
                    oldest: stuck
                        .iter()
                        .map(|(_, p)| p)
                        .min_by_key(|p| p.since)
                        .cloned(),
                });
            }
        }
        let worker = match lock(&inner.idle).pop() {
            Some(w) => w,
            None => self.spawn().map_err(|source| ProbeError::Spawn {
                path: name(),
                source,
            })?,
        };
        // A year is "forever" here, and cannot overflow an Instant.
        let deadline = start + timeout.min(Duration::from_secs(365 * 86_400));
        {
            let mut slot = lock(&worker.slot);
            *slot = Slot::Job(job);
            worker.done.store(false, Ordering::Relaxed);
            worker.posted.store(true, Ordering::Release);
            // A spinning worker needs no futex wake-up.
            if worker.worker_sleeps.load(Ordering::Relaxed) {
                worker.to_worker.notify_one();
            }
        }
        spin_until(&worker.done);
        let mut slot = lock(&worker.slot);
        loop {
            if matches!(*slot, Slot::Done(_)) {
                let Slot::Done(result) = std::mem::replace(&mut *slot, Slot::Idle) else {
                    unreachable!()
                };
                drop(slot);
                inner.release(worker);
                return result.map_err(|Failure { op, errno }| ProbeError::Io {
                    path: name(),
                    op,
                    errno,
                });
            }
            let now = Instant::now();
            if now >= deadline {
                let path = name();
                match std::mem::replace(&mut *slot, Slot::Abandoned) {
                    Slot::Job(job) => {
                        // The worker never got to run it (an overloaded
                        // machine): it is not stuck, only late.
                        *slot = Slot::Idle;
                        worker.posted.store(false, Ordering::Relaxed);
                        drop(slot);
                        drop(job);
                        inner.release(worker);
                    }
                    _ => {
                        // Registered under the slot lock, so the worker
                        // cannot finish and unregister before this.
                        lock(&inner.stuck).push((
                            worker.id,
                            StuckProbe {
                                path: path.clone(),
                                since: start,
                            },
                        ));
                        drop(slot);
                    }
                }
                return Err(ProbeError::TimedOut {
                    path,
                    after: now - start,
                    timeout,
                });
            }
            worker.caller_sleeps.store(true, Ordering::Relaxed);
            slot = worker
                .to_caller
                .wait_timeout(slot, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            worker.caller_sleeps.store(false, Ordering::Relaxed);
        }
    }

    fn spawn(&self) -> std::io::Result<Arc<Worker>> {
        let inner = &self.inner;
        let worker = Arc::new(Worker {
            id: inner.next_id.fetch_add(1, Ordering::Relaxed),
            slot: Mutex::new(Slot::Idle),
            posted: AtomicBool::new(false),
            done: AtomicBool::new(false),
            worker_sleeps: AtomicBool::new(false),
            caller_sleeps: AtomicBool::new(false),
            to_worker: Condvar::new(),
            to_caller: Condvar::new(),
        });
        let pool = Arc::downgrade(inner);
        let live = LiveGuard::new(Arc::clone(&inner.live));
        let w = Arc::clone(&worker);
        std::thread::Builder::new()
            .name("sparsekit-probe".to_owned())
            .stack_size(WORKER_STACK)
            .spawn(move || {
                let _live = live;
                worker_loop(&w, &pool);
            })?;
        Ok(worker)
    }
}

impl fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerPool")
            .field("max_stuck", &self.max_stuck())
            .field("stuck", &self.stuck_probes())
            .field("idle_workers", &self.idle_workers())
            .field("live_threads", &self.live_threads())
            .finish()
    }
}

impl PoolInner {
    /// Back to the idle list, or told to exit when the list is full.
    fn release(&self, worker: Arc<Worker>) {
        let mut idle = lock(&self.idle);
        if idle.len() < MAX_IDLE {
            idle.push(worker);
        } else {
            drop(idle);
            *lock(&worker.slot) = Slot::Exit;
            worker.to_worker.notify_one();
        }
    }

    fn unstick(&self, id: u64) {
        lock(&self.stuck).retain(|(w, _)| *w != id);
    }

    /// Takes an idle worker off the list so it can exit; false if a caller
    /// took it first (and is about to hand it a job).
    fn retire(&self, id: u64) -> bool {
        let mut idle = lock(&self.idle);
        match idle.iter().position(|w| w.id == id) {
            Some(i) => {
                idle.swap_remove(i);
                true
            }
            None => false,
        }
    }
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        for worker in lock(&self.idle).drain(..) {
            *lock(&worker.slot) = Slot::Exit;
            worker.to_worker.notify_one();
        }
    }
}

/// Counts a worker thread from spawn to exit (also if the spawn fails).
struct LiveGuard(Arc<AtomicUsize>);

impl LiveGuard {
    fn new(live: Arc<AtomicUsize>) -> Self {
        live.fetch_add(1, Ordering::Relaxed);
        LiveGuard(live)
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Worker {
    id: u64,
    slot: Mutex<Slot>,
    /// Set (after the slot) when a job is posted; lets the worker spin.
    posted: AtomicBool,
    /// Set (after the slot) when a result is ready; lets the caller spin.
    done: AtomicBool,
    /// The worker waits on `to_worker` (changed only under `slot`'s lock,
    /// so a wake-up can be skipped only when nobody sleeps).
    worker_sleeps: AtomicBool,
    /// The caller waits on `to_caller` (same rule).
    caller_sleeps: AtomicBool,
    to_worker: Condvar,
    to_caller: Condvar,
}

/// The hand-off between one caller and one worker.
enum Slot {
    Idle,
    Job(Job),
    Running,
    Abandoned,
    Done(Result<Metadata, Failure>),
    Exit,
}

/// A probe with everything it needs owned, so it can outlive its caller.
pub(crate) struct Job {
    pub(crate) target: OwnedTarget,
    pub(crate) req: Request,
    pub(crate) sys: &'static dyn Syscalls,
}

pub(crate) enum OwnedTarget {
    Path(CString),
    /// A duplicate of the caller's descriptor: the caller may close its own
    /// while the worker is stuck, and the number must not be reused under us.
    Fd(OwnedFd),
}

impl Job {
    fn execute(&self) -> Result<Metadata, Failure> {
        let target = match &self.target {
            OwnedTarget::Path(p) => TargetRef::Path(p),
            OwnedTarget::Fd(fd) => TargetRef::Fd(fd.as_fd()),
        };
        exec::execute(self.sys, target, &self.req)
    }
}

fn worker_loop(w: &Arc<Worker>, pool: &Weak<PoolInner>) {
    loop {
        spin_until(&w.posted);
        let job = {
            let mut slot = lock(&w.slot);
            loop {
                match std::mem::replace(&mut *slot, Slot::Running) {
                    Slot::Job(job) => {
                        w.posted.store(false, Ordering::Relaxed);
                        break job;
                    }
                    Slot::Exit => return,
                    other => {
                        *slot = other;
                        w.worker_sleeps.store(true, Ordering::Relaxed);
                        let (s, waited) = w
                            .to_worker
                            .wait_timeout(slot, IDLE_EXIT)
                            .unwrap_or_else(PoisonError::into_inner);
                        slot = s;
                        w.worker_sleeps.store(false, Ordering::Relaxed);
                        if waited.timed_out() && matches!(*slot, Slot::Idle) {
                            drop(slot);
                            match pool.upgrade() {
                                Some(p) if !p.retire(w.id) => {}
                                _ => return,
                            }
                            slot = lock(&w.slot);
                        }
                    }
                }
            }
        };
        let result = job.execute();
        drop(job);
        let mut slot = lock(&w.slot);
        if matches!(*slot, Slot::Abandoned) {
            *slot = Slot::Idle;
            drop(slot);
            let Some(p) = pool.upgrade() else { return };
            p.unstick(w.id);
            p.release(Arc::clone(w));
        } else {
            *slot = Slot::Done(result);
            w.done.store(true, Ordering::Release);
            let wake = w.caller_sleeps.load(Ordering::Relaxed);
            drop(slot);
            if wake {
                w.to_caller.notify_one();
            }
        }
    }
}

/// Locks, ignoring poisoning: the data under these locks stays consistent
/// at every await point, and a panic elsewhere must not stop probing.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
