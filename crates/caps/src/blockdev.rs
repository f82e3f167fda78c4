//! What a block device offers for making holes, observed by trial: the
//! rules (pure, like [`classify`](crate::classify)) and
//! [`probe_block_device`].
//!
//! A block device has no holes of its own, but a copy onto one (a loop
//! device, an nbd export, a thin volume) must make the source's holes read
//! as zeros, and the cheap ways to do that deallocate on the other side.
//! Each is tried on a range first filled with a pattern, then read back:
//!
//! | name | trial and verification |
//! |---|---|
//! | `blk_discard` | `ioctl(BLKDISCARD)` succeeds (detail: the sysfs discard limits) |
//! | `blk_discard_reads_zero` | after `BLKDISCARD` the pattern reads back as zeros (qemu-nbd's default `--discard=ignore` succeeds and keeps the data: degraded) |
//! | `blk_zeroout` | `ioctl(BLKZEROOUT)` (WRITE ZEROES without unmap, or the kernel writes zero pages: degraded when `write_zeroes_max_bytes` is 0) reads back zeros |
//! | `blk_zeroout_unmap` | `fallocate(PUNCH_HOLE \| KEEP_SIZE)` on the device: WRITE ZEROES with unmap allowed and no fallback, reads back zeros |
//! | `blk_zero_range` | `fallocate(ZERO_RANGE \| KEEP_SIZE)` on the device: as `BLKZEROOUT`, reads back zeros |

use crate::classify::{Observation, Shortfall, Trial, classify, needs};
use crate::error::CapsError;
use crate::report::{CapsReport, Cell, FsInfo};
use rustix::io::Errno;
use sparsekit_sys::blkdev::QueueLimits;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

/// Every capability name [`probe_block_device`] classifies.
pub const BLOCK_CAPABILITIES: &[&str] = &[
    "blk_discard",
    "blk_discard_reads_zero",
    "blk_zero_range",
    "blk_zeroout",
    "blk_zeroout_unmap",
];

/// What a range filled with a pattern read back as after an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadBack {
    /// Every byte zero.
    Zeros,
    /// The pattern, unchanged: the call did nothing to the data.
    OldData,
    /// Something else (part zeroed, part not).
    Mixed,
}

impl ReadBack {
    /// Classifies `got` against the `pattern` written before.
    pub fn of(got: &[u8], pattern: &[u8]) -> ReadBack {
        if got.iter().all(|&b| b == 0) {
            ReadBack::Zeros
        } else if got == pattern {
            ReadBack::OldData
        } else {
            ReadBack::Mixed
        }
    }
}

/// `blk_discard`: the call alone. Refused → `unsupported` with the errno
/// (the reason adds `discard_max_bytes` when the queue says 0); it worked →
/// `native` (what it leaves behind is `blk_discard_reads_zero`'s question).
pub fn discard(result: Result<ReadBack, Errno>, limits: &QueueLimits) -> Cell {
    let verified_by = "ioctl(BLKDISCARD) on a range holding a pattern";
    let mut cell = match result {
        Err(errno) => classify(Trial::new(
            Observation::refused("ioctl(BLKDISCARD)", errno),
            verified_by,
        )),
        Ok(_) => Cell::native(verified_by),
    };
    if cell.support == crate::Support::Unsupported && limits.discard_max_bytes == Some(0) {
        let why = cell.reason.take().unwrap_or_default();
        cell.reason = Some(format!("{why} (the queue says discard_max_bytes 0)"));
    }
    let detail = limits.describe();
    if !detail.is_empty() {
        cell.detail = Some(detail);
    }
    cell
}

/// `blk_discard_reads_zero`: whether discarded blocks read back as zeros.
/// The discard refused → `unsupported` (needs `blk_discard`); zeros →
/// `native`; the pattern still there → `degraded` (the device accepts the
/// discard and keeps the data: a copy must not make holes with it); a mix →
/// `degraded` too.
pub fn discard_reads_zero(result: Result<ReadBack, Errno>, discard_cell: &Cell) -> Cell {
    let verified_by = "pattern written and synced, ioctl(BLKDISCARD), read back";
    match result {
        Err(_) => needs("blk_discard", discard_cell, verified_by),
        Ok(ReadBack::Zeros) => Cell::native(verified_by),
        Ok(ReadBack::OldData) => Cell::degraded(
            "BLKDISCARD succeeded but the old data reads back: discard cannot make holes here",
            verified_by,
        ),
        Ok(ReadBack::Mixed) => Cell::degraded(
            "BLKDISCARD succeeded but only part of the range reads back as zeros",
            verified_by,
        ),
    }
}

