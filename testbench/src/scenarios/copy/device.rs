//! Copies onto block devices (a fresh loop device per scenario) and into a
//! filesystem filled to a few MiB (ENOSPC).

use super::source;
use super::support::*;
use crate::fixture::LoopImage;
use crate::scenario::{Ctx, ScenarioResult, Verdict};
use crate::skip;
use anyhow::{Context, bail, ensure};
use rustix::io::Errno;
use sparsekit_copy::{CopyError, CopyOptions, DestinationKind, HoleMethod, Staging};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

const FILL: u8 = 0xEE;

/// A loop device of `size` bytes, every byte `FILL`.
fn filled_device(size: u64) -> anyhow::Result<LoopImage> {
    let dev = LoopImage::create("copy-dev", size, &[])?;
    let f = OpenOptions::new().write(true).open(dev.device())?;
    let chunk = vec![FILL; 1 << 20];
    for off in (0..size).step_by(1 << 20) {
        f.write_all_at(&chunk[..(size - off).min(1 << 20) as usize], off)?;
    }
    f.sync_all()?;
    Ok(dev)
}

fn untouched_from(dev: &Path, from: u64, to: u64) -> anyhow::Result<()> {
    let f = File::open(dev)?;
    let mut buf = vec![0u8; (to - from) as usize];
    f.read_exact_at(&mut buf, from)?;
    if let Some(i) = buf.iter().position(|&b| b != FILL) {
        bail!(
            "{} changed at {} (past the copied range)",
            dev.display(),
            from + i as u64
        );
    }
    Ok(())
}

fn device_copy(ctx: &Ctx<'_>, holes: HoleMethod) -> ScenarioResult {
    let (src, _) = source(ctx)?;
    let before = fingerprint(&src)?;
    let size = std::fs::metadata(&src)?.len();
    let dev_size = 48 << 20;
    let dev = filled_device(dev_size)?;
    let r = CopyOptions::new()
        .hole_method(holes)
        .copy(&src, dev.device())?;
    ensure!(
        r.destination == DestinationKind::BlockDevice && r.staging == Staging::InPlace,
        "{r:?}"
    );
    same_prefix(&src, dev.device(), size).context("device content")?;
    // The source's last sector is partial: the rest of it and everything
    // after stay as they were.
    untouched_from(dev.device(), size, dev_size)?;
    ensure!(fingerprint(&src)? == before, "the source changed");
    let punched = |from: &str| r.fallbacks.iter().any(|f| f.strategy == from);
    match (holes, r.holes) {
        (HoleMethod::Auto, Some(used @ (HoleMethod::Discard | HoleMethod::Punch))) => {
            // Discard comes first; punch only after it was left.
            ensure!(
                used == HoleMethod::Discard || punched("holes discard"),
                "{r:?}"
            );
            // BLKDISCARD and PUNCH_HOLE on a loop device punch the backing
            // file: the holes gave their space back.
            let backing = allocated(dev.image())?;
            let limit = allocated(&src)? + (dev_size - size) + (2 << 20);
            ensure!(
                backing <= limit,
                "backing image keeps {backing} bytes, limit {limit} ({r:?})"
            );
        }
        (HoleMethod::Auto, Some(HoleMethod::ZeroOut)) => {
            ensure!(punched("holes punch"), "{r:?}");
        }
        (HoleMethod::Auto, Some(HoleMethod::WriteZeros)) => {
            ensure!(punched("holes punch") && punched("holes zero_out"), "{r:?}");
        }
        (HoleMethod::Auto, other) => bail!("holes made with {other:?} ({r:?})"),
        (forced, used) => ensure!(used == Some(forced), "{r:?}"),
    }
    Ok(Verdict::Pass)
}

pub(super) fn block_device(ctx: &Ctx<'_>) -> ScenarioResult {
    device_copy(ctx, HoleMethod::Auto)
}

pub(super) fn block_device_write_zeros(ctx: &Ctx<'_>) -> ScenarioResult {
    device_copy(ctx, HoleMethod::WriteZeros)
}

