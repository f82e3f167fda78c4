//! The read/write strategy: reader threads fill MiB-sized buffers from the
//! source while the calling thread writes them to the destination.
//!
//! Readers take jobs from the shared [`Planner`] (one lock per job), read
//! their data pieces into a buffer from the [`Pool`], optionally split out
//! all-zero blocks, and send the job over a bounded channel. The writer
//! applies each job's pieces in order and returns the buffer. Memory is
//! bounded by the pool; the first error anywhere stops every thread.

use crate::buffer::{Buffer, Pool};
use crate::endpoint::{Dest, Source};
use crate::error::CopyError;
use crate::interrupt::Interrupt;
use crate::options::ProgressFn;
use crate::plan::{Job, Piece, Planner, split_zeros};
use crate::report::Progress;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

/// Knobs of one pipeline run.
pub(crate) struct Pipeline<'p> {
    pub(crate) readers: usize,
    pub(crate) queue_depth: usize,
    /// Zero detection granule (`SparseMode::Always`), 0 for none.
    pub(crate) zero_granule: u64,
    pub(crate) progress: Option<&'p ProgressFn>,
    pub(crate) data_total: u64,
    pub(crate) interrupt: Option<&'p Interrupt>,
}

struct Filled {
    pieces: Vec<Piece>,
    buf: Option<Buffer>,
}

/// The first error wins; everyone else stops.
struct Shared {
    stop: AtomicBool,
    error: Mutex<Option<CopyError>>,
}

impl Shared {
    fn fail(&self, e: CopyError) {
        let mut slot = self.error.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(e);
        }
        self.stop.store(true, Ordering::SeqCst);
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

impl Pipeline<'_> {
    /// Copies everything `planner` yields. `data_done` carries progress
    /// across passes.
    pub(crate) fn run(
        &self,
        planner: Planner<'_>,
        src: &Source<'_>,
        dst: &mut Dest<'_>,
        pool: &Pool,
        data_done: &mut u64,
    ) -> Result<(), CopyError> {
        let shared = Shared {
            stop: AtomicBool::new(false),
            error: Mutex::new(None),
        };
        let planner = Mutex::new(planner);
        std::thread::scope(|s| {
            let (tx, rx) = sync_channel::<Filled>(self.queue_depth);
            for _ in 0..self.readers {
                let tx = tx.clone();
                let (shared, planner) = (&shared, &planner);
                s.spawn(move || self.reader(planner, src, pool, shared, tx));
            }
            drop(tx);
            if let Err(e) = self.writer(rx, dst, pool, &shared, data_done) {
                shared.fail(e);
            }
            // Leaving the scope joins the readers: a stopped reader
            // returns at its next check, or when its send finds the
            // receiver gone.
        });
        match shared.error.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn interrupted(&self, path: &Path, shared: &Shared) -> bool {
        if self.interrupt.is_some_and(Interrupt::is_triggered) {
            shared.fail(CopyError::Interrupted {
                path: path.to_owned(),
            });
            return true;
        }
        false
    }

    fn reader(
        &self,
        planner: &Mutex<Planner<'_>>,
        src: &Source<'_>,
        pool: &Pool,
        shared: &Shared,
        tx: SyncSender<Filled>,
    ) {
        loop {
            if shared.stopped() || self.interrupted(src.path, shared) {
                return;
            }
            let job = planner.lock().unwrap_or_else(|e| e.into_inner()).next_job();
            let Job { pieces, buf_used } = match job {
                None => return,
                Some(Ok(job)) => job,
                Some(Err(e)) => {
                    return shared.fail(CopyError::Map {
                        path: src.path.to_owned(),
                        source: e,
                    });
                }
            };
            let mut buf = None;
            if buf_used > 0 {
                match pool.take(&shared.stop) {
                    Some(b) => buf = Some(b),
                    None => return,
                }
            }
            match self.fill(pieces, buf.as_mut(), src) {
                Ok(pieces) => {
                    if tx.send(Filled { pieces, buf }).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    if let Some(b) = buf {
                        pool.give(b);
                    }
                    return shared.fail(e);
                }
            }
        }
    }

    /// Reads a job's data pieces; with zero detection, splits them.
    fn fill(
        &self,
        pieces: Vec<Piece>,
        mut buf: Option<&mut Buffer>,
        src: &Source<'_>,
    ) -> Result<Vec<Piece>, CopyError> {
        for piece in &pieces {
            if let (Piece::Data { off, len, buf_off }, Some(b)) = (piece, buf.as_deref_mut()) {
                src.read_at(
                    &mut b.as_mut_slice()[*buf_off..*buf_off + *len as usize],
                    *off,
                )?;
            }
        }
        let Some(b) = buf.filter(|_| self.zero_granule > 0) else {
            return Ok(pieces);
        };
        let mut out = Vec::with_capacity(pieces.len());
        for piece in pieces {
            match piece {
                Piece::Data { off, len, buf_off } => {
                    let data = &b.as_slice()[buf_off..buf_off + len as usize];
                    split_zeros(off, data, buf_off, self.zero_granule, &mut out);
                }
                hole => out.push(hole),
            }
        }
        Ok(out)
    }

    fn writer(
        &self,
        rx: Receiver<Filled>,
        dst: &mut Dest<'_>,
        pool: &Pool,
        shared: &Shared,
        data_done: &mut u64,
    ) -> Result<(), CopyError> {
        for filled in rx {
            if shared.stopped() || self.interrupted(dst.path, shared) {
                break;
            }
            for piece in &filled.pieces {
                match *piece {
                    Piece::Data { off, len, buf_off } => {
                        let b = filled.buf.as_ref().expect("a job with data has a buffer");
                        dst.write_data(&b.as_slice()[buf_off..buf_off + len as usize], off)?;
                        *data_done += len;
                    }
                    Piece::Hole { off, len, detected } => {
                        dst.hole(off, len, detected)?;
                        if detected {
                            *data_done += len;
                        }
                    }
                }
            }
            if let Some(b) = filled.buf {
                pool.give(b);
            }
            if let Some(progress) = self.progress {
                progress(&Progress {
                    data_done: (*data_done).min(self.data_total),
                    data_total: self.data_total,
                });
            }
        }
        Ok(())
    }
}
