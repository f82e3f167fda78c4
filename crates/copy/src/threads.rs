//! The one way the copy and the comparison start their reader threads:
//! scoped, and carrying the test seam's faults along (see `fault.rs`), so
//! a fault injected on the calling thread reaches the reads it causes.

use std::thread::Scope;

/// Spawns `f` on a scoped thread.
pub(crate) fn spawn_reader<'scope, F>(s: &'scope Scope<'scope, '_>, f: F)
where
    F: FnOnce() + Send + 'scope,
{
    #[cfg(any(test, feature = "fault-injection"))]
    let faults = crate::fault::handoff();
    s.spawn(move || {
        #[cfg(any(test, feature = "fault-injection"))]
        let _faults = faults.adopt();
        f()
    });
}
