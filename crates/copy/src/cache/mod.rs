//! The page-cache side of a copy: choosing each side's policy by probing
//! (here), what each policy does ([`side`]: [`Behaviour`], [`SourceCache`],
//! [`DestCache`]), and which pages were cached before the copy and are
//! left after it ([`residency`]).

mod residency;
mod side;

pub(crate) use residency::{Residency, cached_bytes, drop_all};
pub(crate) use side::{Behaviour, DestCache, SourceCache};

use crate::buffer::{Buffer, mem_align};
use crate::error::CopyError;
use crate::modes::CachePolicy;
use crate::report::Fallback;
use rustix::fd::BorrowedFd;
use rustix::fs::{AtFlags, FileType, OFlags, StatxFlags, fstat, statx};
use rustix::io::{Errno, pread, preadv2, pwrite, pwritev2};
use sparsekit_sys::consts::STATX_DIO_READ_ALIGN;
use sparsekit_sys::pagecache::RWF_DONTCACHE;
use std::io::{IoSlice, IoSliceMut};
use std::path::Path;

/// Which file a policy is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Source,
    Destination,
}

/// A side's resolved policy: never `Auto`; `align` is the O_DIRECT offset
/// and length alignment (1 for the buffered policies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SidePolicy {
    pub(crate) policy: CachePolicy,
    pub(crate) align: u64,
}

impl SidePolicy {
    pub(crate) const KEEP: SidePolicy = SidePolicy {
        policy: CachePolicy::Keep,
        align: 1,
    };
    pub(crate) const DROP: SidePolicy = SidePolicy {
        policy: CachePolicy::Drop,
        align: 1,
    };
}

/// The probe writes of the destination side go at offset 0: a new file is
/// truncated back to 0 afterwards, an in-place destination has its first MiB
/// invalidated anyway and rewritten last.
pub(crate) fn resolve(
    requested: CachePolicy,
    side: Side,
    fd: BorrowedFd<'_>,
    path: &Path,
    size: u64,
    fallbacks: &mut Vec<Fallback>,
) -> Result<SidePolicy, CopyError> {
    let chain: &[CachePolicy] = match (requested, side) {
        // The source reads O_DIRECT first: in the bench (ext4 loop -> xfs
        // loop, 6.18) it beat RWF_DONTCACHE by about 10 %, and it never
        // evicts another process's cached pages.
        (CachePolicy::Auto, Side::Source) => &[
            CachePolicy::Direct,
            CachePolicy::DontCache,
            CachePolicy::Drop,
            CachePolicy::Keep,
        ],
        // The destination writes buffered with write-behind: the single
        // writer's O_DIRECT writes wait one at a time, while writeback
        // queues many. Measured ext4 -> xfs on loop devices with direct
        // I/O, O_DIRECT source, medians of 5-7 rotating rounds, each
        // synced: 2 GiB in 4-64 MiB runs 3.45 s with an O_DIRECT
        // destination, 2.91 s RWF_DONTCACHE, 2.77 s write-behind
        // (`qemu-img convert -t none -T none` 3.78 s); 313 MiB in
        // 64 KiB-4 MiB extents 0.60, 0.49 and 0.45 s (qemu-img 0.64 s).
        // Nothing is left cached either way: write-behind drops each
        // window once written back, and the rest after the fsync.
        (CachePolicy::Auto, Side::Destination) => &[CachePolicy::Drop, CachePolicy::Keep],
        (CachePolicy::Keep, _) => &[CachePolicy::Keep],
        (CachePolicy::Drop, _) => &[CachePolicy::Drop],
        (CachePolicy::Direct, _) => &[CachePolicy::Direct],
        (CachePolicy::DontCache, _) => &[CachePolicy::DontCache],
    };
    for &policy in chain {
        #[cfg(any(test, feature = "fault-injection"))]
        if let Err(errno) = crate::fault::cache(policy) {
            fallbacks_or_fail(requested, policy, side, path, errno, fallbacks)?;
            continue;
        }
        let probe = match policy {
            CachePolicy::DontCache => probe_dontcache(side, fd).map(|()| 1),
            CachePolicy::Direct => probe_direct(side, fd).and_then(|align| {
                direct_reaches_the_end(side, size, align).inspect_err(|_| {
                    let _ = set_direct(fd, false);
                })
            }),
            // Buffered I/O, fadvise and sync_file_range work on anything
            // that can be read and written.
            _ => Ok(1),
        };
        match probe {
            Ok(align) => return Ok(SidePolicy { policy, align }),
            Err(Probe::Unsupported(errno)) => {
                fallbacks_or_fail(requested, policy, side, path, errno, fallbacks)?;
            }
            Err(Probe::Failed(op, errno)) => {
                return Err(CopyError::Io {
                    path: path.to_owned(),
                    op,
                    offset: Some(0),
                    errno,
                });
            }
        }
    }
    unreachable!("Keep always resolves")
}

