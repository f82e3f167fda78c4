//! The checks every operation makes before touching a file, and the few
//! syscall loops (EINTR, short reads and writes) they share.

use crate::{Operation, PunchError, RangeProblem};
use rustix::fd::BorrowedFd;
use rustix::fs::{FallocateFlags, FileType, OFlags, fallocate, fcntl_getfl, fstat, fstatfs};
use rustix::io::{Errno, pread, pwrite};

/// The file an operation works on, as it was when the operation began.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'fd> {
    pub(crate) fd: BorrowedFd<'fd>,
    pub(crate) op: Operation,
    pub(crate) size: u64,
    pub(crate) allocated: u64,
    pub(crate) block: u64,
    /// Opened `O_APPEND`: the strategies that `pwrite` in place must refuse.
    pub(crate) append: bool,
    /// Opened `O_WRONLY`: the strategies that read must refuse.
    pub(crate) write_only: bool,
}

impl<'fd> Target<'fd> {
    /// Checks that `fd` is a regular file open for writing (unless
    /// `read_only_ok`), and records its size, allocation, block size and
    /// whether it is in append mode.
    pub(crate) fn open(
        fd: BorrowedFd<'fd>,
        op: Operation,
        read_only_ok: bool,
    ) -> Result<Self, PunchError> {
        let st = fstat(fd).map_err(|errno| io(op, "fstat", 0, errno))?;
        let kind = FileType::from_raw_mode(st.st_mode);
        if kind != FileType::RegularFile {
            return Err(PunchError::NotRegular {
                op,
                kind: file_type_name(kind),
            });
        }
        let flags = fcntl_getfl(fd).map_err(|errno| io(op, "fcntl(F_GETFL)", 0, errno))?;
        let writable = flags.contains(OFlags::WRONLY) || flags.contains(OFlags::RDWR);
        if !read_only_ok && (!writable || flags.contains(OFlags::PATH)) {
            return Err(PunchError::ReadOnly { op });
        }
        let block = block_size(fd, st.st_blksize as u64);
        Ok(Target {
            fd,
            op,
            size: st.st_size as u64,
            allocated: (st.st_blocks as u64).saturating_mul(512),
            block,
            append: flags.contains(OFlags::APPEND),
            write_only: flags.contains(OFlags::WRONLY),
        })
    }

    /// `(st_size, st_blocks * 512)` now.
    pub(crate) fn now(&self) -> Result<(u64, u64), PunchError> {
        let st = fstat(self.fd).map_err(|errno| io(self.op, "fstat", 0, errno))?;
        Ok((st.st_size as u64, (st.st_blocks as u64).saturating_mul(512)))
    }

    pub(crate) fn invalid(&self, offset: u64, length: u64, problem: RangeProblem) -> PunchError {
        PunchError::InvalidRange {
            op: self.op,
            offset,
            length,
            problem,
        }
    }

    /// Refuses descriptors in append mode before a strategy that writes in place.
    pub(crate) fn require_in_place_writes(&self) -> Result<(), PunchError> {
        if self.append {
            return Err(PunchError::AppendOnly { op: self.op });
        }
        Ok(())
    }

    /// Refuses write-only descriptors before a strategy that reads the file.
    pub(crate) fn require_readable(&self) -> Result<(), PunchError> {
        if self.write_only {
            return Err(PunchError::WriteOnly { op: self.op });
        }
        Ok(())
    }

    /// Collapse and insert need offset and length block-aligned.
    pub(crate) fn check_aligned(&self, offset: u64, length: u64) -> Result<(), PunchError> {
        if offset % self.block != 0 || length % self.block != 0 {
            return Err(self.invalid(
                offset,
                length,
                RangeProblem::Unaligned {
                    alignment: self.block,
                },
            ));
        }
        Ok(())
    }

    pub(crate) fn fallocate(
        &self,
        mode: FallocateFlags,
        offset: u64,
        length: u64,
    ) -> Result<(), Errno> {
        #[cfg(test)]
        faults::fallocate()?;
        retry(|| fallocate(self.fd, mode, offset, length))
    }

    pub(crate) fn io(&self, call: &'static str, offset: u64, errno: Errno) -> PunchError {
        io(self.op, call, offset, errno)
    }

    /// Fills `buf` from `offset`; the end of the file before `buf` is full is
    /// an error (the caller mapped the range, so the file shrank).
    pub(crate) fn read_exact(&self, buf: &mut [u8], offset: u64) -> Result<(), PunchError> {
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done as u64;
            match retry(|| pread(self.fd, &mut buf[done..], at)) {
                Ok(0) => {
                    return Err(PunchError::FileShrank {
                        op: self.op,
                        offset: at,
                    });
                }
                Ok(n) => done += n,
                Err(errno) => return Err(self.io("pread", at, errno)),
            }
        }
        Ok(())
    }

    /// Writes all of `buf` at `offset`. On failure returns the error and the
    /// number of bytes that did reach the file.
    pub(crate) fn write_all(&self, buf: &[u8], offset: u64) -> Result<(), (PunchError, u64)> {
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done as u64;
            #[cfg(test)]
            if let Err(errno) = faults::write() {
                return Err((self.io("pwrite", at, errno), done as u64));
            }
            match retry(|| pwrite(self.fd, &buf[done..], at)) {
                // A zero-length write of a non-empty buffer would loop forever.
                Ok(0) => return Err((self.io("pwrite", at, Errno::IO), done as u64)),
                Ok(n) => done += n,
                Err(errno) => return Err((self.io("pwrite", at, errno), done as u64)),
            }
        }
        Ok(())
    }
}

