//! sparsekit-probe on a real filesystem: every statx field the kernel
//! reports here is checked against what it claims (O_DIRECT at the reported
//! alignment, the mount id of mountinfo, the creation time of a new file),
//! each strategy forced in turn; plus the dead-mount proof on a frozen FUSE
//! daemon (see [`deadmount`]) and the statx fallback under a seccomp
//! filter (see [`seccomp`]).

pub mod deadmount;
pub mod fuse;
pub mod seccomp;
pub mod stalls;

use crate::scenario::{Ctx, Scenario, ScenarioResult, Verdict};
use crate::skip;
use anyhow::{Context, bail, ensure};
use rustix::io::Errno;
use sparsekit_probe::{
    Attribute, Fields, FileType, Metadata, MountId, ProbeError, ProbeOptions, Strategy, SyncMode,
    WorkerPool,
};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// The scenarios of this module.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "probe/statx_fields",
            run: statx_fields,
        },
        Scenario {
            name: "probe/dio_align_holds",
            run: dio_align_holds,
        },
        Scenario {
            name: "probe/mount_id_matches_mountinfo",
            run: mount_id_matches_mountinfo,
        },
        Scenario {
            name: "probe/mount_root_attribute",
            run: mount_root_attribute,
        },
        Scenario {
            name: "probe/fstatat_forced",
            run: fstatat_forced,
        },
        Scenario {
            name: "probe/auto_uses_statx",
            run: auto_uses_statx,
        },
        Scenario {
            name: "probe/sync_modes",
            run: sync_modes,
        },
        Scenario {
            name: "probe/timeout_mode_healthy",
            run: timeout_mode_healthy,
        },
        Scenario {
            name: "probe/errors_name_path_and_errno",
            run: errors_name_path_and_errno,
        },
        Scenario {
            name: "probe/fallback_under_seccomp",
            run: seccomp::fallback_under_seccomp,
        },
        Scenario {
            name: "probe/dead_fuse_mount",
            run: deadmount::dead_fuse_mount,
        },
        Scenario {
            name: "probe/dead_fuse_mount_cleanup_on_panic",
            run: deadmount::cleanup_on_panic,
        },
        Scenario {
            name: "probe/cli_timeouts_on_frozen_fuse",
            run: stalls::cli_timeouts_on_frozen_fuse,
        },
        Scenario {
            name: "probe/cli_timeouts_on_slow_fuse",
            run: stalls::cli_timeouts_on_slow_fuse,
        },
    ]
}

/// The optional (non-basic) fields, for reporting.
const OPTIONAL: Fields = Fields::KNOWN.difference(Fields::BASIC);

/// A file with 64 KiB of data, synced.
fn data_file(ctx: &Ctx<'_>, name: &str) -> anyhow::Result<File> {
    let f = ctx.create(name)?;
    f.write_all_at(&[0x5a; 65536], 0)?;
    f.sync_all()?;
    Ok(f)
}

/// Probes with statx forced; skips if statx itself is missing here.
macro_rules! statx_or_skip {
    ($opts:expr, $path:expr) => {
        match $opts.strategy(Strategy::Statx).probe_path($path) {
            Err(e) if e.errno() == Some(Errno::NOSYS) => skip!("statx: {e}"),
            r => r?,
        }
    };
}