/// An unsupported `policy`: the next one under `Auto`, a failure when it
/// was asked for.
fn fallbacks_or_fail(
    requested: CachePolicy,
    policy: CachePolicy,
    side: Side,
    path: &Path,
    errno: Errno,
    fallbacks: &mut Vec<Fallback>,
) -> Result<(), CopyError> {
    if requested != CachePolicy::Auto {
        return Err(CopyError::CacheUnsupported {
            path: path.to_owned(),
            policy,
            errno,
        });
    }
    fallbacks.push(Fallback::new(fallback_name(policy, side), errno));
    Ok(())
}

fn fallback_name(policy: CachePolicy, side: Side) -> &'static str {
    match (policy, side) {
        (CachePolicy::DontCache, Side::Source) => "cache dontcache (source)",
        (CachePolicy::DontCache, Side::Destination) => "cache dontcache (destination)",
        (CachePolicy::Direct, Side::Source) => "cache direct (source)",
        (CachePolicy::Direct, Side::Destination) => "cache direct (destination)",
        (_, Side::Source) => "cache drop (source)",
        (_, Side::Destination) => "cache drop (destination)",
    }
}

enum Probe {
    Unsupported(Errno),
    Failed(&'static str, Errno),
}

/// One small RWF_DONTCACHE read (source) or write of zeros (destination) at
/// offset 0. The flag is checked before any data moves, so `EOPNOTSUPP`
/// means nothing happened.
fn probe_dontcache(side: Side, fd: BorrowedFd<'_>) -> Result<(), Probe> {
    let mut buf = Buffer::new(512);
    let res = match side {
        Side::Source => preadv2(
            fd,
            &mut [IoSliceMut::new(buf.as_mut_slice())],
            0,
            RWF_DONTCACHE,
        ),
        Side::Destination => pwritev2(fd, &[IoSlice::new(buf.as_slice())], 0, RWF_DONTCACHE),
    };
    match res {
        Ok(_) => Ok(()),
        // Kernels before 6.14 reject unknown RWF bits with EOPNOTSUPP too.
        // Narrower than sparsekit_sys::is_unsupported on purpose: EINVAL
        // from a 512-byte read or write at offset 0 is a real failure of
        // this file (a preadv2 that knows the flag checks nothing else),
        // and ENOTTY is no answer a read gives.
        Err(e @ (Errno::OPNOTSUPP | Errno::NOSYS)) => Err(Probe::Unsupported(e)),
        Err(e) => Err(Probe::Failed(
            if side == Side::Source {
                "preadv2(RWF_DONTCACHE)"
            } else {
                "pwritev2(RWF_DONTCACHE)"
            },
            e,
        )),
    }
}

/// O_DIRECT reads whole aligned blocks, and the kernel refuses (EINVAL) a
/// read whose end passes `i64::MAX`: the last block of a file that ends
/// within one alignment of 2^63 cannot be read that way, so such a source
/// is read buffered (writes are clipped at the size and go buffered at an
/// unaligned end anyway).
fn direct_reaches_the_end(side: Side, size: u64, align: u64) -> Result<u64, Probe> {
    if side == Side::Source && size.next_multiple_of(align) > i64::MAX as u64 {
        Err(Probe::Unsupported(Errno::INVAL))
    } else {
        Ok(align)
    }
}

/// Turns O_DIRECT on for `fd` and proves it with one aligned I/O at offset
/// 0. On failure O_DIRECT is turned off again. Returns the alignment: the
/// first candidate of [`direct_alignments`] the I/O accepts.
fn probe_direct(side: Side, fd: BorrowedFd<'_>) -> Result<u64, Probe> {
    let candidates = direct_alignments(side, fd)?;
    // Narrower than sparsekit_sys::is_unsupported on purpose: only the two
    // answers open(2) documents for a filesystem without O_DIRECT.
    set_direct(fd, true).map_err(|e| match e {
        Errno::INVAL | Errno::OPNOTSUPP => Probe::Unsupported(e),
        e => Probe::Failed("fcntl(F_SETFL, O_DIRECT)", e),
    })?;
    let mut refused = Errno::INVAL;
    for align in candidates {
        let mut buf = Buffer::new(align as usize);
        let res = match side {
            Side::Source => pread(fd, buf.as_mut_slice(), 0).map(drop),
            Side::Destination => pwrite(fd, buf.as_slice(), 0).map(drop),
        };
        match res {
            Ok(()) => return Ok(align),
            // EINVAL: the alignment is not what the filesystem wants (try
            // the next), or it accepts the flag but not the I/O.
            Err(e @ (Errno::INVAL | Errno::OPNOTSUPP)) => refused = e,
            Err(e) => {
                let _ = set_direct(fd, false);
                return Err(Probe::Failed(
                    if side == Side::Source {
                        "pread(O_DIRECT)"
                    } else {
                        "pwrite(O_DIRECT)"
                    },
                    e,
                ));
            }
        }
    }
    let _ = set_direct(fd, false);
    Err(Probe::Unsupported(refused))
}

/// The O_DIRECT offset alignments to try, smallest first: `statx`
/// `STATX_DIOALIGN` (Linux 6.1) and, for reads, `STATX_DIO_READ_ALIGN`
/// (6.16); the logical block size of a block device; else 512, 4096 and
/// `st_blksize`, which the probe I/O tries in turn. `st_blksize` alone is
/// no alignment: NFS reports its wsize there (1 MiB) while taking O_DIRECT
/// at any offset, and every aligned piece widened to 1 MiB wrote zeros
/// over the holes around small data.
fn direct_alignments(side: Side, fd: BorrowedFd<'_>) -> Result<Vec<u64>, Probe> {
    let mut mask = StatxFlags::DIOALIGN;
    if side == Side::Source {
        mask |= STATX_DIO_READ_ALIGN;
    }
    let stx = statx(fd, "", AtFlags::EMPTY_PATH, mask).ok();
    if let Some(stx) =
        stx.filter(|s| StatxFlags::from_bits_retain(s.stx_mask).contains(StatxFlags::DIOALIGN))
    {
        if stx.stx_dio_offset_align == 0 || stx.stx_dio_mem_align as usize > mem_align() {
            // statx(2): zero means O_DIRECT is not supported on this file.
            return Err(Probe::Unsupported(Errno::INVAL));
        }
        let read_align = StatxFlags::from_bits_retain(stx.stx_mask)
            .contains(STATX_DIO_READ_ALIGN)
            .then_some(stx.stx_dio_read_offset_align)
            .filter(|&a| a != 0);
        return Ok(vec![u64::from(match side {
            Side::Source => read_align.unwrap_or(stx.stx_dio_offset_align),
            Side::Destination => stx.stx_dio_offset_align,
        })]);
    }
    let st = fstat(fd).map_err(|e| Probe::Failed("fstat", e))?;
    if FileType::from_raw_mode(st.st_mode) == FileType::BlockDevice {
        let lbs =
            rustix::fs::ioctl_blksszget(fd).map_err(|e| Probe::Failed("ioctl(BLKSSZGET)", e))?;
        return Ok(vec![u64::from(lbs.max(512))]);
    }
    Ok(unreported_alignments(st.st_blksize as u64))
}

/// The candidates where nothing reports the alignment.
fn unreported_alignments(blksize: u64) -> Vec<u64> {
    let mut out = vec![512, 4096];
    if blksize.is_power_of_two() && blksize > 4096 && blksize <= 1 << 20 {
        out.push(blksize);
    }
    out
}

/// Sets or clears O_DIRECT on an open file description (`F_SETFL`).
pub(crate) fn set_direct(fd: BorrowedFd<'_>, on: bool) -> Result<(), Errno> {
    let flags = rustix::fs::fcntl_getfl(fd)?;
    let want = if on {
        flags | OFlags::DIRECT
    } else {
        flags - OFlags::DIRECT
    };
    if want != flags {
        rustix::fs::fcntl_setfl(fd, want)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fd::AsFd;

    #[test]
    fn keep_and_drop_resolve_without_probing() {
        let f = tempfile::tempfile().unwrap();
        let mut fb = Vec::new();
        for p in [CachePolicy::Keep, CachePolicy::Drop] {
            let r = resolve(p, Side::Destination, f.as_fd(), Path::new("x"), 0, &mut fb).unwrap();
            assert_eq!(
                r,
                SidePolicy {
                    policy: p,
                    align: 1
                }
            );
        }
        assert!(fb.is_empty());
    }

    #[test]
    fn an_unreported_alignment_is_tried_from_512_up() {
        // NFS: st_blksize is the wsize, not an alignment.
        assert_eq!(unreported_alignments(1 << 20), [512, 4096, 1 << 20]);
        assert_eq!(unreported_alignments(4096), [512, 4096]);
        // Nonsense st_blksize values are never tried.
        assert_eq!(unreported_alignments(0), [512, 4096]);
        assert_eq!(unreported_alignments(3 << 20), [512, 4096]);
    }
}