/// `blk_zeroout`, `blk_zero_range` and `blk_zeroout_unmap`: a call that
/// must leave zeros. Refused → `unsupported`; zeros → `native`, but
/// `degraded` when `offloaded` is false (no WRITE ZEROES on the device:
/// the kernel wrote zero pages, which costs the full write and allocates
/// on a thin device); anything but zeros → `degraded`, naming it (a call
/// that succeeds and leaves data behind is never `native`).
pub fn zeroing(
    call: &str,
    result: Result<ReadBack, Errno>,
    offloaded: bool,
    detail: Option<String>,
) -> Cell {
    let verified_by = format!("pattern written and synced, {call}, read back zeros");
    let observation = match result {
        Err(errno) => Observation::refused(call, errno),
        Ok(ReadBack::Zeros) if offloaded => Observation::verified(),
        Ok(ReadBack::Zeros) => Observation::worked(vec![Shortfall::new(
            "the device has no WRITE ZEROES (write_zeroes_max_bytes 0): the kernel wrote zero pages",
        )]),
        Ok(ReadBack::OldData) => Observation::worked(vec![Shortfall::new(format!(
            "{call} succeeded but the old data reads back"
        ))]),
        Ok(ReadBack::Mixed) => Observation::worked(vec![Shortfall::new(format!(
            "{call} succeeded but only part of the range reads back as zeros"
        ))]),
    };
    let mut trial = Trial::new(observation, verified_by);
    trial.detail = detail;
    classify(trial)
}

