//! The copy crate's one test seam: chosen I/O fails or slows down, so the
//! error paths (ENOSPC mid-copy, EIO on read, a failing fsync, a signal
//! mid-copy, a cache policy or hole method the filesystem lacks) can be
//! reached by `cargo test` without a full filesystem or a failing disk.
//!
//! The punch crate's way: no options field, no endpoint field. A test puts
//! [`Faults`] on its thread with [`inject`] (undone when the guard drops);
//! the threads a copy or a comparison spawns take them over
//! ([`handoff`]); and the few places that stand for a syscall ask here
//! (`read`, `write`, `sync`, `cache`, `hole`, `corrupt`) before making it.
//! A binary built with the `fault-injection` feature (the CLI, as its own
//! tests build it) takes them from `SPARSEKIT_TEST_FAULTS` instead.
//!
//! Compiled only for this crate's tests and with the `fault-injection`
//! feature: a release build has no module, no check and no variable read.

use crate::modes::{CachePolicy, HoleMethod};
use rustix::io::Errno;
use std::cell::RefCell;
use std::ops::Range;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Where to fail or slow down. Offsets are file offsets; the first request
/// that covers one fails with the errno, as the kernel would.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Faults {
    /// Fail the destination write (or `copy_file_range`) covering this offset.
    pub write_at: Option<(u64, Errno)>,
    /// Fail the source read covering this offset.
    pub read_at: Option<(u64, Errno)>,
    /// Fail the final `fsync` of the destination.
    pub sync: Option<Errno>,
    /// Sleep this long before each destination request.
    pub delay: Option<Duration>,
    /// Cache policies whose probe answers `EOPNOTSUPP`, as on a filesystem
    /// without them.
    pub unsupported_cache: Vec<CachePolicy>,
    /// Hole methods that answer `EOPNOTSUPP`.
    pub unsupported_holes: Vec<HoleMethod>,
    /// Sleep this long before each source read (a slow device, for
    /// timeouts).
    pub read_delay: Option<Duration>,
    /// `verify`: flip the destination's byte at this offset after the copy,
    /// before reading it back (silent corruption on the device).
    pub corrupt_at: Option<u64>,
}

impl Faults {
    /// No faults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fails the write covering `offset` with `errno`.
    pub fn write_at(mut self, offset: u64, errno: Errno) -> Self {
        self.write_at = Some((offset, errno));
        self
    }

    /// Fails the read covering `offset` with `errno`.
    pub fn read_at(mut self, offset: u64, errno: Errno) -> Self {
        self.read_at = Some((offset, errno));
        self
    }

    /// Fails the final fsync with `errno`.
    pub fn sync(mut self, errno: Errno) -> Self {
        self.sync = Some(errno);
        self
    }

    /// Sleeps `delay` before each destination request.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Makes the probe of `policy` answer `EOPNOTSUPP`.
    pub fn unsupported_cache(mut self, policy: CachePolicy) -> Self {
        self.unsupported_cache.push(policy);
        self
    }

    /// Sleeps `delay` before each source read.
    pub fn read_delay(mut self, delay: Duration) -> Self {
        self.read_delay = Some(delay);
        self
    }

    /// Flips the destination's byte at `offset` before `verify` reads it.
    pub fn corrupt_at(mut self, offset: u64) -> Self {
        self.corrupt_at = Some(offset);
        self
    }

    /// Makes hole `method` answer `EOPNOTSUPP`.
    pub fn unsupported_holes(mut self, method: HoleMethod) -> Self {
        self.unsupported_holes.push(method);
        self
    }