/// A block device as the source: mapped as all data, its zero blocks
/// become holes with `--sparse always`, the copy reads back identical.
pub(super) fn block_device_source(ctx: &Ctx<'_>) -> ScenarioResult {
    let (img, dst) = source(ctx)?;
    let size = std::fs::metadata(&img)?.len().next_multiple_of(1 << 20);
    let dev = LoopImage::create("copy-src", size, &[])?;
    {
        let (from, to) = (
            File::open(&img)?,
            OpenOptions::new().write(true).open(dev.device())?,
        );
        let mut buf = vec![0u8; 1 << 20];
        for off in (0..size).step_by(1 << 20) {
            let n = from.read_at(&mut buf, off)?;
            buf[n..].fill(0);
            to.write_all_at(&buf, off)?;
        }
        to.sync_all()?;
    }
    let opts = CopyOptions::new().sparse(sparsekit_copy::SparseMode::Always);
    let r = opts.copy(dev.device(), &dst)?;
    ensure!(r.size == size, "{r:?}");
    same_prefix(dev.device(), &dst, size)?;
    ensure!(std::fs::metadata(&dst)?.len() == size, "size");
    ensure!(r.map_method == sparsekit_extents::Method::AllData, "{r:?}");
    // The image's holes (15 MiB) and written zeros read as zeros on the
    // device: most of them must be holes again.
    ensure!(r.zero_bytes_detected >= 12 << 20, "{r:?}");
    if zeros_take_space(ctx.dir())? {
        ensure!(allocated(&dst)? <= allocated(&img)? + (1 << 20), "{r:?}");
    }
    Ok(Verdict::Pass)
}

/// A device smaller than the source, and the device holding the source's
/// own filesystem: refused as usage errors, nothing written.
pub(super) fn block_device_refused(ctx: &Ctx<'_>) -> ScenarioResult {
    let (src, _) = source(ctx)?;
    let small = filled_device(8 << 20)?;
    let e = CopyOptions::new().copy(&src, small.device()).unwrap_err();
    ensure!(
        matches!(e, CopyError::DestinationTooSmall { .. }) && e.is_usage_error(),
        "{e:?}"
    );
    untouched_from(small.device(), 0, 8 << 20)?;
    let Some(own) = ctx.fs().device() else {
        skip!(
            "too-small device refused; {} has no block device to refuse",
            ctx.fs_name()
        );
    };
    // Found from st_dev where the filesystem reports its device there; on
    // btrfs (anonymous st_dev) the O_EXCL open refuses the mounted device.
    let e = CopyOptions::new().copy(&src, own).unwrap_err();
    let refused = match &e {
        CopyError::DestinationHoldsSource { .. } => e.is_usage_error(),
        CopyError::Io {
            op: "open", errno, ..
        } => *errno == Errno::BUSY,
        _ => false,
    };
    ensure!(refused, "{e:?}");
    Ok(Verdict::Pass)
}

/// Fills the filesystem of `dir` until allocation fails, then frees
/// `leave` bytes: whatever the filesystem reserves or reports, exactly
/// about `leave` bytes can be written afterwards.
fn fill(dir: &Path, leave: u64) -> anyhow::Result<()> {
    let filler = File::create(dir.join("filler"))?;
    let full = |e: &std::io::Error| matches!(e.raw_os_error(), Some(c) if c == Errno::NOSPC.raw_os_error() || c == Errno::DQUOT.raw_os_error());
    let mut len = 0u64;
    let mut step = 256u64 << 20;
    while step >= 64 << 10 {
        match rustix::fs::fallocate(&filler, rustix::fs::FallocateFlags::empty(), len, step) {
            Ok(()) => len += step,
            Err(Errno::NOSPC | Errno::DQUOT) => step /= 2,
            // No fallocate here (block-mapped ext4 files…): writes do it.
            Err(Errno::OPNOTSUPP) => break,
            Err(e) => return Err(e).context("fill: fallocate"),
        }
    }
    // Top up with data: some filesystems keep space fallocate cannot take.
    let chunk = vec![0x55u8; 64 << 10];
    loop {
        match filler.write_all_at(&chunk, len) {
            Ok(()) => len += chunk.len() as u64,
            Err(e) if full(&e) => break,
            Err(e) => return Err(e).context("fill: write"),
        }
        if len % (64 << 20) == 0 {
            // Surface delayed-allocation ENOSPC before going on.
            if let Err(e) = filler.sync_data() {
                if full(&e) {
                    break;
                }
                return Err(e).context("fill: fsync");
            }
        }
    }
    let _ = filler.sync_all();
    filler.set_len(len.saturating_sub(leave))?;
    filler.sync_all()?;
    rustix::fs::sync();
    Ok(())
}

