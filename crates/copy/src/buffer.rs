//! The bounded pool of page-aligned buffers ([`Buffer`], shared with the
//! extent scan) that caps the pipeline's memory.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

pub(crate) use sparsekit_sys::aligned::{AlignedBuf as Buffer, mem_align};

/// A fixed set of buffers shared by the reader threads and the writer: a
/// reader waits here when the writer is behind, which bounds memory to
/// `count × size`.
pub(crate) struct Pool {
    free: Mutex<Vec<Buffer>>,
    ready: Condvar,
}

impl Pool {
    pub(crate) fn new(count: usize, size: usize) -> Self {
        Pool {
            free: Mutex::new((0..count).map(|_| Buffer::new(size)).collect()),
            ready: Condvar::new(),
        }
    }

    /// A free buffer, or `None` once `stop` is set.
    pub(crate) fn take(&self, stop: &AtomicBool) -> Option<Buffer> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            if let Some(b) = free.pop() {
                return Some(b);
            }
            // A timeout as well as the notification, so a stop set by a
            // thread that never returns a buffer is seen promptly.
            free = self
                .ready
                .wait_timeout(free, Duration::from_millis(20))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    pub(crate) fn give(&self, buffer: Buffer) {
        self.free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(buffer);
        self.ready.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_pool_returns_none_once_stopped() {
        let pool = Pool::new(1, 4096);
        let stop = AtomicBool::new(false);
        let b = pool.take(&stop).unwrap();
        stop.store(true, Ordering::Relaxed);
        assert!(pool.take(&stop).is_none());
        pool.give(b);
    }
}