    /// Parses `write=ENOSPC@1048576,read=EIO@0,sync=EIO,delay-ms=20,
    /// read-delay-ms=20,corrupt=4096,no-cache=direct` (the CLI's
    /// `SPARSEKIT_TEST_FAULTS` variable in test builds; `no-cache` makes a
    /// cache policy's probe fail with `EOPNOTSUPP`, so `auto` falls back).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut faults = Faults::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| format!("fault {item:?}: expected KEY=VALUE"))?;
            let at = |v: &str| -> Result<(u64, Errno), String> {
                let (name, off) = v
                    .split_once('@')
                    .ok_or_else(|| format!("fault {item:?}: expected ERRNO@OFFSET"))?;
                let off = off
                    .parse()
                    .map_err(|_| format!("fault {item:?}: bad offset"))?;
                Ok((off, errno_by_name(name)?))
            };
            match key {
                "write" => faults.write_at = Some(at(value)?),
                "read" => faults.read_at = Some(at(value)?),
                "sync" => faults.sync = Some(errno_by_name(value)?),
                "delay-ms" => {
                    let ms = value
                        .parse()
                        .map_err(|_| format!("fault {item:?}: bad delay"))?;
                    faults.delay = Some(Duration::from_millis(ms));
                }
                "read-delay-ms" => {
                    let ms = value
                        .parse()
                        .map_err(|_| format!("fault {item:?}: bad delay"))?;
                    faults.read_delay = Some(Duration::from_millis(ms));
                }
                "corrupt" => {
                    faults.corrupt_at = Some(
                        value
                            .parse()
                            .map_err(|_| format!("fault {item:?}: bad offset"))?,
                    );
                }
                "no-cache" => {
                    faults.unsupported_cache.push(match value {
                        "direct" => CachePolicy::Direct,
                        "dontcache" => CachePolicy::DontCache,
                        "drop" => CachePolicy::Drop,
                        _ => return Err(format!("fault {item:?}: not a cache policy")),
                    });
                }
                _ => return Err(format!("fault {item:?}: unknown key {key:?}")),
            }
        }
        Ok(faults)
    }
}

thread_local! {
    /// The faults of this thread's copies, set by [`inject`].
    static INJECTED: RefCell<Option<Arc<Faults>>> = const { RefCell::new(None) };
}

/// Puts `faults` on this thread (and on the threads its copies and
/// comparisons spawn) until the guard drops.
pub fn inject(faults: Faults) -> Injected {
    let before = INJECTED.with(|f| f.replace(Some(Arc::new(faults))));
    Injected { before }
}

/// Undoes [`inject`] when dropped, so a failing test leaves no fault behind.
#[must_use = "the faults are gone when the guard drops"]
#[derive(Debug)]
pub struct Injected {
    before: Option<Arc<Faults>>,
}

impl Drop for Injected {
    fn drop(&mut self) {
        let before = self.before.take();
        INJECTED.with(|f| *f.borrow_mut() = before);
    }
}

/// This thread's faults, to pass to a thread it spawns.
#[derive(Debug)]
pub(crate) struct Handoff(Option<Arc<Faults>>);

/// Takes this thread's faults along: call before spawning, then
/// [`Handoff::adopt`] on the new thread.
pub(crate) fn handoff() -> Handoff {
    Handoff(INJECTED.with(|f| f.borrow().clone()))
}

impl Handoff {
    /// Puts the faults on the current thread while the guard lives.
    pub(crate) fn adopt(self) -> Injected {
        let before = INJECTED.with(|f| f.replace(self.0));
        Injected { before }
    }
}

/// The faults in force on this thread: injected, else (feature
/// `fault-injection`) `SPARSEKIT_TEST_FAULTS`, read once per process.
fn active() -> Option<Arc<Faults>> {
    INJECTED
        .with(|f| f.borrow().clone())
        .or_else(|| from_env().clone())
}

fn from_env() -> &'static Option<Arc<Faults>> {
    static FROM_ENV: OnceLock<Option<Arc<Faults>>> = OnceLock::new();
    FROM_ENV.get_or_init(|| {
        if !cfg!(feature = "fault-injection") {
            return None;
        }
        let spec = std::env::var_os("SPARSEKIT_TEST_FAULTS")?;
        // Only the CLI's own tests set it: a typo there is a test bug.
        match Faults::parse(&spec.to_string_lossy()) {
            Ok(f) => Some(Arc::new(f)),
            Err(e) => panic!("SPARSEKIT_TEST_FAULTS: {e}"),
        }
    })
}

/// Before a source read of `range`: `read_delay`, then `read_at`.
pub(crate) fn read(range: Range<u64>) -> Result<(), Errno> {
    let Some(f) = active() else { return Ok(()) };
    if let Some(d) = f.read_delay {
        std::thread::sleep(d);
    }
    match f.read_at {
        Some((off, errno)) if range.contains(&off) => Err(errno),
        _ => Ok(()),
    }
}

