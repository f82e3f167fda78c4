//! One probe, start to end, on the calling thread: statx, the availability
//! check, the fstatat fallback, and decoding.
//!
//! The system calls go through [`Syscalls`] so tests can put a fake kernel
//! behind them (one without statx, one that blocks) and force every path in
//! plain `cargo test`.

use crate::metadata::Raw;
use crate::{
    Attribute, Attributes, DevId, Fields, Metadata, StatxUnavailable, Strategy, SyncMode, Timestamp,
};
use rustix::fd::BorrowedFd;
use rustix::fs::{AtFlags, CWD, Stat, Statx, StatxFlags, StatxTimestamp};
use rustix::io::Errno;
use std::ffi::CStr;
use std::fmt;
use std::sync::atomic::{AtomicI32, Ordering};

/// What to probe: a path (relative to the working directory) or an open
/// file descriptor (`AT_EMPTY_PATH`).
#[derive(Clone, Copy, Debug)]
pub(crate) enum TargetRef<'a> {
    Path(&'a CStr),
    Fd(BorrowedFd<'a>),
}

/// The caller's choices, minus the timeout.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Request {
    pub(crate) fields: Fields,
    pub(crate) sync: SyncMode,
    pub(crate) strategy: Strategy,
    pub(crate) follow_symlinks: bool,
    pub(crate) automount: bool,
}

impl Request {
    /// Flags shared by statx and fstatat (never the sync bits: fstatat
    /// rejects them with EINVAL).
    fn lookup_flags(&self) -> AtFlags {
        let mut flags = AtFlags::empty();
        if !self.follow_symlinks {
            flags |= AtFlags::SYMLINK_NOFOLLOW;
        }
        if !self.automount {
            flags |= AtFlags::NO_AUTOMOUNT;
        }
        flags
    }

    fn statx_flags(&self) -> AtFlags {
        self.lookup_flags()
            | match self.sync {
                SyncMode::AsStat => AtFlags::STATX_SYNC_AS_STAT,
                SyncMode::DontSync => AtFlags::STATX_DONT_SYNC,
                SyncMode::ForceSync => AtFlags::STATX_FORCE_SYNC,
            }
    }
}

/// A failed call, before the path is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) op: &'static str,
    pub(crate) errno: Errno,
}

/// The outcome of the definitive "does statx exist" probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Availability {
    Available,
    Unavailable(Errno),
    /// The probe itself could not be set up (no fd for a pipe): decide later.
    Undecided,
}

