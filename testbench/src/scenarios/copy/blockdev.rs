//! The `blockdev/` scenarios: they run only on the block-device
//! definitions (`loop`, `nbd`, `nbd-discard-ignore`), on the device the
//! fixture made. A copy onto the device makes its holes with the cheapest
//! method this device was seen to zero with, says which, and reads back
//! equal; discard forced where the device keeps discarded data fails
//! without leaving a complete-looking device; the fixture's guard undoes
//! the device when a scenario panics.

use super::support::*;
use crate::runner::BLOCK_SCENARIOS;
use crate::scenario::{Ctx, Scenario, ScenarioResult, Verdict};
use crate::skip;
use anyhow::{Context, bail, ensure};
use sparsekit_caps::{CapsReport, Support};
use sparsekit_copy::{CopyError, CopyOptions, CopyReport, DestinationKind, HoleMethod};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const FILL: u8 = 0xEE;

/// The scenarios of this module.
pub fn scenarios() -> Vec<Scenario> {
    let v = vec![
        Scenario::new("blockdev/copy_auto", copy_auto),
        Scenario::new(
            "blockdev/verify_smaller_source_leaves_the_rest",
            verify_smaller_source_leaves_the_rest,
        ),
        Scenario::new("blockdev/copy_cli_reports_holes", copy_cli_reports_holes),
        Scenario::new("blockdev/discard_lie_falls_back", discard_lie_falls_back),
        Scenario::new("blockdev/discard_forced", discard_forced),
        Scenario::new("blockdev/zero_out_forced", zero_out_forced),
        Scenario::new("blockdev/guard_undoes_device", guard_undoes_device),
        Scenario::new("blockdev/sigterm_undoes_device", sigterm_undoes_device),
    ];
    debug_assert!(v.iter().all(|s| s.name.starts_with(BLOCK_SCENARIOS)));
    v
}

/// What `HoleMethod::Auto` must pick on a device with these caps: discard
/// where discarded blocks read back as zeros, else WRITE ZEROES with unmap,
/// else BLKZEROOUT (which always works on a writable device).
pub fn expected_hole_method(caps: &CapsReport) -> HoleMethod {
    let native = |c: &str| caps.support(c) == Some(Support::Native);
    if native("blk_discard_reads_zero") {
        HoleMethod::Discard
    } else if native("blk_zeroout_unmap") {
        HoleMethod::Punch
    } else {
        HoleMethod::ZeroOut
    }
}

/// The device's size (its image's).
fn device_size(ctx: &Ctx<'_>) -> anyhow::Result<u64> {
    let image = ctx.fs().device_image().context("no image")?;
    Ok(std::fs::metadata(image)?.len())
}

/// The device, its caps (trials on its first MiB), then every byte set to
/// `FILL`, so holes must really be cleared.
fn prepare(ctx: &Ctx<'_>) -> anyhow::Result<(PathBuf, CapsReport)> {
    let dev = ctx
        .fs()
        .device()
        .context("a block definition without a device")?
        .to_owned();
    let caps = sparsekit_caps::probe_block_device(&dev, 0..1 << 20)?;
    let f = OpenOptions::new().write(true).open(&dev)?;
    let chunk = vec![FILL; 1 << 20];
    let size = device_size(ctx)?;
    for off in (0..size).step_by(1 << 20) {
        f.write_all_at(&chunk[..(size - off).min(1 << 20) as usize], off)?;
    }
    f.sync_all()?;
    Ok((dev, caps))
}

/// The standard source (~24 MiB of data, holes, zeros, an unaligned
/// piece), extended by a hole to the device's size, so the whole device is
/// compared and the largest hole is the last.
fn source(ctx: &Ctx<'_>) -> anyhow::Result<(PathBuf, u64)> {
    let src = ctx.path("disk.img");
    make_file(&src, &standard_layout())?;
    let size = device_size(ctx)?;
    File::options().write(true).open(&src)?.set_len(size)?;
    Ok((src, size))
}

/// Whether the fixture's device gives freed blocks back to its image (a
/// loop device punches its backing file; qemu-nbd only with
/// `--discard=unmap`).
fn unmaps_to_image(ctx: &Ctx<'_>) -> bool {
    let def = ctx.fs().def();
    def.device.as_deref() == Some("loop") || def.nbd_options.iter().any(|o| o == "--discard=unmap")
}

/// Content equal (a read of both), and where the method deallocates and the device
/// passes that on, the image no larger than the data.
fn check_device(
    ctx: &Ctx<'_>,
    src: &Path,
    dev: &Path,
    size: u64,
    r: &CopyReport,
) -> anyhow::Result<()> {
    ensure!(r.destination == DestinationKind::BlockDevice, "{r:?}");
    same_prefix(src, dev, size).context("device content")?;
    let frees = matches!(r.holes, Some(HoleMethod::Discard | HoleMethod::Punch));
    if let (true, true, Some(image)) = (frees, unmaps_to_image(ctx), ctx.fs().device_image()) {
        let image_bytes = allocated(image)?;
        // The source's data, the caps trials' MiB, slack.
        let limit = allocated(src)? + (3 << 20);
        ensure!(
            image_bytes <= limit,
            "holes made with {:?} left {image_bytes} bytes allocated in {}, limit {limit}",
            r.holes,
            image.display()
        );
    }
    Ok(())
}