/// Validates an offset/length pair as `off_t` values; returns the end.
pub(crate) fn check_range(op: Operation, offset: u64, length: u64) -> Result<u64, PunchError> {
    let bad = |problem| PunchError::InvalidRange {
        op,
        offset,
        length,
        problem,
    };
    const MAX: u64 = i64::MAX as u64;
    if offset > MAX {
        return Err(bad(RangeProblem::NegativeOffset));
    }
    if length > MAX {
        return Err(bad(RangeProblem::NegativeLength));
    }
    if length == 0 {
        return Err(bad(RangeProblem::Empty));
    }
    match offset.checked_add(length) {
        Some(end) if end <= MAX => Ok(end),
        _ => Err(bad(RangeProblem::Overflow)),
    }
}

/// The errnos after which `Auto` tries the next strategy: sparsekit's set
/// ([`sparsekit_sys::is_unsupported`]; its `EINVAL` is safe here because
/// every other cause of `EINVAL` was ruled out by the checks made first),
/// widened by `ENODEV`, which `fallocate(2)` answers on a file whose
/// filesystem or driver has no `fallocate` at all.
pub(crate) fn is_unsupported(errno: Errno) -> bool {
    sparsekit_sys::is_unsupported(errno) || errno == Errno::NODEV
}

pub(crate) fn io(op: Operation, call: &'static str, offset: u64, errno: Errno) -> PunchError {
    PunchError::Io {
        op,
        call,
        offset,
        errno,
    }
}

/// Repeats a call interrupted by a signal.
pub(crate) fn retry<T>(mut f: impl FnMut() -> Result<T, Errno>) -> Result<T, Errno> {
    loop {
        match f() {
            Err(Errno::INTR) => continue,
            other => return other,
        }
    }
}

/// The filesystem block size: `fstatfs`'s `f_bsize` (the allocation unit
/// of ext4, xfs, btrfs and tmpfs), else `st_blksize`, else 4096.
fn block_size(fd: BorrowedFd<'_>, st_blksize: u64) -> u64 {
    let sane = |b: u64| b.is_power_of_two() && (512..=(1 << 20)).contains(&b);
    match fstatfs(fd) {
        Ok(fs) if sane(fs.f_bsize as u64) => fs.f_bsize as u64,
        _ if sane(st_blksize) => st_blksize,
        _ => 4096,
    }
}

pub(crate) use sparsekit_sys::file_type_name;

pub(crate) fn align_down(x: u64, block: u64) -> u64 {
    x / block * block
}

pub(crate) fn align_up(x: u64, block: u64) -> u64 {
    x.div_ceil(block).saturating_mul(block)
}

/// Fault injection for unit tests: make the n-th `pwrite` or `fallocate`
/// of this thread fail, to reach the error paths that only a full disk or
/// a dying device would otherwise reach mid-operation.
#[cfg(test)]
pub(crate) mod faults {
    use rustix::io::Errno;
    use std::cell::Cell;

    thread_local! {
        static WRITES: Cell<Option<u64>> = const { Cell::new(None) };
        static FALLOCATES: Cell<Option<u64>> = const { Cell::new(None) };
        static FALLOCATE_ERRNO: Cell<Errno> = const { Cell::new(Errno::NOSPC) };
    }

    /// Let `ok` more `pwrite`s succeed, then fail every one with `EIO`
    /// (`None` turns it off).
    pub(crate) fn fail_writes_after(ok: Option<u64>) {
        WRITES.with(|c| c.set(ok));
    }

    /// Let `ok` more `fallocate`s succeed, then fail every one with `errno`.
    pub(crate) fn fail_fallocates_after(ok: Option<u64>, errno: Errno) {
        FALLOCATES.with(|c| c.set(ok));
        FALLOCATE_ERRNO.with(|c| c.set(errno));
    }

    fn tick(
        cell: &'static std::thread::LocalKey<Cell<Option<u64>>>,
        errno: Errno,
    ) -> Result<(), Errno> {
        cell.with(|c| match c.get() {
            None => Ok(()),
            Some(0) => Err(errno),
            Some(n) => {
                c.set(Some(n - 1));
                Ok(())
            }
        })
    }

    pub(super) fn write() -> Result<(), Errno> {
        tick(&WRITES, Errno::IO)
    }

    pub(super) fn fallocate() -> Result<(), Errno> {
        tick(&FALLOCATES, FALLOCATE_ERRNO.with(|c| c.get()))
    }

    /// Turns both off when dropped, so a failing test leaves none behind.
    pub(crate) struct Reset;

    impl Drop for Reset {
        fn drop(&mut self) {
            fail_writes_after(None);
            fail_fallocates_after(None, Errno::NOSPC);
        }
    }
}
