//! Page-aligned buffers (O_DIRECT needs aligned memory) and the bounded pool
//! that caps the pipeline's memory.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Memory alignment of every buffer: a page covers every `stx_dio_mem_align`
/// the kernel reports (at most the logical block size).
pub(crate) fn mem_align() -> usize {
    sparsekit_sys::pagecache::page_size().max(4096)
}

/// A zero-initialised byte buffer whose start is page aligned. Safe code:
/// it over-allocates a `Vec` by one alignment and uses an aligned window.
pub(crate) struct Buffer {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl Buffer {
    pub(crate) fn new(len: usize) -> Self {
        let align = mem_align();
        let raw = vec![0u8; len + align];
        let start = raw.as_ptr().align_offset(align);
        assert!(start < align, "cannot align a byte buffer");
        Buffer { raw, start, len }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

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
    fn buffers_are_aligned_and_zeroed() {
        for len in [1, 4096, 65536 + 17] {
            let b = Buffer::new(len);
            assert_eq!(b.as_slice().as_ptr() as usize % mem_align(), 0);
            assert_eq!(b.len(), len);
            assert!(b.as_slice().iter().all(|&x| x == 0));
        }
    }

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
