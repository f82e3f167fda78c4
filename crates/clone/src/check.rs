//! The checks made before any ioctl, so that each mistake gets its own
//! error and `EINVAL` from the kernel can be read as "unsupported".
//!
//! The rules are those of `generic_remap_checks()` in `fs/remap_range.c`,
//! confirmed on xfs and btrfs (Linux 6.18): offsets block-aligned; the
//! length block-aligned unless the source range ends at the source's end of
//! file and the destination range ends at or past the destination's (for
//! dedupe: exactly at it); no overlap within one file; for clone the source
//! range within the source file, for dedupe both ranges within their files.

use crate::error::{CloneError, Side};
use rustix::fd::BorrowedFd;
use rustix::fs::{FileType, OFlags, fcntl_getfl, fstat, fstatfs};

/// What the checks need to know about one open file.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FileInfo {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    pub(crate) size: u64,
}

impl FileInfo {
    pub(crate) fn same_inode(&self, other: &FileInfo) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }
}

/// What the operation needs from a file descriptor's access mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// Source of any operation: readable.
    Read,
    /// Clone destination: writable, not `O_APPEND`.
    Write,
    /// Dedupe destination: the kernel allows a read-only fd when the caller
    /// owns the file or may write it, so only `O_PATH` is refused here.
    Any,
}

/// fstat + access-mode checks for one side.
pub(crate) fn inspect(
    fd: BorrowedFd<'_>,
    side: Side,
    access: Access,
) -> Result<FileInfo, CloneError> {
    let st = fstat(fd).map_err(|errno| CloneError::Os { op: "fstat", errno })?;
    let kind = FileType::from_raw_mode(st.st_mode);
    if kind != FileType::RegularFile {
        return Err(CloneError::NotRegular {
            side,
            kind: file_type_name(kind),
        });
    }
    let flags = fcntl_getfl(fd).map_err(|errno| CloneError::Os {
        op: "fcntl(F_GETFL)",
        errno,
    })?;
    check_access(flags, side, access)?;
    Ok(FileInfo {
        dev: st.st_dev,
        ino: st.st_ino,
        size: st.st_size as u64,
    })
}

fn check_access(flags: OFlags, side: Side, access: Access) -> Result<(), CloneError> {
    let err = |found, needed| {
        Err(CloneError::AccessMode {
            side,
            found,
            needed,
        })
    };
    if flags.contains(OFlags::PATH) {
        return err("an O_PATH descriptor", "open for I/O");
    }
    let mode = flags & OFlags::RWMODE;
    match access {
        Access::Read if mode == OFlags::WRONLY => err("open for writing only", "open for reading"),
        Access::Write if mode == OFlags::RDONLY => err("open for reading only", "open for writing"),
        Access::Write if flags.contains(OFlags::APPEND) => {
            err("open in append mode", "open for writing without O_APPEND")
        }
        _ => Ok(()),
    }
}

/// The block size the destination's filesystem shares at (`f_bsize`).
pub(crate) fn block_size(fd: BorrowedFd<'_>) -> Result<u64, CloneError> {
    let st = fstatfs(fd).map_err(|errno| CloneError::Os {
        op: "fstatfs",
        errno,
    })?;
    // A filesystem reporting nonsense must not make every offset "misaligned".
    Ok(u64::try_from(st.f_bsize)
        .ok()
        .filter(|b| b.is_power_of_two())
        .unwrap_or(1))
}

/// The kind of range check: clone may extend the destination, dedupe may not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RangeKind {
    Clone,
    Dedupe,
}

/// A range request to validate.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RangeRequest {
    pub(crate) src: FileInfo,
    pub(crate) src_offset: u64,
    pub(crate) dst: FileInfo,
    pub(crate) dst_offset: u64,
    pub(crate) length: u64,
    pub(crate) block: u64,
    pub(crate) kind: RangeKind,
}