fn check_basic_against_std(m: &Metadata, path: &Path) -> anyhow::Result<()> {
    let st = std::fs::metadata(path)?;
    ensure!(
        m.filled().contains(Fields::BASIC),
        "basic fields missing: {}",
        m.missing()
    );
    ensure!(
        m.ino() == Some(st.ino()),
        "ino {:?} vs {}",
        m.ino(),
        st.ino()
    );
    ensure!(
        m.size() == Some(st.size()),
        "size {:?} vs {}",
        m.size(),
        st.size()
    );
    ensure!(
        m.blocks() == Some(st.blocks()),
        "blocks {:?} vs {}",
        m.blocks(),
        st.blocks()
    );
    ensure!(m.mode() == Some(st.mode() & 0o7777), "mode");
    ensure!(m.nlink().map(u64::from) == Some(st.nlink()), "nlink");
    ensure!(
        m.uid() == Some(st.uid()) && m.gid() == Some(st.gid()),
        "uid/gid"
    );
    let mt = m.mtime().context("mtime")?;
    ensure!(
        (mt.sec, i64::from(mt.nsec)) == (st.mtime(), st.mtime_nsec()),
        "mtime {mt} vs {}.{}",
        st.mtime(),
        st.mtime_nsec()
    );
    ensure!(
        u64::from(m.dev().major) == u64::from(rustix::fs::major(st.dev()))
            && u64::from(m.dev().minor) == u64::from(rustix::fs::minor(st.dev())),
        "dev {} vs {:#x}",
        m.dev(),
        st.dev()
    );
    ensure!(m.blksize() as u64 == st.blksize(), "blksize");
    Ok(())
}

/// Every field: basic ones equal std's; optional ones present exactly as
/// the mask says, with values that make sense; the set found is printed.
fn statx_fields(ctx: &Ctx<'_>) -> ScenarioResult {
    let before = SystemTime::now() - Duration::from_secs(2);
    let f = data_file(ctx, "fields")?;
    let path = ctx.path("fields");
    let m = statx_or_skip!(ProbeOptions::new().fields(Fields::KNOWN), &path);
    ensure!(m.strategy() == Strategy::Statx && m.fallback().is_none());
    check_basic_against_std(&m, &path)?;
    ensure!(m.file_type() == Some(FileType::Regular));
    ensure!(
        m.raw_mask() & Fields::KNOWN.bits() == m.filled().bits(),
        "filled must be exactly the known bits of stx_mask"
    );
    if let Some(bt) = m.btime() {
        let bt = bt.to_system_time().context("btime out of range")?;
        let mt = m
            .mtime()
            .and_then(|t| t.to_system_time())
            .context("mtime")?;
        ensure!(
            bt >= before,
            "btime {bt:?} is before the file was created ({before:?})"
        );
        ensure!(
            bt <= mt + Duration::from_secs(1),
            "btime {bt:?} after mtime {mt:?}"
        );
    }
    if let Some(sv) = m.subvol() {
        ensure!(sv != 0, "subvol reported as 0");
        let other = data_file(ctx, "fields2")?;
        drop(other);
        let m2 = ProbeOptions::new()
            .fields(Fields::SUBVOL)
            .probe_path(ctx.path("fields2"))?;
        ensure!(
            m2.subvol() == Some(sv),
            "two files of one directory in different subvolumes"
        );
    }
    if let Some(a) = m.atomic_write() {
        if a.unit_max != 0 {
            ensure!(
                a.unit_min.is_power_of_two() && a.unit_min <= a.unit_max,
                "{a:?}"
            );
            ensure!(a.segments_max >= 1, "{a:?}");
        }
    }
    if let Some(attrs) = m.attributes() {
        // Only known attributes can be claimed as set.
        let unknown = attrs.set - attrs.supported;
        ensure!(
            unknown.is_empty(),
            "attributes set but not in the mask: {unknown:?}"
        );
    }
    drop(f);
    // MNT_ID_UNIQUE, when granted, replaces MNT_ID: ask for MNT_ID alone too.
    let alone = ProbeOptions::new()
        .fields(Fields::MNT_ID)
        .probe_path(&path)?;
    let reported = (m.filled() | alone.filled()) & OPTIONAL;
    println!(
        "    probe: {} statx reports: {} (not: {})",
        ctx.fs_name(),
        reported,
        OPTIONAL - reported
    );
    Ok(Verdict::Pass)
}

/// A Vec-backed buffer aligned to `align` (a power of two).
fn aligned(len: usize, align: usize) -> (Vec<u8>, usize) {
    let v = vec![0u8; len + align];
    let start = v.as_ptr().align_offset(align);
    (v, start)
}

