//! [`Caps`]: reports memoized per filesystem.

use crate::error::CapsError;
use crate::fsinfo::{MemoKey, memo_key, observe_mount};
use crate::options::CapsOptions;
use crate::report::{CapsReport, Cell, Support};
use rustix::fd::OwnedFd;
use rustix::fs::inotify;
use rustix::io::Errno;
use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::ops::Deref;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

type Slot = Arc<Mutex<Option<Arc<CapsReport>>>>;

/// The memoized reports, and what invalidates the ones keyed by a
/// fingerprint (kernels before 6.8).
#[derive(Default)]
struct Memo {
    /// Each key's slot and, for a fingerprint, the inotify watch descriptor
    /// of the directory it was probed in.
    map: HashMap<MemoKey, (Slot, Option<i32>)>,
    /// One inotify instance for the process (close-on-exec, non-blocking),
    /// made at the first fingerprint. A watch does not keep a filesystem
    /// busy; its unmount queues `IN_UNMOUNT` before `umount` returns, so a
    /// lookup after any later mount sees it.
    inotify: Option<OwnedFd>,
}

impl Memo {
    /// Drops the fingerprint entries whose filesystem went away (or whose
    /// directory was deleted): any event on a watch (the mask asks only
    /// for `IN_DELETE_SELF`; `IN_UNMOUNT` and `IN_IGNORED` always come).
    /// A lost event (queue overflow) or an unreadable queue drops them all.
    fn drop_unmounted(&mut self) {
        let Some(fd) = &self.inotify else { return };
        let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
        let mut reader = inotify::Reader::new(fd, &mut buf);
        let mut gone = Vec::new();
        let mut all = false;
        loop {
            match reader.next() {
                Ok(ev) if ev.events().contains(inotify::ReadFlags::QUEUE_OVERFLOW) => all = true,
                Ok(ev) => gone.push(ev.wd()),
                Err(Errno::AGAIN) => break,
                Err(Errno::INTR) => continue,
                Err(_) => {
                    all = true;
                    break;
                }
            }
        }
        if all {
            self.map.retain(|_, (_, wd)| wd.is_none());
            // A fresh instance: the old one's watches go with it.
            self.inotify = None;
        } else if !gone.is_empty() {
            self.map
                .retain(|_, (_, wd)| wd.is_none_or(|wd| !gone.contains(&wd)));
        }
    }

    /// A watch on `dir` for a new fingerprint entry, or `None` when there
    /// is no way to see its unmount (no inotify instance, no watch allowed:
    /// `EMFILE`, `ENOSPC`, `EACCES`…).
    fn watch(&mut self, dir: &Path) -> Option<i32> {
        if self.inotify.is_none() {
            self.inotify =
                inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK).ok();
        }
        inotify::add_watch(
            self.inotify.as_ref()?,
            dir,
            inotify::WatchFlags::DELETE_SELF,
        )
        .ok()
    }
}

fn memo() -> &'static Mutex<Memo> {
    static MEMO: OnceLock<Mutex<Memo>> = OnceLock::new();
    MEMO.get_or_init(Default::default)
}