/// The source half of [`check_range`]: the range lies within the source
/// and starts on a block boundary. Returns the range's end.
pub(crate) fn check_source(
    src: &FileInfo,
    offset: u64,
    length: u64,
    block: u64,
) -> Result<u64, CloneError> {
    let past_eof = CloneError::PastEof {
        side: Side::Source,
        offset,
        length,
        size: src.size,
    };
    let end = offset
        .checked_add(length)
        .filter(|e| *e <= i64::MAX as u64)
        .ok_or(past_eof.clone())?;
    if end > src.size || (length > 0 && offset >= src.size) {
        return Err(past_eof);
    }
    if offset % block != 0 {
        return Err(CloneError::Misaligned {
            side: Side::Source,
            what: "offset",
            value: offset,
            alignment: block,
        });
    }
    Ok(end)
}

/// Validates ranges, alignment and overlap (pure: no syscalls).
pub(crate) fn check_range(r: &RangeRequest) -> Result<(), CloneError> {
    let src_end = check_source(&r.src, r.src_offset, r.length, r.block)?;
    let past_eof = |side, offset, size| CloneError::PastEof {
        side,
        offset,
        length: r.length,
        size,
    };
    let dst_end = r
        .dst_offset
        .checked_add(r.length)
        .filter(|e| *e <= i64::MAX as u64)
        .ok_or(past_eof(Side::Destination, r.dst_offset, r.dst.size))?;
    if r.kind == RangeKind::Dedupe
        && (dst_end > r.dst.size || (r.length > 0 && r.dst_offset >= r.dst.size))
    {
        return Err(past_eof(Side::Destination, r.dst_offset, r.dst.size));
    }
    let misaligned = |side, what, value| CloneError::Misaligned {
        side,
        what,
        value,
        alignment: r.block,
    };
    if r.dst_offset % r.block != 0 {
        return Err(misaligned(Side::Destination, "offset", r.dst_offset));
    }
    let tail_ok = src_end == r.src.size
        && match r.kind {
            RangeKind::Clone => dst_end >= r.dst.size,
            RangeKind::Dedupe => dst_end == r.dst.size,
        };
    if r.length % r.block != 0 && !tail_ok {
        return Err(misaligned(Side::Source, "length", r.length));
    }
    if r.src.same_inode(&r.dst) && r.length > 0 {
        // The kernel rounds a range ending at EOF up to the block boundary
        // for this check, so do the same.
        let span = if tail_ok {
            r.length.next_multiple_of(r.block)
        } else {
            r.length
        };
        if r.dst_offset < r.src_offset + span && r.src_offset < r.dst_offset + span {
            return Err(CloneError::Overlap {
                src_offset: r.src_offset,
                dst_offset: r.dst_offset,
                length: r.length,
            });
        }
    }
    Ok(())
}

pub(crate) use sparsekit_sys::file_type_name;

#[cfg(test)]
mod tests {
    use super::*;

    const B: u64 = 4096;

    fn file(ino: u64, size: u64) -> FileInfo {
        FileInfo { dev: 1, ino, size }
    }

    fn req(
        src_size: u64,
        src_offset: u64,
        dst_size: u64,
        dst_offset: u64,
        length: u64,
    ) -> RangeRequest {
        RangeRequest {
            src: file(1, src_size),
            src_offset,
            dst: file(2, dst_size),
            dst_offset,
            length,
            block: B,
            kind: RangeKind::Clone,
        }
    }

    #[test]
    fn aligned_ranges_pass() {
        assert!(check_range(&req(4 * B, 0, 0, 0, 4 * B)).is_ok());
        assert!(check_range(&req(4 * B, B, 0, 8 * B, 2 * B)).is_ok());
    }