/// If DIOALIGN is reported: an O_DIRECT read at the reported alignment
/// works, and one at half of it fails with EINVAL (when it is above 1).
fn dio_align_holds(ctx: &Ctx<'_>) -> ScenarioResult {
    drop(data_file(ctx, "dio")?);
    let path = ctx.path("dio");
    let m = statx_or_skip!(
        ProbeOptions::new().fields(Fields::DIOALIGN | Fields::DIO_READ_ALIGN),
        &path
    );
    let Some(dio) = m.dio_align() else {
        skip!("STATX_DIOALIGN not reported on {}", ctx.fs_name());
    };
    let f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc_o_direct())
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if !dio.supported() => skip!("DIOALIGN says no direct I/O, and open(O_DIRECT): {e}"),
        Err(e) => bail!("DIOALIGN {dio:?} but open(O_DIRECT) failed: {e}"),
    };
    if !dio.supported() {
        skip!(
            "DIOALIGN reports direct I/O unsupported (0) on {}",
            ctx.fs_name()
        );
    }
    let mem = dio.mem_align.max(1) as usize;
    let off = dio.offset_align as usize;
    let len = off.max(4096).next_multiple_of(off);
    let (mut v, start) = aligned(len, mem.max(4096));
    f.read_exact_at(&mut v[start..start + len], off as u64)
        .with_context(|| format!("O_DIRECT read of {len} at offset {off} with DIOALIGN {dio:?}"))?;
    ensure!(
        v[start..start + len].iter().all(|b| *b == 0x5a),
        "O_DIRECT read wrong data"
    );
    if off > 1 {
        match f.read_at(&mut v[start..start + len], (off / 2) as u64) {
            Err(e) if e.raw_os_error() == Some(Errno::INVAL.raw_os_error()) => {}
            other => bail!(
                "O_DIRECT read at offset {} (half of stx_dio_offset_align {off}) gave {other:?}, want EINVAL",
                off / 2
            ),
        }
    }
    if let Some(ralign) = m.dio_read_offset_align() {
        if ralign != 0 {
            let rlen = (ralign as usize)
                .max(4096)
                .next_multiple_of(ralign as usize);
            f.read_exact_at(&mut v[start..start + rlen.min(len)], u64::from(ralign))
                .with_context(|| format!("O_DIRECT read at stx_dio_read_offset_align {ralign}"))?;
        }
    }
    Ok(Verdict::Pass)
}

/// `O_DIRECT` for this architecture (rustix's value, as std wants an i32).
fn libc_o_direct() -> i32 {
    rustix::fs::OFlags::DIRECT.bits() as i32
}

/// The mount id /proc/self/mountinfo gives the mount at `mnt`.
fn mountinfo_id(mnt: &Path) -> anyhow::Result<u64> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let want = mnt.to_string_lossy();
    info.lines()
        .rev()
        .find(|l| l.split(' ').nth(4) == Some(&*want))
        .and_then(|l| l.split(' ').next()?.parse().ok())
        .with_context(|| format!("{} not in /proc/self/mountinfo", mnt.display()))
}