/// ENOSPC mid-copy: exit 1 naming the destination and the errno, the
/// source untouched, no destination (new path, in place), and an existing
/// destination left exactly as it was.
pub(super) fn enospc(ctx: &Ctx<'_>) -> ScenarioResult {
    let (src, dst) = source(ctx)?;
    let before = fingerprint(&src)?;
    let old = ctx.path("old.img");
    std::fs::write(&old, b"an older image that must survive")?;
    let old_before = fingerprint(&old)?;
    // The source has ~9 MiB of data; leave room for a third of it.
    fill(ctx.dir(), 3 << 20)?;
    let bin = crate::bench::measure::sparsekit_bin().ok();
    let cases: [(&Path, &[&str]); 3] = [(&dst, &[]), (&dst, &["--in-place"]), (&old, &[])];
    for (target, extra) in cases {
        let what = format!("copy to {} {extra:?}", target.display());
        match &bin {
            Some(bin) => {
                // No reflink: on xfs and btrfs it would need no space.
                let o = Command::new(bin)
                    .args(["copy", "--reflink", "never"])
                    .arg(&src)
                    .arg(target)
                    .args(extra)
                    .output()
                    .context("run sparsekit")?;
                let stderr = String::from_utf8_lossy(&o.stderr);
                ensure!(
                    o.status.code() == Some(1),
                    "{what}: exit {:?}: {stderr}",
                    o.status.code()
                );
                let name = target.file_name().unwrap().to_string_lossy();
                ensure!(
                    stderr.contains(&*name)
                        && (stderr.contains("ENOSPC") || stderr.contains("EDQUOT")),
                    "{what}: unclear message: {stderr}"
                );
            }
            None => {
                let staging = if extra.is_empty() {
                    Staging::Auto
                } else {
                    Staging::InPlace
                };
                let e = CopyOptions::new()
                    .staging(staging)
                    .reflink(sparsekit_copy::ReflinkMode::Never)
                    .copy(&src, target)
                    .unwrap_err();
                ensure!(
                    matches!(e.errno(), Some(Errno::NOSPC | Errno::DQUOT)),
                    "{what}: {e:?}"
                );
            }
        }
        ensure!(fingerprint(&src)? == before, "{what}: the source changed");
    }
    ensure!(!dst.exists(), "a destination was left behind");
    ensure!(
        fingerprint(&old)? == old_before,
        "the existing destination changed"
    );
    let extra = leftovers(ctx.dir(), &[&src, &old, &ctx.path("filler")])?;
    ensure!(extra.is_empty(), "left behind: {extra:?}");
    std::fs::remove_file(ctx.path("filler"))?;
    if bin.is_none() {
        skip!(
            "library checks passed; the CLI's exit code was not checked: build it with `cargo build --release -p sparsekit-cli`"
        );
    }
    Ok(Verdict::Pass)
}

/// `destination_is_zero` onto a device: the source's holes are skipped,
/// not zeroed or discarded. The device is filled with `FILL` (the caller's
/// word is deliberately false here), so a hole left untouched shows as
/// `FILL` where any hole method would have made zeros.
pub(super) fn block_device_destination_is_zero(ctx: &Ctx<'_>) -> ScenarioResult {
    let src = ctx.path("zero-src.img");
    let f = File::create(&src)?;
    let data: Vec<u8> = (0..2 << 20).map(|i: u32| (i % 251) as u8 | 1).collect();
    f.write_all_at(&data, 0)?;
    f.write_all_at(&data, 6 << 20)?;
    f.sync_all()?;
    let dev = filled_device(16 << 20)?;
    let r = CopyOptions::new()
        .destination_is_zero(true)
        .copy(&src, dev.device())?;
    ensure!(r.destination == DestinationKind::BlockDevice, "{r:?}");
    let d = File::open(dev.device())?;
    let mut buf = vec![0u8; 2 << 20];
    for off in [0u64, 6 << 20] {
        d.read_exact_at(&mut buf, off)?;
        ensure!(buf == data, "data at {off} differs ({r:?})");
    }
    // The hole 2..6 MiB: skipped, so still the old fill.
    untouched_from(dev.device(), 2 << 20, 6 << 20).context("the hole was cleared")?;
    ensure!(r.zero_bytes_written == 0, "{r:?}");
    Ok(Verdict::Pass)
}
