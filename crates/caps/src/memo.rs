//! [`Caps`]: reports memoized per filesystem.

use crate::error::CapsError;
use crate::fsinfo::memo_key;
use crate::probe::CapsOptions;
use crate::report::{CapsReport, Cell, Support};
use std::collections::HashMap;
use std::ops::Deref;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

type Slot = Arc<Mutex<Option<Arc<CapsReport>>>>;

fn memo() -> &'static Mutex<HashMap<(u64, u64), Slot>> {
    static MEMO: OnceLock<Mutex<HashMap<(u64, u64), Slot>>> = OnceLock::new();
    MEMO.get_or_init(Default::default)
}

/// The capabilities of one filesystem, probed once per process.
///
/// [`Caps::for_path`] probes the filesystem a path is on the first time
/// and hands out the same report afterwards, for any path on that mount
/// (the key is the mount id — `STATX_MNT_ID_UNIQUE` where the kernel has
/// it — and the device). Concurrent first calls for one filesystem wait for
/// a single probe. Derefs to [`CapsReport`].
#[derive(Clone, Debug)]
pub struct Caps {
    report: Arc<CapsReport>,
}

impl Caps {
    /// The report of the filesystem `path` is on: a directory is probed
    /// there, a file (or anything else) in its parent directory.
    ///
    /// # Errors
    /// As [`CapsOptions::probe`]; errors are not memoized, so a later call
    /// tries again.
    pub fn for_path(path: impl AsRef<Path>) -> Result<Caps, CapsError> {
        let path = path.as_ref();
        let dir = if path.is_dir() {
            path
        } else {
            match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            }
        };
        let key = memo_key(dir)?;
        let slot = {
            let mut map = memo().lock().unwrap_or_else(|e| e.into_inner());
            map.entry(key).or_default().clone()
        };
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(report) = slot.as_ref() {
            return Ok(Caps {
                report: report.clone(),
            });
        }
        let report = Arc::new(CapsOptions::new().probe(dir)?);
        *slot = Some(report.clone());
        Ok(Caps { report })
    }

    /// Forgets every memoized report (after a remount, or in tests).
    pub fn forget_all() {
        memo().lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The report.
    pub fn report(&self) -> &CapsReport {
        &self.report
    }

    /// The report, shared.
    pub fn shared(&self) -> Arc<CapsReport> {
        self.report.clone()
    }

    /// The cell of a capability, if it was tried.
    pub fn cell(&self, capability: &str) -> Option<&Cell> {
        self.report.get(capability)
    }

    /// Whether a capability is natively supported (tried and verified).
    pub fn is_native(&self, capability: &str) -> bool {
        self.report.support(capability) == Some(Support::Native)
    }
}

impl Deref for Caps {
    type Target = CapsReport;

    fn deref(&self) -> &CapsReport {
        &self.report
    }
}