/// STATX_MNT_ID equals mountinfo's id; STATX_MNT_ID_UNIQUE, if granted, is
/// the same for two files of one mount and differs from another mount's.
fn mount_id_matches_mountinfo(ctx: &Ctx<'_>) -> ScenarioResult {
    drop(data_file(ctx, "mnt")?);
    let path = ctx.path("mnt");
    let m = statx_or_skip!(ProbeOptions::new().fields(Fields::MNT_ID), &path);
    let Some(id) = m.mount_id() else {
        skip!("STATX_MNT_ID not reported");
    };
    ensure!(
        matches!(id, MountId::Reusable(_)),
        "asked for MNT_ID, got {id:?}"
    );
    let expected = mountinfo_id(ctx.fs().mountpoint())?;
    ensure!(
        id.get() == expected,
        "statx mnt_id {} vs mountinfo {expected}",
        id.get()
    );

    let unique = ProbeOptions::new().fields(Fields::MNT_ID_UNIQUE);
    let a = unique.probe_path(&path)?;
    match a.mount_id() {
        Some(MountId::Unique(u)) => {
            let b = unique.probe_path(ctx.dir())?;
            ensure!(
                b.mount_id() == Some(MountId::Unique(u)),
                "same mount, different unique ids"
            );
            let root = unique.probe_path("/")?;
            ensure!(
                root.mount_id() != Some(MountId::Unique(u)),
                "/ has this mount's unique id"
            );
        }
        // Before Linux 6.8 the bit is unknown: the kernel ignores it and
        // fills STATX_MNT_ID, as it always does; the probe answers with that.
        Some(MountId::Reusable(r)) => {
            ensure!(
                !a.filled().contains(Fields::MNT_ID_UNIQUE),
                "MNT_ID_UNIQUE granted, reusable id returned"
            );
            ensure!(
                r == expected,
                "MNT_ID_UNIQUE not granted: reusable id {r} vs mountinfo {expected}"
            );
            println!(
                "    probe: {}: STATX_MNT_ID_UNIQUE not granted; the reusable id answered",
                ctx.fs_name()
            );
        }
        None => println!(
            "    probe: {}: STATX_MNT_ID_UNIQUE not reported",
            ctx.fs_name()
        ),
    }
    Ok(Verdict::Pass)
}

/// STATX_ATTR_MOUNT_ROOT, where supported: set on the mount point, not on
/// the scratch directory below it.
fn mount_root_attribute(ctx: &Ctx<'_>) -> ScenarioResult {
    let probe = ProbeOptions::new().fields(Fields::TYPE);
    let root = statx_or_skip!(probe.clone(), ctx.fs().mountpoint());
    let attrs = root.attributes().context("statx gave no attributes")?;
    let Some(is_root) = attrs.get(Attribute::MOUNT_ROOT) else {
        skip!("STATX_ATTR_MOUNT_ROOT not in stx_attributes_mask");
    };
    ensure!(is_root, "the mount point is not flagged MOUNT_ROOT");
    let below = probe.probe_path(ctx.dir())?;
    ensure!(
        below
            .attributes()
            .and_then(|a| a.get(Attribute::MOUNT_ROOT))
            == Some(false),
        "the scratch directory is flagged MOUNT_ROOT"
    );
    Ok(Verdict::Pass)
}

/// Forced fstatat: the basic fields only, equal to statx's, on a path and
/// on an fd; sync modes are reported as not applied.
fn fstatat_forced(ctx: &Ctx<'_>) -> ScenarioResult {
    let f = data_file(ctx, "fst")?;
    let path = ctx.path("fst");
    let probe = ProbeOptions::new()
        .fields(Fields::KNOWN)
        .sync(SyncMode::DontSync)
        .strategy(Strategy::Fstatat);
    for m in [probe.probe_path(&path)?, probe.probe_fd(&f)?] {
        ensure!(m.strategy() == Strategy::Fstatat && m.fallback().is_none());
        ensure!(m.filled() == Fields::BASIC, "fstatat claims {}", m.filled());
        ensure!(m.btime().is_none() && m.dio_align().is_none() && m.attributes().is_none());
        ensure!(
            m.sync() == SyncMode::AsStat,
            "fstatat cannot honour dont-sync"
        );
        check_basic_against_std(&m, &path)?;
    }
    Ok(Verdict::Pass)
}