    #[test]
    fn unaligned_offsets_name_the_side_and_alignment() {
        let e = check_range(&req(4 * B, 100, 0, 0, B)).unwrap_err();
        assert!(
            matches!(
                e,
                CloneError::Misaligned {
                    side: Side::Source,
                    what: "offset",
                    value: 100,
                    alignment: B
                }
            ),
            "{e}"
        );
        let e = check_range(&req(4 * B, 0, 0, 512, B)).unwrap_err();
        assert!(
            matches!(
                e,
                CloneError::Misaligned {
                    side: Side::Destination,
                    what: "offset",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("block size 4096"), "{e}");
    }

    #[test]
    fn unaligned_length_only_at_eof() {
        // Ends at the source's EOF, destination grows: allowed.
        assert!(check_range(&req(10_000, 8192, 0, 0, 1808)).is_ok());
        assert!(check_range(&req(10_000, 8192, 62_000, 61_440, 1808)).is_ok());
        // The EOF block into the middle of a larger destination: refused
        // (the kernel says EINVAL, observed on xfs and btrfs).
        let e = check_range(&req(10_000, 8192, 65_536, 16_384, 1808)).unwrap_err();
        assert!(
            matches!(e, CloneError::Misaligned { what: "length", .. }),
            "{e}"
        );
        // Not at the source's EOF.
        let e = check_range(&req(10_000, 0, 0, 0, 5000)).unwrap_err();
        assert!(
            matches!(
                e,
                CloneError::Misaligned {
                    what: "length",
                    value: 5000,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn dedupe_tail_must_end_at_both_eofs() {
        let mut r = req(10_000, 8192, 10_000, 8192, 1808);
        r.kind = RangeKind::Dedupe;
        assert!(check_range(&r).is_ok());
        r.dst.size = 20_000;
        assert!(matches!(
            check_range(&r),
            Err(CloneError::Misaligned { .. })
        ));
    }

    #[test]
    fn ranges_past_eof_are_refused() {
        let e = check_range(&req(4 * B, 4 * B, 0, 0, B)).unwrap_err();
        assert!(
            matches!(e, CloneError::PastEof { side: Side::Source, size, .. } if size == 4 * B),
            "{e}"
        );
        let e = check_range(&req(4 * B, 2 * B, 0, 0, 3 * B)).unwrap_err();
        assert!(
            matches!(
                e,
                CloneError::PastEof {
                    side: Side::Source,
                    ..
                }
            ),
            "{e}"
        );
        // Offsets that overflow off_t.
        let e = check_range(&req(4 * B, 0, 0, u64::MAX - B + 1, B)).unwrap_err();
        assert!(
            matches!(
                e,
                CloneError::PastEof {
                    side: Side::Destination,
                    ..
                }
            ),
            "{e}"
        );
        // Clone may write past the destination's EOF; dedupe may not.
        assert!(check_range(&req(4 * B, 0, B, 8 * B, B)).is_ok());
        let mut r = req(4 * B, 0, B, 8 * B, B);
        r.kind = RangeKind::Dedupe;
        assert!(matches!(
            check_range(&r),
            Err(CloneError::PastEof {
                side: Side::Destination,
                ..
            })
        ));
    }

    #[test]
    fn overlap_within_one_file_is_refused() {
        let mut r = req(8 * B, 0, 8 * B, 2 * B, 4 * B);
        r.dst = r.src;
        let e = check_range(&r).unwrap_err();
        assert!(matches!(e, CloneError::Overlap { .. }), "{e}");
        // Adjacent is fine.
        r.dst_offset = 4 * B;
        assert!(check_range(&r).is_ok());
        // A range ending at an unaligned EOF counts up to the block boundary.
        let mut r = req(4 * B + 100, 3 * B, 4 * B + 100, 0, B + 100);
        r.dst = r.src;
        r.dst_offset = 5 * B;
        assert!(check_range(&r).is_ok());
    }

    #[test]
    fn access_modes() {
        let src = Side::Source;
        assert!(check_access(OFlags::RDONLY, src, Access::Read).is_ok());
        assert!(check_access(OFlags::RDWR, src, Access::Read).is_ok());
        assert!(check_access(OFlags::WRONLY, src, Access::Read).is_err());
        let dst = Side::Destination;
        assert!(check_access(OFlags::WRONLY, dst, Access::Write).is_ok());
        assert!(check_access(OFlags::RDONLY, dst, Access::Write).is_err());
        assert!(check_access(OFlags::RDWR | OFlags::APPEND, dst, Access::Write).is_err());
        assert!(check_access(OFlags::RDONLY, dst, Access::Any).is_ok());
        assert!(check_access(OFlags::PATH, dst, Access::Any).is_err());
    }
}
