//! Test hooks that make chosen I/O fail or slow down, so the error paths
//! (ENOSPC mid-copy, EIO on read, a failing fsync, a signal mid-copy) can be
//! reached by `cargo test` without a full filesystem or a failing disk.
//!
//! Compiled only for this crate's tests and with the `fault-injection`
//! feature; the release CLI never has it.

use crate::modes::{CachePolicy, HoleMethod};
use rustix::io::Errno;
use std::ops::Range;
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

    pub(crate) fn check_write(&self, range: Range<u64>) -> Result<(), Errno> {
        if let Some(d) = self.delay {
            std::thread::sleep(d);
        }
        match self.write_at {
            Some((off, errno)) if range.contains(&off) => Err(errno),
            _ => Ok(()),
        }
    }

    pub(crate) fn check_read(&self, range: Range<u64>) -> Result<(), Errno> {
        if let Some(d) = self.read_delay {
            std::thread::sleep(d);
        }
        match self.read_at {
            Some((off, errno)) if range.contains(&off) => Err(errno),
            _ => Ok(()),
        }
    }

    pub(crate) fn check_sync(&self) -> Result<(), Errno> {
        self.sync.map_or(Ok(()), Err)
    }
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
        let f = Faults::new().write_at(4096, Errno::NOSPC);
        assert_eq!(f.check_write(0..4096), Ok(()));
        assert_eq!(f.check_write(4096..8192), Err(Errno::NOSPC));
    }
}