/// Before a destination write (or `copy_file_range`) of `range`: `delay`,
/// then `write_at`.
pub(crate) fn write(range: Range<u64>) -> Result<(), Errno> {
    let Some(f) = active() else { return Ok(()) };
    if let Some(d) = f.delay {
        std::thread::sleep(d);
    }
    match f.write_at {
        Some((off, errno)) if range.contains(&off) => Err(errno),
        _ => Ok(()),
    }
}

/// Before the destination's final `fsync`.
pub(crate) fn sync() -> Result<(), Errno> {
    active().and_then(|f| f.sync).map_or(Ok(()), Err)
}

/// Before the probe of a cache policy: `EOPNOTSUPP`, as on a filesystem
/// without it.
pub(crate) fn cache(policy: CachePolicy) -> Result<(), Errno> {
    match active() {
        Some(f) if f.unsupported_cache.contains(&policy) => Err(Errno::OPNOTSUPP),
        _ => Ok(()),
    }
}

/// Before a hole-making call: `EOPNOTSUPP`, as on a filesystem without it.
pub(crate) fn hole(method: HoleMethod) -> Result<(), Errno> {
    match active() {
        Some(f) if f.unsupported_holes.contains(&method) => Err(Errno::OPNOTSUPP),
        _ => Ok(()),
    }
}

/// `verify`, after the copy and before the read-back: flips the byte at
/// `corrupt_at` on the device (silent corruption).
pub(crate) fn corrupt(fd: rustix::fd::BorrowedFd<'_>) {
    let Some(off) = active().and_then(|f| f.corrupt_at) else {
        return;
    };
    let mut b = [0u8; 1];
    let _ = rustix::io::pread(fd, &mut b, off);
    b[0] ^= 0xff;
    let _ = rustix::io::pwrite(fd, &b, off);
    let _ = rustix::fs::fdatasync(fd);
}

fn errno_by_name(name: &str) -> Result<Errno, String> {
    Ok(match name {
        "ENOSPC" => Errno::NOSPC,
        "EIO" => Errno::IO,
        "EDQUOT" => Errno::DQUOT,
        "EFBIG" => Errno::FBIG,
        "EINTR" => Errno::INTR,
        "EOPNOTSUPP" => Errno::OPNOTSUPP,
        _ => {
            return Err(format!(
                "unknown errno {name:?} (ENOSPC, EIO, EDQUOT, EFBIG, EINTR, EOPNOTSUPP)"
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_cli_spec() {
        let f = Faults::parse("write=ENOSPC@1048576, sync=EIO,delay-ms=5").unwrap();
        assert_eq!(f.write_at, Some((1048576, Errno::NOSPC)));
        assert_eq!(f.sync, Some(Errno::IO));
        assert_eq!(f.delay, Some(Duration::from_millis(5)));
        assert!(Faults::parse("write=ENOSPC").is_err());
        assert!(Faults::parse("bogus=1").is_err());
        assert!(Faults::parse("read=EWHAT@0").is_err());
        let f = Faults::parse("no-cache=direct,no-cache=dontcache").unwrap();
        assert_eq!(
            f.unsupported_cache,
            [CachePolicy::Direct, CachePolicy::DontCache]
        );
        assert!(Faults::parse("no-cache=keep").is_err());
    }

    #[test]
    fn a_fault_hits_only_the_request_covering_its_offset() {
        let _f = inject(Faults::new().write_at(4096, Errno::NOSPC));
        assert_eq!(write(0..4096), Ok(()));
        assert_eq!(write(4096..8192), Err(Errno::NOSPC));
    }

    #[test]
    fn faults_stay_on_their_thread_unless_handed_off() {
        let _f = inject(Faults::new().read_at(0, Errno::IO));
        assert_eq!(read(0..1), Err(Errno::IO));
        std::thread::spawn(|| assert_eq!(read(0..1), Ok(())))
            .join()
            .unwrap();
        let h = handoff();
        std::thread::spawn(move || {
            let _f = h.adopt();
            assert_eq!(read(0..1), Err(Errno::IO));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn the_guard_takes_the_faults_away() {
        {
            let _f = inject(Faults::new().sync(Errno::IO));
            assert_eq!(sync(), Err(Errno::IO));
        }
        assert_eq!(sync(), Ok(()));
    }
}