/// `copy --verify` of an image smaller than the device: the copy is the
/// device's first bytes, the verify compares those (a whole-device compare
/// saw "different sizes", failed a good copy and zeroed its header), and
/// the rest of the device keeps its old content.
fn verify_smaller_source_leaves_the_rest(ctx: &Ctx<'_>) -> ScenarioResult {
    let (_, dev_size) = source(ctx)?;
    let src = ctx.path("half.img");
    make_file(&src, &standard_layout())?;
    let size = dev_size / 2;
    File::options().write(true).open(&src)?.set_len(size)?;
    let (dev, _) = prepare(ctx)?;
    let r = CopyOptions::new()
        .verify(true)
        .copy(&src, &dev)
        .context("copy --verify onto a larger device")?;
    ensure!(r.verified.is_some(), "no verify report: {r:?}");
    same_prefix(&src, &dev, size).context("device content")?;
    let mut tail = vec![0u8; 1 << 20];
    let at = dev_size - tail.len() as u64;
    File::open(&dev)?.read_exact_at(&mut tail, at)?;
    ensure!(
        tail.iter().all(|&b| b == FILL),
        "the device past the copy was changed"
    );
    Ok(Verdict::Pass)
}

fn copy_auto(ctx: &Ctx<'_>) -> ScenarioResult {
    let (src, size) = source(ctx)?;
    let (dev, caps) = prepare(ctx)?;
    let r = CopyOptions::new().verify(true).copy(&src, &dev)?;
    let want = expected_hole_method(&caps);
    ensure!(
        r.holes == Some(want),
        "holes made with {:?}, the caps say {want} ({r:?})",
        r.holes
    );
    let tried_discard = r
        .fallbacks
        .iter()
        .any(|f| f.strategy.starts_with("holes discard"));
    ensure!(
        tried_discard == (want != HoleMethod::Discard),
        "discard fallback recorded: {tried_discard} ({r:?})"
    );
    check_device(ctx, &src, &dev, size, &r)?;
    Ok(Verdict::Pass)
}

