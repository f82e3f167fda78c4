//! [`Interrupt`]: a flag that stops a copy cleanly, settable from a signal.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A shareable stop flag. A copy given one (via
/// [`CopyOptions::interrupt`](crate::CopyOptions::interrupt)) checks it
/// between requests, stops its threads, removes what it staged and fails
/// with [`CopyError::Interrupted`](crate::CopyError::Interrupted).
///
/// ```
/// let stop = sparsekit_copy::Interrupt::new();
/// let for_handler = stop.clone();
/// for_handler.trigger();
/// assert!(stop.is_triggered());
/// ```
#[derive(Clone, Default)]
pub struct Interrupt(Arc<AtomicBool>);

impl fmt::Debug for Interrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Interrupt")
            .field(&self.is_triggered())
            .finish()
    }
}

impl Interrupt {
    /// A flag not yet triggered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every copy holding this flag to stop.
    pub fn trigger(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether [`trigger`](Self::trigger) was called (or a registered signal came).
    pub fn is_triggered(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Triggers this flag when one of `signals` arrives (e.g. `SIGINT`,
    /// `SIGTERM`): the copy winds down and cleans up. The signal is then
    /// left to its default action, so a second one ends the process at
    /// once, even one blocked on a dead NFS server
    /// ([`sparsekit_sys::stop_signals`]); with
    /// [`Staging::Unnamed`](crate::Staging::Unnamed) that leaves nothing
    /// behind, with `Named` at most the hidden temporary file.
    ///
    /// The handlers stay until the returned [`SignalRegistration`] is dropped.
    pub fn register_signals(&self, signals: &[i32]) -> io::Result<SignalRegistration> {
        sparsekit_sys::stop_signals::stop_on(signals, &self.0)
    }
}

/// Signal handlers installed by [`Interrupt::register_signals`]; dropping it
/// removes them.
pub type SignalRegistration = sparsekit_sys::stop_signals::StopSignals;