/// Runs the block-device trials on `device` inside `scratch` and
/// classifies every capability of [`BLOCK_CAPABILITIES`].
///
/// **Destroys the data in `scratch`**: each trial writes a pattern there,
/// then discards or zeroes it. The range must be inside the device and
/// hold at least two discard granules of 64 KiB or more; the device is
/// opened `O_EXCL`, so a mounted or otherwise claimed device is refused.
///
/// The report's [`FsInfo`] describes the device: `fs_type` `"blockdev"`,
/// `block_size` the logical block size, `directory` and `mount_source`
/// the device path, `device` its `major:minor`.
///
/// # Errors
/// [`CapsError::Inspect`] when the device cannot be opened or is not a
/// block device; [`CapsError::Scratch`] when the pattern cannot be written,
/// synced or read back, or `scratch` is too small or outside the device.
pub fn probe_block_device(device: &Path, scratch: Range<u64>) -> Result<CapsReport, CapsError> {
    let trial = crate::trials::block::Device::open(device, scratch)?;
    let limits = trial.limits;
    let discarded = trial.run(crate::trials::block::Op::Discard)?;
    let discard_cell = discard(discarded, &limits);
    let reads_zero = discard_reads_zero(discarded, &discard_cell);
    let offloaded = limits.write_zeroes_max_bytes != Some(0);
    let wz_detail = limits
        .write_zeroes_max_bytes
        .map(|b| format!("write_zeroes_max_bytes={b}"));
    let unmap_detail = match (
        limits.write_zeroes_max_bytes,
        limits.write_zeroes_unmap_max_bytes,
    ) {
        (Some(w), Some(u)) => Some(format!(
            "write_zeroes_max_bytes={w}, write_zeroes_unmap_max_bytes={u}"
        )),
        (w, _) => w.map(|w| format!("write_zeroes_max_bytes={w}")),
    };
    let zeroout = zeroing(
        "ioctl(BLKZEROOUT)",
        trial.run(crate::trials::block::Op::ZeroOut)?,
        offloaded,
        wz_detail.clone(),
    );
    let zero_range = zeroing(
        "fallocate(ZERO_RANGE)",
        trial.run(crate::trials::block::Op::ZeroRange)?,
        offloaded,
        wz_detail,
    );
    // PUNCH_HOLE has no fallback in the kernel: when it works, the device
    // did WRITE ZEROES itself.
    let unmap = zeroing(
        "fallocate(PUNCH_HOLE)",
        trial.run(crate::trials::block::Op::PunchHole)?,
        true,
        unmap_detail,
    );
    let capabilities: BTreeMap<String, Cell> = [
        ("blk_discard", discard_cell),
        ("blk_discard_reads_zero", reads_zero),
        ("blk_zero_range", zero_range),
        ("blk_zeroout", zeroout),
        ("blk_zeroout_unmap", unmap),
    ]
    .into_iter()
    .map(|(n, c)| (n.to_owned(), c))
    .collect();
    let path = device.display().to_string();
    Ok(CapsReport {
        filesystem: FsInfo {
            fs_type: "blockdev".into(),
            magic: "0x0".into(),
            mount_fs_type: None,
            block_size: trial.block,
            directory: path.clone(),
            mount_point: None,
            mount_source: Some(path),
            mount_options: None,
            super_options: None,
            device: trial.rdev.clone(),
            mount_id: None,
            dio_mem_align: None,
            dio_offset_align: None,
            dio_read_offset_align: None,
            kernel_release: crate::fsinfo::kernel_release(),
            scratch: format!("range {}..{}", trial.range.start, trial.range.end),
            cross_fs_peer: None,
        },
        capabilities,
        not_tried: BTreeMap::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Support;

    fn limits(discard_max: u64, wz_max: u64) -> QueueLimits {
        QueueLimits {
            discard_max_bytes: Some(discard_max),
            write_zeroes_max_bytes: Some(wz_max),
            ..QueueLimits::default()
        }
    }

    #[test]
    fn read_back_tells_zeros_from_old_data_from_a_mix() {
        let pattern = [7u8, 8, 9, 10];
        assert_eq!(ReadBack::of(&[0; 4], &pattern), ReadBack::Zeros);
        assert_eq!(ReadBack::of(&pattern, &pattern), ReadBack::OldData);
        assert_eq!(ReadBack::of(&[0, 0, 9, 10], &pattern), ReadBack::Mixed);
    }

    #[test]
    fn a_discard_that_keeps_the_data_is_caught() {
        // qemu-nbd --discard=ignore: the ioctl succeeds, the data stays.
        let d = discard(Ok(ReadBack::OldData), &limits(1 << 30, 0));
        assert_eq!(d.support, Support::Native);
        assert!(d.detail.as_deref().unwrap().contains("discard_max_bytes"));
        let z = discard_reads_zero(Ok(ReadBack::OldData), &d);
        assert_eq!(z.support, Support::Degraded);
        assert!(z.reason.unwrap().contains("old data reads back"));
        let z = discard_reads_zero(Ok(ReadBack::Mixed), &d);
        assert_eq!(z.support, Support::Degraded);
        let z = discard_reads_zero(Ok(ReadBack::Zeros), &d);
        assert_eq!(z.support, Support::Native);
    }

    #[test]
    fn a_refused_discard_is_unsupported_and_says_what_the_queue_said() {
        let d = discard(Err(Errno::OPNOTSUPP), &limits(0, 0));
        assert_eq!(d.support, Support::Unsupported);
        assert_eq!(d.errno.as_deref(), Some("EOPNOTSUPP"));
        assert!(d.reason.as_deref().unwrap().contains("discard_max_bytes 0"));
        let z = discard_reads_zero(Err(Errno::OPNOTSUPP), &d);
        assert_eq!(z.support, Support::Unsupported);
        assert!(z.reason.unwrap().contains("blk_discard is unsupported"));
    }

    #[test]
    fn zeroing_without_write_zeroes_is_degraded_and_leftover_data_never_native() {
        let c = zeroing("ioctl(BLKZEROOUT)", Ok(ReadBack::Zeros), true, None);
        assert_eq!(c.support, Support::Native);
        let c = zeroing("ioctl(BLKZEROOUT)", Ok(ReadBack::Zeros), false, None);
        assert_eq!(c.support, Support::Degraded);
        assert!(c.reason.unwrap().contains("zero pages"));
        for rb in [ReadBack::OldData, ReadBack::Mixed] {
            let c = zeroing("fallocate(PUNCH_HOLE)", Ok(rb), true, None);
            assert_eq!(c.support, Support::Degraded, "{rb:?}");
        }
        let c = zeroing(
            "fallocate(PUNCH_HOLE)",
            Err(Errno::OPNOTSUPP),
            true,
            Some("write_zeroes_max_bytes=0".into()),
        );
        assert_eq!(c.support, Support::Unsupported);
        assert_eq!(c.errno.as_deref(), Some("EOPNOTSUPP"));
        assert_eq!(c.detail.as_deref(), Some("write_zeroes_max_bytes=0"));
        // An I/O error is not a missing feature.
        let c = zeroing("ioctl(BLKZEROOUT)", Err(Errno::IO), true, None);
        assert!(c.reason.unwrap().contains("trial failed"));
    }

    #[test]
    fn a_regular_file_is_refused() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let e = probe_block_device(f.path(), 0..1 << 20).unwrap_err();
        assert_eq!(e.errno(), Some(Errno::NOTBLK));
    }
}
