//! Reader threads: each takes the next job from the shared planner, reads
//! it on the side(s) with data into its own two buffers and compares; the
//! calling thread puts the results back in file order and stops everyone
//! once the limit is reached, on the first error, or on an interrupt.

use super::diff::{Runs, diff};
use super::error::CompareError;
use super::plan::Planner;
use super::report::Which;
use crate::buffer::Buffer;
use crate::endpoint::Source;
use crate::error::CopyError;
use crate::interrupt::Interrupt;
use crate::threads::spawn_reader;
use rustix::io::Errno;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};

/// What the in-order results add up to.
#[derive(Debug)]
pub(crate) struct Found {
    pub(crate) runs: Runs,
    pub(crate) read_a: u64,
    pub(crate) read_b: u64,
    /// Of which read through the page cache (fragmented requests).
    pub(crate) buffered_a: u64,
    pub(crate) buffered_b: u64,
    /// End of the last job settled in order.
    pub(crate) settled: u64,
    /// The limit was reached: the rest was not compared.
    pub(crate) stopped_early: bool,
}

struct Done {
    seq: u64,
    runs: Vec<Range<u64>>,
    end: u64,
}

struct Shared {
    stop: AtomicBool,
    interrupted: AtomicBool,
    error: Mutex<Option<CompareError>>,
    read: [AtomicU64; 2],
    buffered: [AtomicU64; 2],
}

impl Shared {
    fn fail(&self, e: CompareError) {
        let mut slot = self.error.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(e);
        }
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Average bytes per data segment below which a request is read through
/// the page cache: `O_DIRECT` issues one device read per extent, while
/// buffered readahead merges what lies together on the device (measured on
/// a file with 4 KiB of data every 16 KiB on an ext4 loop mount: about 2.5×
/// faster buffered).
const FRAGMENT: u64 = 64 << 10;

/// A side's readers: the resolved one, and a buffered one (a second
/// descriptor without `O_DIRECT`, pages dropped after reading) for
/// fragmented requests, when the first is `O_DIRECT`.
pub(crate) struct Reader<'a> {
    pub(crate) main: Source<'a>,
    pub(crate) buffered: Option<Source<'a>>,
}

/// The knobs of one run.
pub(crate) struct Run<'r> {
    pub(crate) readers: usize,
    pub(crate) chunk: usize,
    /// Runs wanted before stopping (the limit + 1: the extra one says
    /// "more exist").
    pub(crate) max_runs: usize,
    pub(crate) interrupt: Option<&'r Interrupt>,
}

