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
    /// `SIGTERM`), via `signal-hook`: the handler only sets the flag, so the
    /// copy winds down and cleans up. A second such signal while the flag is
    /// set ends the process at once with status `128 + signal`; with
    /// [`Staging::Unnamed`](crate::Staging::Unnamed) that leaves nothing
    /// behind, with `Named` at most the hidden temporary file.
    ///
    /// The handlers stay until the returned [`SignalRegistration`] is dropped.
    pub fn register_signals(&self, signals: &[i32]) -> io::Result<SignalRegistration> {
        let mut ids = Vec::with_capacity(signals.len() * 2);
        let registration = |ids: &mut Vec<signal_hook::SigId>| -> io::Result<()> {
            for &sig in signals {
                // Order matters: the shutdown handler runs first, and only
                // exits when the flag was already set by an earlier signal.
                ids.push(signal_hook::flag::register_conditional_shutdown(
                    sig,
                    128 + sig,
                    Arc::clone(&self.0),
                )?);
                ids.push(signal_hook::flag::register(sig, Arc::clone(&self.0))?);
            }
            Ok(())
        };
        if let Err(e) = registration(&mut ids) {
            for id in ids {
                signal_hook::low_level::unregister(id);
            }
            return Err(e);
        }
        Ok(SignalRegistration { ids })
    }
}

/// Signal handlers installed by [`Interrupt::register_signals`]; dropping it
/// removes them.
#[derive(Debug)]
pub struct SignalRegistration {
    ids: Vec<signal_hook::SigId>,
}

impl Drop for SignalRegistration {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}