/// The kernel interface a probe uses.
pub(crate) trait Syscalls: fmt::Debug + Send + Sync + 'static {
    /// `statx(dirfd, path, flags, mask, &buf)`; with `TargetRef::Fd`,
    /// `statx(fd, "", flags | AT_EMPTY_PATH, mask, &buf)`.
    fn statx(&self, target: TargetRef<'_>, flags: AtFlags, mask: Fields) -> Result<Statx, Errno>;
    /// `fstatat(AT_FDCWD, path, &buf, flags)` or `fstat(fd, &buf)`.
    fn fstatat(&self, target: TargetRef<'_>, flags: AtFlags) -> Result<Stat, Errno>;
    /// Whether statx works at all, independent of any file.
    fn definitive_probe(&self) -> Availability;
    /// Where this kernel's availability verdict is cached.
    fn state(&self) -> &StatxState;
}

/// statx availability, learnt once per process (per fake kernel in tests).
#[derive(Debug, Default)]
pub(crate) struct StatxState(AtomicI32);

const UNKNOWN: i32 = 0;
const AVAILABLE: i32 = -1;

impl StatxState {
    pub(crate) const fn new() -> Self {
        StatxState(AtomicI32::new(UNKNOWN))
    }

    fn get(&self) -> Result<bool, Errno> {
        match self.0.load(Ordering::Relaxed) {
            UNKNOWN => Ok(false),
            AVAILABLE => Ok(true),
            errno => Err(Errno::from_raw_os_error(errno)),
        }
    }

    fn set_available(&self) {
        self.0.store(AVAILABLE, Ordering::Relaxed);
    }

    fn set_unavailable(&self, errno: Errno) {
        // A positive errno value can never collide with the two markers.
        self.0.store(errno.raw_os_error().max(1), Ordering::Relaxed);
    }
}

/// The real kernel, through rustix.
#[derive(Debug)]
pub(crate) struct Kernel;

pub(crate) static KERNEL: Kernel = Kernel;
static KERNEL_STATE: StatxState = StatxState::new();

impl Syscalls for Kernel {
    fn statx(&self, target: TargetRef<'_>, flags: AtFlags, mask: Fields) -> Result<Statx, Errno> {
        let mask = StatxFlags::from_bits_retain(mask.bits());
        match target {
            TargetRef::Path(path) => rustix::fs::statx(CWD, path, flags, mask),
            TargetRef::Fd(fd) => rustix::fs::statx(fd, c"", flags | AtFlags::EMPTY_PATH, mask),
        }
    }

    fn fstatat(&self, target: TargetRef<'_>, flags: AtFlags) -> Result<Stat, Errno> {
        match target {
            TargetRef::Path(path) => rustix::fs::statat(CWD, path, flags),
            TargetRef::Fd(fd) => rustix::fs::fstat(fd),
        }
    }

    fn definitive_probe(&self) -> Availability {
        // A pipe lives on pipefs, which answers getattr from memory: statx
        // on it cannot fail, block or be confused by a filesystem, so any
        // error means the system call itself is missing or filtered.
        let Ok((reader, _writer)) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        else {
            return Availability::Undecided;
        };
        match rustix::fs::statx(&reader, c"", AtFlags::EMPTY_PATH, StatxFlags::TYPE) {
            Ok(_) => Availability::Available,
            Err(errno) => Availability::Unavailable(errno),
        }
    }

    fn state(&self) -> &StatxState {
        &KERNEL_STATE
    }
}

/// Errors that may mean "no statx here" rather than a problem with the
/// file: seccomp filters answer ENOSYS or EPERM (old Docker), some
/// sandboxes EACCES, and broken FUSE servers anything. Not
/// `sparsekit_sys::is_unsupported`: statx has no mode a filesystem could
/// refuse, so its `EINVAL` (a bad flag) and `ENOTTY` are not "missing",
/// and these are only candidates, each confirmed by the definitive probe.
fn may_mean_missing(errno: Errno) -> bool {
    matches!(
        errno,
        Errno::NOSYS | Errno::PERM | Errno::ACCESS | Errno::OPNOTSUPP
    )
}

/// Runs one probe on the calling thread.
pub(crate) fn execute(
    sys: &dyn Syscalls,
    target: TargetRef<'_>,
    req: &Request,
) -> Result<Metadata, Failure> {
    match req.strategy {
        Strategy::Statx => via_statx(sys, target, req),
        Strategy::Fstatat => via_fstatat(sys, target, req, None),
        Strategy::Auto => {
            let known = match sys.state().get() {
                Ok(known) => known,
                Err(probe_errno) => {
                    let why = StatxUnavailable {
                        statx_errno: None,
                        probe_errno,
                    };
                    return via_fstatat(sys, target, req, Some(why));
                }
            };
            match via_statx(sys, target, req) {
                Ok(meta) => {
                    if !known {
                        sys.state().set_available();
                    }
                    Ok(meta)
                }
                Err(failure) if !known && may_mean_missing(failure.errno) => {
                    match sys.definitive_probe() {
                        Availability::Available => {
                            sys.state().set_available();
                            Err(failure)
                        }
                        Availability::Unavailable(probe_errno) => {
                            sys.state().set_unavailable(probe_errno);
                            let why = StatxUnavailable {
                                statx_errno: Some(failure.errno),
                                probe_errno,
                            };
                            via_fstatat(sys, target, req, Some(why))
                        }
                        Availability::Undecided => Err(failure),
                    }
                }
                Err(failure) => Err(failure),
            }
        }
    }
}

fn via_statx(
    sys: &dyn Syscalls,
    target: TargetRef<'_>,
    req: &Request,
) -> Result<Metadata, Failure> {
    let x = sys
        .statx(target, req.statx_flags(), req.fields)
        .map_err(|errno| Failure { op: "statx", errno })?;
    Ok(from_statx(&x, req))
}

fn via_fstatat(
    sys: &dyn Syscalls,
    target: TargetRef<'_>,
    req: &Request,
    fallback: Option<StatxUnavailable>,
) -> Result<Metadata, Failure> {
    let op = match target {
        TargetRef::Path(_) => "fstatat",
        TargetRef::Fd(_) => "fstat",
    };
    let st = sys
        .fstatat(target, req.lookup_flags())
        .map_err(|errno| Failure { op, errno })?;
    Ok(from_stat(&st, req, fallback))
}

fn ts(t: &StatxTimestamp) -> Timestamp {
    Timestamp {
        sec: t.tv_sec,
        nsec: t.tv_nsec,
    }
}

pub(crate) fn from_statx(x: &Statx, req: &Request) -> Metadata {
    let raw = Raw {
        mode: u32::from(x.stx_mode),
        nlink: x.stx_nlink,
        uid: x.stx_uid,
        gid: x.stx_gid,
        ino: x.stx_ino,
        size: x.stx_size,
        blocks: x.stx_blocks,
        blksize: x.stx_blksize,
        atime: ts(&x.stx_atime),
        btime: ts(&x.stx_btime),
        ctime: ts(&x.stx_ctime),
        mtime: ts(&x.stx_mtime),
        dev: DevId {
            major: x.stx_dev_major,
            minor: x.stx_dev_minor,
        },
        rdev: DevId {
            major: x.stx_rdev_major,
            minor: x.stx_rdev_minor,
        },
        mnt_id: x.stx_mnt_id,
        dio_mem_align: x.stx_dio_mem_align,
        dio_offset_align: x.stx_dio_offset_align,
        dio_read_offset_align: x.stx_dio_read_offset_align,
        subvol: x.stx_subvol,
        atomic_write_unit_min: x.stx_atomic_write_unit_min,
        atomic_write_unit_max: x.stx_atomic_write_unit_max,
        atomic_write_segments_max: x.stx_atomic_write_segments_max,
        atomic_write_unit_max_opt: x.stx_atomic_write_unit_max_opt,
    };
    Metadata {
        requested: req.fields,
        filled: Fields::from_bits_truncate(x.stx_mask),
        raw_mask: x.stx_mask,
        strategy: Strategy::Statx,
        sync: req.sync,
        fallback: None,
        attributes: Some(Attributes {
            set: Attribute::from_bits_retain(x.stx_attributes.bits()),
            supported: Attribute::from_bits_retain(x.stx_attributes_mask.bits()),
        }),
        raw,
    }
}

// The field types of `struct stat` differ between architectures, so the
// conversions below are casts; on x86_64 some of them are no-ops.
#[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
pub(crate) fn from_stat(st: &Stat, req: &Request, fallback: Option<StatxUnavailable>) -> Metadata {
    let dev = st.st_dev as u64;
    let rdev = st.st_rdev as u64;
    let raw = Raw {
        mode: st.st_mode as u32,
        nlink: u32::try_from(st.st_nlink as u64).unwrap_or(u32::MAX),
        uid: st.st_uid as u32,
        gid: st.st_gid as u32,
        ino: st.st_ino as u64,
        size: (st.st_size as i64).max(0) as u64,
        blocks: (st.st_blocks as i64).max(0) as u64,
        blksize: u32::try_from(st.st_blksize as i64).unwrap_or(0),
        atime: Timestamp {
            sec: st.st_atime as i64,
            nsec: st.st_atime_nsec as u32,
        },
        mtime: Timestamp {
            sec: st.st_mtime as i64,
            nsec: st.st_mtime_nsec as u32,
        },
        ctime: Timestamp {
            sec: st.st_ctime as i64,
            nsec: st.st_ctime_nsec as u32,
        },
        dev: DevId {
            major: rustix::fs::major(dev),
            minor: rustix::fs::minor(dev),
        },
        rdev: DevId {
            major: rustix::fs::major(rdev),
            minor: rustix::fs::minor(rdev),
        },
        ..Raw::default()
    };
    Metadata {
        requested: req.fields,
        filled: Fields::FSTATAT,
        raw_mask: Fields::FSTATAT.bits(),
        strategy: Strategy::Fstatat,
        // fstatat has no way to ask for either cache behaviour.
        sync: SyncMode::AsStat,
        fallback,
        attributes: None,
        raw,
    }
}
