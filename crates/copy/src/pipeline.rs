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
use crate::plan::{Job, Piece, Planner, Read, split_zeros};
use crate::report::Progress;
use crate::threads::spawn_reader;
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
    /// The source's size: a zero tail up to it is a hole whatever its length.
    pub(crate) eof: u64,
    pub(crate) progress: Option<&'p ProgressFn>,
    pub(crate) data_total: u64,
    pub(crate) interrupt: Option<&'p Interrupt>,
}

struct Filled {
    /// Position of the job in the plan: the writer applies jobs in this
    /// order, so the destination is written sequentially (contiguous
    /// allocation, fewer extents) whatever order the readers finish in.
    seq: u64,
    pieces: Vec<Piece>,
    buf: Buffer,
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
                spawn_reader(s, move || self.reader(planner, src, pool, shared, tx));
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
            // The buffer first, then the job: every job in flight owns a
            // buffer, so the writer, which applies jobs in plan order, can
            // always get the one it waits for.
            let Some(mut buf) = pool.take(&shared.stop) else {
                return;
            };
            let (seq, job) = {
                let mut planner = planner.lock().unwrap_or_else(|e| e.into_inner());
                let seq = planner.jobs_planned();
                (seq, planner.next_job())
            };
            let Job { pieces, reads, .. } = match job {
                None => return pool.give(buf),
                Some(Ok(job)) => job,
                Some(Err(e)) => {
                    pool.give(buf);
                    return shared.fail(CopyError::Map {
                        path: src.path.to_owned(),
                        source: e,
                    });
                }
            };
            match self.fill(pieces, &reads, &mut buf, src) {
                Ok(pieces) => {
                    if tx.send(Filled { seq, pieces, buf }).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    pool.give(buf);
                    return shared.fail(e);
                }
            }
        }
    }

    /// Reads a job's data; with zero detection, splits its data pieces.
    fn fill(
        &self,
        pieces: Vec<Piece>,
        reads: &[Read],
        buf: &mut Buffer,
        src: &Source<'_>,
    ) -> Result<Vec<Piece>, CopyError> {
        for read in reads {
            let into = &mut buf.as_mut_slice()[read.buf_off..read.buf_off + read.len as usize];
            src.read_at(into, read.off)?;
        }
        if self.zero_granule == 0 {
            return Ok(pieces);
        }
        let b = &*buf;
        let mut out = Vec::with_capacity(pieces.len());
        for piece in pieces {
            match piece {
                Piece::Data { off, len, buf_off } => {
                    let data = &b.as_slice()[buf_off..buf_off + len as usize];
                    split_zeros(off, data, buf_off, self.zero_granule, self.eof, &mut out);
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
        // Jobs that finished ahead of their turn, by plan position.
        let mut waiting = std::collections::BTreeMap::new();
        let mut next = 0u64;
        for filled in rx {
            waiting.insert(filled.seq, filled);
            while let Some(filled) = waiting.remove(&next) {
                next += 1;
                if shared.stopped() || self.interrupted(dst.path, shared) {
                    return Ok(());
                }
                for piece in &filled.pieces {
                    match *piece {
                        Piece::Data { off, len, buf_off } => {
                            let data = &filled.buf.as_slice()[buf_off..buf_off + len as usize];
                            dst.write_data(data, off)?;
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
                pool.give(filled.buf);
                if let Some(progress) = self.progress {
                    progress(&Progress {
                        data_done: (*data_done).min(self.data_total),
                        data_total: self.data_total,
                    });
                }
            }
        }
        Ok(())
    }
}
