//! The fault counts of the filesystem being run: faults injected, faults
//! survived (injected in a case whose every check held) and bytes of data
//! lost (measured: bytes of a source, of an unchanged destination or of a
//! finished copy that differ afterwards). The runner takes them after each
//! filesystem ([`take`]); a data-lost count above 0 fails the run.

use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// Counts over one filesystem's fault scenarios.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultTally {
    /// Fault cases run.
    pub cases: u64,
    /// Faults the daemon injected (EIO answers, short reads, delayed or
    /// held requests).
    pub injected: u64,
    /// Of those, the ones injected in a case whose every check held.
    pub survived: u64,
    /// Bytes that differ afterwards where nothing may differ.
    pub data_lost: u64,
}

impl FaultTally {
    /// Adds one case.
    pub fn add(&mut self, injected: u64, held: bool, lost: u64) {
        self.cases += 1;
        self.injected += injected;
        if held {
            self.survived += injected;
        }
        self.data_lost += lost;
    }
}

static TALLY: Mutex<FaultTally> = Mutex::new(FaultTally {
    cases: 0,
    injected: 0,
    survived: 0,
    data_lost: 0,
});

/// Records one case of the running filesystem.
pub fn record(injected: u64, held: bool, lost: u64) {
    TALLY
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .add(injected, held, lost);
}

/// The counts so far, reset to zero; `None` if no fault case ran.
pub fn take() -> Option<FaultTally> {
    let t = std::mem::take(&mut *TALLY.lock().unwrap_or_else(|p| p.into_inner()));
    (t.cases > 0).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survived_counts_only_cases_that_held() {
        let mut t = FaultTally::default();
        t.add(3, true, 0);
        t.add(2, false, 17);
        assert_eq!(
            t,
            FaultTally {
                cases: 2,
                injected: 5,
                survived: 3,
                data_lost: 17
            }
        );
    }
}