/// The capabilities of one filesystem, probed once per process.
///
/// [`Caps::for_path`] probes the filesystem a path is on the first time
/// and hands out the same report afterwards, for any path on that mount
/// (the key is the unique mount id of `STATX_MNT_ID_UNIQUE`, Linux 6.8+,
/// and the device). Before 6.8 mount ids are reused after an unmount, so
/// the key is a fingerprint of the mount instead — mount id, device, fs
/// magic, fsid and its mountinfo line — and that entry lasts only until
/// an inotify watch on the directory reports the filesystem unmounted;
/// where either cannot be had, nothing is memoized and every call probes. Concurrent first calls for one filesystem wait for a single
/// probe. Derefs to [`CapsReport`].
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
        Self::for_dir(Self::dir_of(path.as_ref()), true)
    }

    /// [`Caps::for_path`] as on a kernel without `STATX_MNT_ID_UNIQUE`
    /// (before 6.8), whatever this one has: for the test bench, to check
    /// that path on any kernel. Not for other uses.
    ///
    /// # Errors
    /// As [`Caps::for_path`].
    #[doc(hidden)]
    pub fn for_path_without_unique_mount_id(path: impl AsRef<Path>) -> Result<Caps, CapsError> {
        Self::for_dir(Self::dir_of(path.as_ref()), false)
    }

    /// The directory probed for `path`.
    fn dir_of(path: &Path) -> &Path {
        if path.is_dir() {
            path
        } else {
            match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            }
        }
    }

    /// [`Caps::for_path`] for a directory; `trust_unique` false ignores a
    /// unique mount id, as on a kernel before 6.8 (for tests).
    pub(crate) fn for_dir(dir: &Path, trust_unique: bool) -> Result<Caps, CapsError> {
        let probe_here = || -> Result<Caps, CapsError> {
            Ok(Caps {
                report: Arc::new(CapsOptions::new().probe(dir)?),
            })
        };
        // Nothing tells this mount from one that may replace it: a
        // memoized report could be of another filesystem.
        let Some(key) = memo_key(&observe_mount(dir, trust_unique)?) else {
            return probe_here();
        };
        let slot = {
            let mut memo = memo().lock().unwrap_or_else(|e| e.into_inner());
            // After the observation: an unmount before it is queued by now.
            memo.drop_unmounted();
            if let Some((slot, _)) = memo.map.get(&key) {
                slot.clone()
            } else {
                let wd = match key.reused_slot() {
                    None => None,
                    Some(reused) => {
                        let Some(wd) = memo.watch(dir) else {
                            drop(memo);
                            return probe_here();
                        };
                        // Another fingerprint under this mount id and device
                        // is of a filesystem since unmounted.
                        memo.map.retain(|k, _| k.reused_slot() != Some(reused));
                        Some(wd)
                    }
                };
                let slot = Slot::default();
                memo.map.insert(key, (slot.clone(), wd));
                slot
            }
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

    /// Whether this report is still memoized (after dropping those of
    /// filesystems seen unmounted): for the test bench, to check that an
    /// unmount forgets a report whatever ids the next mount gets. Not for
    /// other uses.
    #[doc(hidden)]
    pub fn is_memoized(&self) -> bool {
        let mut memo = memo().lock().unwrap_or_else(|e| e.into_inner());
        memo.drop_unmounted();
        memo.map.values().any(|(slot, _)| {
            slot.lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .is_some_and(|r| Arc::ptr_eq(r, &self.report))
        })
    }

    /// Forgets every memoized report (after a remount, or in tests).
    pub fn forget_all() {
        let mut memo = memo().lock().unwrap_or_else(|e| e.into_inner());
        memo.map.clear();
        memo.inotify = None;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The path of kernels before 6.8, forced: two directories of one
    /// filesystem share one report, watched for an unmount; a deleted
    /// probed directory (an inotify event on its watch) drops the entry.
    #[test]
    fn without_a_unique_mount_id_one_filesystem_still_shares_a_report() {
        let dir = tempfile::tempdir().unwrap();
        let probed = dir.path().join("probed");
        let sub = probed.join("sub");
        std::fs::create_dir_all(&sub).unwrap();
        let key = memo_key(&observe_mount(&probed, false).unwrap()).unwrap();
        assert!(key.reused_slot().is_some(), "{key:?}");
        let a = Caps::for_dir(&probed, false).unwrap();
        let b = Caps::for_dir(&sub, false).unwrap();
        assert!(Arc::ptr_eq(&a.shared(), &b.shared()));
        let wd = memo().lock().unwrap().map.get(&key).unwrap().1;
        assert!(wd.is_some());
        // The fast path (where the kernel has unique ids) keys the same
        // filesystem separately, and shares within itself.
        let c = Caps::for_dir(&probed, true).unwrap();
        let d = Caps::for_dir(&sub, true).unwrap();
        assert!(Arc::ptr_eq(&c.shared(), &d.shared()));
        // Deleting the probed directory is an event on its watch: the next
        // lookup probes again instead of trusting the entry.
        std::fs::remove_dir(&sub).unwrap();
        std::fs::remove_dir(&probed).unwrap();
        let e = Caps::for_dir(dir.path(), false).unwrap();
        assert!(!Arc::ptr_eq(&a.shared(), &e.shared()));
        let memo = memo().lock().unwrap();
        assert!(
            memo.map.values().all(|(_, w)| *w != wd),
            "the entry of the deleted directory is still there"
        );
    }
}