/// The CLI says which method made the holes: `"holes"` and the fallbacks
/// in `--json`, the summary line and the fallback note under `-v`.
fn copy_cli_reports_holes(ctx: &Ctx<'_>) -> ScenarioResult {
    let bin = crate::bench::measure::sparsekit_bin()?;
    let (src, size) = source(ctx)?;
    let (dev, caps) = prepare(ctx)?;
    let want = expected_hole_method(&caps);
    let run = |args: &[&str]| -> anyhow::Result<(String, String)> {
        let out = std::process::Command::new(&bin)
            .arg("copy")
            .args(args)
            .arg(&src)
            .arg(&dev)
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        ensure!(
            out.status.success(),
            "sparsekit copy {args:?}: {}: {stderr}",
            out.status
        );
        Ok((String::from_utf8_lossy(&out.stdout).into_owned(), stderr))
    };
    let (stdout, _) = run(&["--json"])?;
    let json: serde_json::Value = serde_json::from_str(&stdout)?;
    ensure!(
        json["holes"] == want.as_str() && json["destination_kind"] == "block_device",
        "--json says holes {}, the caps say {want}: {json}",
        json["holes"]
    );
    let left_discard = json["fallbacks"].as_array().is_some_and(|f| {
        f.iter().any(|f| {
            f["strategy"]
                .as_str()
                .is_some_and(|s| s.starts_with("holes discard"))
        })
    });
    ensure!(
        left_discard == (want != HoleMethod::Discard),
        "fallbacks: {json}"
    );
    same_prefix(&src, &dev, size)?;
    let (stdout, stderr) = run(&["-v"])?;
    let all = format!("{stdout}{stderr}");
    ensure!(
        all.contains(&format!("holes {want}")),
        "no \"holes {want}\" in: {all}"
    );
    // The -v note: `DEV: holes discard…: EOPNOTSUPP…, fell back`.
    let noted = all
        .lines()
        .any(|l| l.contains("holes discard") && l.contains("fell back"));
    ensure!(
        noted == (want != HoleMethod::Discard),
        "-v and the discard fallback: {all}"
    );
    // `sparsekit compare` agrees: same bytes, exit 0.
    let out = std::process::Command::new(&bin)
        .arg("compare")
        .arg(&src)
        .arg(&dev)
        .output()?;
    ensure!(
        out.status.success(),
        "sparsekit compare: {}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(Verdict::Pass)
}

/// Where the device accepts a discard and keeps the data, `Auto` tries
/// discard on the first hole, sees the old data and zeroes every hole with
/// the next method, recording why.
fn discard_lie_falls_back(ctx: &Ctx<'_>) -> ScenarioResult {
    let (src, size) = source(ctx)?;
    let (dev, caps) = prepare(ctx)?;
    match caps.support("blk_discard_reads_zero") {
        Some(Support::Degraded) => {}
        other => {
            skip!("discard does not keep data on this device (blk_discard_reads_zero {other:?})")
        }
    }
    let r = CopyOptions::new().copy(&src, &dev)?;
    ensure!(
        r.fallbacks
            .iter()
            .any(|f| f.strategy == "holes discard (old data read back)"),
        "{r:?}"
    );
    ensure!(
        matches!(r.holes, Some(HoleMethod::Punch | HoleMethod::ZeroOut)),
        "{r:?}"
    );
    check_device(ctx, &src, &dev, size, &r)?;
    Ok(Verdict::Pass)
}

/// Discard forced: where it zeroes, the copy is exact with every hole
/// discarded; where the device keeps the data, `DiscardKeepsData` and a
/// device that does not read back as the source; without discard, the
/// errno.
fn discard_forced(ctx: &Ctx<'_>) -> ScenarioResult {
    let (src, size) = source(ctx)?;
    let (dev, caps) = prepare(ctx)?;
    let res = CopyOptions::new()
        .hole_method(HoleMethod::Discard)
        .copy(&src, &dev);
    match (caps.support("blk_discard_reads_zero"), res) {
        (Some(Support::Native), Ok(r)) => {
            ensure!(r.holes == Some(HoleMethod::Discard), "{r:?}");
            check_device(ctx, &src, &dev, size, &r)?;
        }
        (Some(Support::Degraded), Err(CopyError::DiscardKeepsData { offset, .. })) => {
            ensure!(offset < size, "old data reported at {offset}");
            ensure!(
                same_prefix(&src, &dev, size).is_err(),
                "a failed copy left a device that reads back as the source"
            );
        }
        (Some(Support::Unsupported), Err(CopyError::HoleMethodUnsupported { errno, .. })) => {
            let cell = caps.get("blk_discard").map(|c| c.errno.clone());
            ensure!(
                cell == Some(Some(sparsekit_sys::ErrnoName(errno).symbolic())),
                "copy saw {errno:?}, caps {cell:?}"
            );
        }
        (cell, res) => bail!("blk_discard_reads_zero {cell:?}, forced discard gave {res:?}"),
    }
    Ok(Verdict::Pass)
}

/// BLKZEROOUT forced: always there on a writable device.
fn zero_out_forced(ctx: &Ctx<'_>) -> ScenarioResult {
    let (src, size) = source(ctx)?;
    let (dev, _) = prepare(ctx)?;
    let r = CopyOptions::new()
        .hole_method(HoleMethod::ZeroOut)
        .copy(&src, &dev)?;
    ensure!(r.holes == Some(HoleMethod::ZeroOut), "{r:?}");
    check_device(ctx, &src, &dev, size, &r)?;
    Ok(Verdict::Pass)
}

/// A second device of the same definition, made inside a panicking
/// closure: its guard disconnects / detaches it, stops qemu-nbd and
/// removes its directory during the unwind.
fn guard_undoes_device(ctx: &Ctx<'_>) -> ScenarioResult {
    let def = ctx.fs().def().clone();
    let seen = std::sync::Mutex::new(None);
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let fs = crate::fixture::MountedFs::mount(&def).expect("make a second device");
        let dev = fs.device().map(Path::to_owned);
        let image = fs.device_image().map(Path::to_owned);
        *seen.lock().unwrap() = Some((dev, image, fs.nbd().map(crate::nbd::NbdDevice::server_pid)));
        panic!("a scenario panics while the device is in use");
    }));
    ensure!(panicked.is_err(), "the closure did not panic");
    let Some((Some(dev), Some(image), server)) = seen.into_inner().unwrap() else {
        bail!("no device was made");
    };
    ensure!(!image.exists(), "{} left behind", image.display());
    ensure!(
        !crate::fixture::is_attached(&dev, &image),
        "{} still attached",
        dev.display()
    );
    if let Some(pid) = server {
        ensure!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "qemu-nbd (pid {pid}) still running"
        );
        ensure!(
            crate::nbd::server_of(&dev).is_none(),
            "{} still connected",
            dev.display()
        );
    }
    Ok(Verdict::Pass)
}

/// A child bench makes a device of the same definition and is sent
/// SIGTERM: its handler disconnects / detaches the device and stops
/// qemu-nbd; the leak check (which looks for the child's qemu-nbd too)
/// finds nothing.
fn sigterm_undoes_device(ctx: &Ctx<'_>) -> ScenarioResult {
    let sig = rustix::process::Signal::TERM.as_raw();
    crate::selftest::check(ctx.fs().def(), crate::selftest::Ending::Signal(sig))
        .map_err(|e| anyhow::anyhow!(e))?;
    Ok(Verdict::Pass)
}