impl Run<'_> {
    pub(crate) fn run(
        &self,
        planner: &Mutex<Planner<'_>>,
        a: &Reader<'_>,
        b: &Reader<'_>,
    ) -> Result<Found, CompareError> {
        let shared = Shared {
            stop: AtomicBool::new(false),
            interrupted: AtomicBool::new(false),
            error: Mutex::new(None),
            read: [AtomicU64::new(0), AtomicU64::new(0)],
            buffered: [AtomicU64::new(0), AtomicU64::new(0)],
        };
        let mut found = Found {
            runs: Runs::new(self.max_runs),
            read_a: 0,
            read_b: 0,
            buffered_a: 0,
            buffered_b: 0,
            settled: 0,
            stopped_early: false,
        };
        std::thread::scope(|s| {
            let (tx, rx) = sync_channel::<Done>(self.readers * 2);
            for _ in 0..self.readers {
                let tx = tx.clone();
                let shared = &shared;
                spawn_reader(s, move || self.reader(planner, a, b, shared, tx));
            }
            drop(tx);
            // Jobs that finished ahead of their turn.
            let mut waiting = BTreeMap::new();
            let mut next = 0u64;
            'recv: for done in rx {
                waiting.insert(done.seq, done);
                while let Some(done) = waiting.remove(&next) {
                    next += 1;
                    for r in done.runs {
                        found.runs.push(r);
                    }
                    found.settled = done.end;
                    if found.runs.full() {
                        found.stopped_early = true;
                        shared.stop.store(true, Ordering::SeqCst);
                        break 'recv;
                    }
                }
            }
            // Leaving the scope joins the readers: a stopped reader returns
            // at its next check, or when its send finds the receiver gone.
        });
        found.read_a = shared.read[0].load(Ordering::SeqCst);
        found.read_b = shared.read[1].load(Ordering::SeqCst);
        found.buffered_a = shared.buffered[0].load(Ordering::SeqCst);
        found.buffered_b = shared.buffered[1].load(Ordering::SeqCst);
        if let Some(e) = shared.error.into_inner().unwrap_or_else(|e| e.into_inner()) {
            return Err(e);
        }
        if shared.interrupted.load(Ordering::SeqCst) && !found.stopped_early {
            return Err(CompareError::Interrupted {
                bytes_compared: found.settled,
            });
        }
        Ok(found)
    }

    fn reader(
        &self,
        planner: &Mutex<Planner<'_>>,
        a: &Reader<'_>,
        b: &Reader<'_>,
        shared: &Shared,
        tx: SyncSender<Done>,
    ) {
        let mut bufs: Option<[Buffer; 2]> = None;
        loop {
            if shared.stop.load(Ordering::Relaxed) {
                return;
            }
            if self.interrupt.is_some_and(Interrupt::is_triggered) {
                shared.interrupted.store(true, Ordering::SeqCst);
                shared.stop.store(true, Ordering::SeqCst);
                return;
            }
            let job = planner.lock().unwrap_or_else(|e| e.into_inner()).next_job();
            let job = match job {
                None => return,
                Some(Ok(job)) => job,
                Some(Err((which, source))) => {
                    let path = match which {
                        Which::A => a.main.path,
                        Which::B => b.main.path,
                    };
                    return shared.fail(CompareError::Map {
                        path: path.to_owned(),
                        source,
                    });
                }
            };
            let [ba, bb] =
                bufs.get_or_insert_with(|| [Buffer::new(self.chunk), Buffer::new(self.chunk)]);
            let len = (job.read.end - job.read.start) as usize;
            let fragmented = job.fragments.saturating_mul(FRAGMENT) > len as u64;
            let sides = [(job.read_a, a, &mut *ba), (job.read_b, b, &mut *bb)];
            for (i, (wanted, reader, buf)) in sides.into_iter().enumerate() {
                if !wanted {
                    continue;
                }
                let src = match &reader.buffered {
                    Some(buffered) if fragmented => {
                        shared.buffered[i].fetch_add(len as u64, Ordering::Relaxed);
                        buffered
                    }
                    _ => &reader.main,
                };
                if let Err(e) = src.read_at(&mut buf.as_mut_slice()[..len], job.read.start) {
                    return shared.fail(e.into());
                }
                let got = src.size.min(job.read.end).saturating_sub(job.read.start);
                shared.read[i].fetch_add(got, Ordering::Relaxed);
            }
            let lo = (job.logical.start - job.read.start) as usize;
            let hi = (job.logical.end - job.read.start) as usize;
            let mut runs = Runs::new(self.max_runs);
            let (x, y) = (&ba.as_slice()[lo..hi], &bb.as_slice()[lo..hi]);
            match (job.read_a, job.read_b) {
                (true, true) => diff(x, Some(y), job.logical.start, &mut runs),
                (true, false) => diff(x, None, job.logical.start, &mut runs),
                (false, true) => diff(y, None, job.logical.start, &mut runs),
                (false, false) => {}
            }
            let done = Done {
                seq: job.seq,
                runs: runs.runs,
                end: job.logical.end,
            };
            if tx.send(done).is_err() {
                return;
            }
        }
    }
}

/// The copy crate's reader reports its failures as [`CopyError`]s.
impl From<CopyError> for CompareError {
    fn from(e: CopyError) -> Self {
        match e {
            CopyError::Io {
                path,
                op,
                offset,
                errno,
            } => CompareError::Io {
                path,
                op,
                offset,
                errno,
            },
            CopyError::Map { path, source } => CompareError::Map { path, source },
            CopyError::CacheUnsupported {
                path,
                policy,
                errno,
            } => CompareError::CacheUnsupported {
                path,
                policy,
                errno,
            },
            CopyError::SourceChanged { path } => CompareError::Changed { path },
            CopyError::NotCopyable { path, kind, .. } => CompareError::NotComparable { path, kind },
            // The reader and the policy probe produce nothing else; keep
            // the message rather than lose it.
            other => CompareError::Io {
                path: PathBuf::from(other.to_string()),
                op: "compare",
                offset: None,
                errno: other.errno().unwrap_or(Errno::IO),
            },
        }
    }
}