/// Auto on a kernel with statx: statx answers, no fallback is reported.
fn auto_uses_statx(ctx: &Ctx<'_>) -> ScenarioResult {
    let f = data_file(ctx, "auto")?;
    let m = ProbeOptions::new()
        .fields(Fields::BASIC | Fields::BTIME)
        .probe_fd(&f)?;
    if let Some(why) = m.statx_unavailable() {
        skip!("statx is not available here: {why}");
    }
    ensure!(m.strategy() == Strategy::Statx);
    check_basic_against_std(&m, &ctx.path("auto"))?;
    Ok(Verdict::Pass)
}

/// Each sync mode on path and fd sees a size change at once (local
/// filesystems answer from the inode), and reports the mode it used.
fn sync_modes(ctx: &Ctx<'_>) -> ScenarioResult {
    let f = data_file(ctx, "sync")?;
    let path = ctx.path("sync");
    for (i, sync) in [SyncMode::AsStat, SyncMode::DontSync, SyncMode::ForceSync]
        .into_iter()
        .enumerate()
    {
        let size = (1 << 20) * (i as u64 + 1) + 3;
        f.set_len(size)?;
        let probe = ProbeOptions::new().fields(Fields::SIZE).sync(sync);
        for m in [statx_or_skip!(probe.clone(), &path), probe.probe_fd(&f)?] {
            ensure!(m.sync() == sync, "sync {} reported as {}", sync, m.sync());
            ensure!(
                m.size() == Some(size),
                "{sync}: size {:?}, want {size}",
                m.size()
            );
        }
    }
    Ok(Verdict::Pass)
}

/// Timed probes of a healthy file: all answer, one worker, none stuck.
fn timeout_mode_healthy(ctx: &Ctx<'_>) -> ScenarioResult {
    let f = data_file(ctx, "timed")?;
    let path = ctx.path("timed");
    let pool = WorkerPool::new(2);
    for strategy in [Strategy::Statx, Strategy::Fstatat] {
        let probe = ProbeOptions::new()
            .fields(Fields::SIZE | Fields::BLOCKS)
            .strategy(strategy)
            .timeout(Duration::from_secs(5))
            .pool(pool.clone());
        for _ in 0..500 {
            ensure!(probe.probe_path(&path)?.size() == Some(65536));
            ensure!(probe.probe_fd(&f)?.size() == Some(65536));
        }
    }
    ensure!(
        pool.stuck() == 0,
        "{} stuck on a healthy filesystem",
        pool.stuck()
    );
    ensure!(
        pool.live_threads() == 1,
        "{} threads for one caller",
        pool.live_threads()
    );
    Ok(Verdict::Pass)
}

/// ENOENT, ENOTDIR and ELOOP name the path, the call and the errno, for
/// each strategy, with and without a timeout.
fn errors_name_path_and_errno(ctx: &Ctx<'_>) -> ScenarioResult {
    drop(data_file(ctx, "plain")?);
    let lp = ctx.path("loop");
    std::os::unix::fs::symlink(&lp, &lp)?;
    let cases = [
        (ctx.path("absent"), Errno::NOENT),
        (ctx.path("plain").join("below"), Errno::NOTDIR),
        (lp, Errno::LOOP),
    ];
    for strategy in [Strategy::Statx, Strategy::Fstatat] {
        for timeout in [None, Some(Duration::from_secs(5))] {
            let probe = ProbeOptions::new().strategy(strategy).timeout(timeout);
            for (path, errno) in &cases {
                let err = match probe.probe_path(path) {
                    Err(e) => e,
                    Ok(m) => bail!("{} probed fine: {m:?}", path.display()),
                };
                let ProbeError::Io { errno: got, .. } = &err else {
                    bail!("{}: want Io, got {err}", path.display());
                };
                ensure!(got == errno, "{}: {got:?}, want {errno:?}", path.display());
                let msg = err.to_string();
                let op = if strategy == Strategy::Statx {
                    "statx"
                } else {
                    "fstatat"
                };
                ensure!(
                    msg.starts_with(&path.display().to_string()) && msg.contains(op),
                    "{msg}"
                );
            }
        }
    }
    Ok(Verdict::Pass)
}
