//! sparsekit-caps on every filesystem: the report succeeds in under a
//! second, is complete, leaves nothing behind, and agrees with direct
//! syscalls for the key capabilities; on tmpfs it matches the crate's
//! insta snapshot.

use crate::scenario::{Ctx, Scenario, ScenarioResult, Verdict};
use crate::skip;
use anyhow::{Context, bail, ensure};
use rustix::fs::{FallocateFlags, OFlags, SeekFrom};
use rustix::io::Errno;
use sparsekit_caps::{CAPABILITIES, Caps, CapsOptions, CapsReport, Cell, Support};
use sparsekit_sys::ErrnoName;
use sparsekit_sys::pagecache::RWF_DONTCACHE;
use std::fs::File;
use std::io::IoSlice;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// The scenarios of this module.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario::new(
            "caps/report_fast_complete_clean",
            report_fast_complete_clean,
        ),
        Scenario::new("caps/named_scratch_clean", named_scratch_clean),
        Scenario::new("caps/agrees_with_direct_checks", agrees_with_direct_checks),
        Scenario::new("caps/memoized_per_filesystem", memoized_per_filesystem),
        Scenario::new(
            "caps/memo_forgets_an_unmounted_filesystem",
            memo_forgets_an_unmounted_filesystem,
        ),
        Scenario::new("caps/tmpfs_snapshot", tmpfs_snapshot),
    ]
}

/// The budget for one filesystem's report on a real machine (see
/// [`wall_budget`](crate::scenario::wall_budget)).
const BUDGET: Duration = Duration::from_secs(1);

fn entries(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("read_dir {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    v.sort();
    Ok(v)
}

fn ensure_complete(report: &CapsReport) -> anyhow::Result<()> {
    for name in CAPABILITIES {
        ensure!(
            report.capabilities.contains_key(*name) || report.not_tried.contains_key(*name),
            "{name} missing from the report"
        );
    }
    for (name, cell) in &report.capabilities {
        ensure!(!cell.verified_by.is_empty(), "{name}: no verified_by");
        if matches!(cell.support, Support::Unsupported | Support::Emulated) {
            ensure!(
                cell.errno.is_some() || cell.reason.is_some(),
                "{name}: {cell:?} gives neither errno nor reason"
            );
        }
    }
    Ok(())
}

fn report_fast_complete_clean(ctx: &Ctx<'_>) -> ScenarioResult {
    // A peer directory on another filesystem: the host's temporary directory.
    let peer = tempfile::tempdir().context("peer tempdir")?;
    let before = entries(ctx.dir())?;
    let start = Instant::now();
    let report = CapsOptions::new()
        .cross_fs_dir(peer.path())
        .probe(ctx.dir())
        .with_context(|| format!("caps on {}", ctx.fs_name()))?;
    let took = start.elapsed();
    let budget = crate::scenario::wall_budget(BUDGET);
    ensure!(
        took < budget,
        "the report took {took:?} (budget {budget:?})"
    );
    ensure_complete(&report)?;
    ensure!(
        report.filesystem.mount_fs_type.as_deref() == Some(ctx.fstype()),
        "mountinfo type {:?}, mounted as {}",
        report.filesystem.mount_fs_type,
        ctx.fstype()
    );
    ensure!(
        report.filesystem.mount_point.as_deref() == Some(&*ctx.fs().mountpoint().to_string_lossy()),
        "mount point {:?}, expected {}",
        report.filesystem.mount_point,
        ctx.fs().mountpoint().display()
    );
    let opts = &ctx.fs().def().mount_options;
    for opt in opts
        .split(',')
        .filter(|o| !o.is_empty() && !o.starts_with("size="))
    {
        let seen = [
            &report.filesystem.mount_options,
            &report.filesystem.super_options,
        ]
        .iter()
        .any(|o| {
            o.as_deref().is_some_and(|o| {
                o.split(',')
                    // btrfs shows compress-force=zstd as compress-force=zstd:3.
                    .any(|x| x == opt || x.starts_with(&format!("{opt}:")))
            })
        });
        ensure!(
            seen,
            "mount option {opt} not in the report: {:?}",
            report.filesystem
        );
    }
    let same_fs = rustix::fs::stat(peer.path())?.st_dev == rustix::fs::stat(ctx.dir())?.st_dev;
    if !same_fs {
        let cell = report
            .get("copy_file_range_cross_fs")
            .context("copy_file_range_cross_fs not tried with a peer on another filesystem")?;
        ensure!(cell.is_usable(), "cross-fs copy unusable: {cell:?}");
    }
    ensure!(
        entries(ctx.dir())? == before,
        "files left behind: {:?}",
        entries(ctx.dir())?
    );
    ensure!(
        entries(peer.path())?.is_empty(),
        "files left in the peer directory"
    );
    // The table is printed by the runner only on failure; check it renders.
    ensure!(report.to_string().contains("VERIFIED BY"));
    Ok(Verdict::Pass)
}

fn named_scratch_clean(ctx: &Ctx<'_>) -> ScenarioResult {
    let report = CapsOptions::new().named_scratch(true).probe(ctx.dir())?;
    ensure_complete(&report)?;
    ensure!(report.filesystem.scratch == "named");
    // A file unlinked while open on NFS lives on as `.nfsXXXX` until its
    // last close, and the client's REMOVE after that close is sent
    // asynchronously: such names must go soon; any other must not exist.
    let deadline = Instant::now() + crate::scenario::wall_budget(Duration::from_secs(5));
    loop {
        let left = entries(ctx.dir())?;
        let silly = |n: &String| n.starts_with(".nfs") && ctx.fs().nfs_server().is_some();
        if left.is_empty() {
            return Ok(Verdict::Pass);
        }
        ensure!(
            left.iter().all(silly) && Instant::now() < deadline,
            "named scratch files left behind: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn cell<'r>(report: &'r CapsReport, name: &str) -> anyhow::Result<&'r Cell> {
    report
        .get(name)
        .with_context(|| format!("{name} not in the report"))
}

/// The cell must say `support`, and name `errno` when it was refused.
fn expect(report: &CapsReport, name: &str, direct: Result<(), Errno>) -> anyhow::Result<()> {
    let c = cell(report, name)?;
    match direct {
        Ok(()) => ensure!(
            c.support == Support::Native,
            "{name}: direct call works and verifies, caps says {c:?}"
        ),
        Err(errno) => {
            let sym = ErrnoName(errno).symbol().unwrap_or("?");
            ensure!(
                matches!(c.support, Support::Unsupported | Support::Emulated)
                    && c.errno.as_deref() == Some(sym),
                "{name}: direct call fails with {}, caps says {c:?}",
                ErrnoName(errno)
            );
        }
    }
    Ok(())
}

fn data_file(ctx: &Ctx<'_>, name: &str, len: usize) -> anyhow::Result<File> {
    let f = ctx.create(name)?;
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + 1) as u8 | 1).collect();
    f.write_all_at(&data, 0)?;
    f.sync_all()?;
    Ok(f)
}

fn allocated(f: &File) -> anyhow::Result<u64> {
    Ok(rustix::fs::fstat(f)?.st_blocks as u64 * 512)
}

/// Direct syscalls, independent of sparsekit-caps and the op crates, for
/// the key capabilities; the report must agree with each.
fn agrees_with_direct_checks(ctx: &Ctx<'_>) -> ScenarioResult {
    let report = sparsekit_caps::probe(ctx.dir())?;
    const MIB: usize = 1 << 20;

    // punch_hole: zeros and freed blocks.
    let f = data_file(ctx, "punch", MIB)?;
    let before = allocated(&f)?;
    let punch = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
    let direct = match rustix::fs::fallocate(&f, punch, 256 << 10, 512 << 10) {
        Ok(()) => {
            let mut buf = vec![1u8; 512 << 10];
            f.read_exact_at(&mut buf, 256 << 10)?;
            ensure!(buf.iter().all(|b| *b == 0), "punched range not zero");
            ensure!(allocated(&f)? < before, "punch freed nothing");
            Ok(())
        }
        Err(e) => Err(e),
    };
    expect(&report, "punch_hole", direct)?;

    // collapse_range: native or refused (then caps must name the errno).
    let f = data_file(ctx, "collapse", MIB)?;
    let direct = rustix::fs::fallocate(&f, FallocateFlags::COLLAPSE_RANGE, 256 << 10, 256 << 10);
    if direct.is_ok() {
        ensure!(
            f.metadata()?.len() == (MIB - (256 << 10)) as u64,
            "collapse size"
        );
    }
    expect(&report, "collapse_range", direct)?;

    // ficlone, and the SHARED flag it should produce.
    let src = data_file(ctx, "clone-src", MIB)?;
    let dst = ctx.create("clone-dst")?;
    let direct = rustix::fs::ioctl_ficlone(&dst, &src);
    expect(&report, "ficlone", direct)?;

    // seek_data_hole: data | 8 MiB hole | data; SEEK_HOLE from 0 must stop
    // inside the hole.
    let f = ctx.create("seek")?;
    f.write_all_at(&[7u8; 4096], 0)?;
    f.write_all_at(&[7u8; 4096], 8 << 20)?;
    f.sync_all()?;
    let seek_cell = cell(&report, "seek_data_hole")?;
    match rustix::fs::seek(&f, SeekFrom::Hole(0)) {
        Ok(hole) if hole < 8 << 20 => ensure!(
            seek_cell.support == Support::Native,
            "SEEK_HOLE finds the hole at {hole}, caps says {seek_cell:?}"
        ),
        Ok(hole) => ensure!(
            seek_cell.support == Support::Degraded,
            "SEEK_HOLE reports no hole ({hole}), caps says {seek_cell:?}"
        ),
        Err(e) => expect(&report, "seek_data_hole", Err(e))?,
    }

    // seek_sees_dirty_data: data only in the page cache after a hole.
    let f = ctx.create("dirty")?;
    f.set_len(4 << 20)?;
    f.write_all_at(&[9u8; 65536], 2 << 20)?;
    let dirty_cell = cell(&report, "seek_sees_dirty_data")?;
    match rustix::fs::seek(&f, SeekFrom::Data(0)) {
        Ok(pos) if pos <= 2 << 20 => ensure!(
            dirty_cell.support == Support::Native,
            "SEEK_DATA finds dirty data, caps says {dirty_cell:?}"
        ),
        Ok(pos) => ensure!(
            dirty_cell.support == Support::Degraded,
            "SEEK_DATA skips dirty data (to {pos}), caps says {dirty_cell:?}"
        ),
        Err(Errno::NXIO) => ensure!(
            dirty_cell.support == Support::Degraded && dirty_cell.errno.as_deref() == Some("ENXIO"),
            "SEEK_DATA misses dirty data (ENXIO), caps says {dirty_cell:?}"
        ),
        Err(e) => expect(&report, "seek_sees_dirty_data", Err(e))?,
    }

    // rwf_dontcache_write: the flag is accepted or refused.
    let f = ctx.create("dontcache")?;
    let dc_cell = cell(&report, "rwf_dontcache_write")?;
    match rustix::io::pwritev2(&f, &[IoSlice::new(&[5u8; 65536])], 0, RWF_DONTCACHE) {
        Ok(_) => ensure!(
            matches!(dc_cell.support, Support::Native | Support::Degraded),
            "RWF_DONTCACHE accepted, caps says {dc_cell:?}"
        ),
        Err(e) => expect(&report, "rwf_dontcache_write", Err(e))?,
    }

    // o_direct: opening with O_DIRECT works, or caps names the errno.
    let path = ctx.path("odirect");
    let direct = rustix::fs::open(
        &path,
        OFlags::CREATE | OFlags::RDWR | OFlags::DIRECT,
        rustix::fs::Mode::from_raw_mode(0o600),
    );
    let od_cell = cell(&report, "o_direct")?;
    match direct {
        Ok(_) => ensure!(od_cell.is_usable(), "O_DIRECT opens, caps says {od_cell:?}"),
        Err(e) => expect(&report, "o_direct", Err(e))?,
    }

    // fiemap: the ioctl answers on a plain file, or caps names the errno.
    let f = data_file(ctx, "fiemap", 65536)?;
    let mut buf = sparsekit_sys::fiemap::FiemapBuffer::default();
    let direct = sparsekit_sys::fiemap::fiemap(
        &f,
        0,
        u64::MAX,
        sparsekit_sys::fiemap::FIEMAP_FLAG_SYNC,
        &mut buf,
    )
    .map(drop);
    let fm_cell = cell(&report, "fiemap")?;
    match direct {
        Ok(()) => ensure!(fm_cell.is_usable(), "FIEMAP answers, caps says {fm_cell:?}"),
        Err(e) => expect(&report, "fiemap", Err(e))?,
    }
    Ok(Verdict::Pass)
}

fn memoized_per_filesystem(ctx: &Ctx<'_>) -> ScenarioResult {
    let sub = ctx.path("sub");
    std::fs::create_dir(&sub)?;
    let a = Caps::for_path(ctx.dir())?;
    let start = Instant::now();
    let b = Caps::for_path(&sub)?;
    let again = start.elapsed();
    ensure!(
        std::sync::Arc::ptr_eq(&a.shared(), &b.shared()),
        "two probes for one filesystem"
    );
    ensure!(
        again < Duration::from_millis(50),
        "memoized lookup took {again:?}"
    );
    ensure!(a.filesystem.mount_fs_type.as_deref() == Some(ctx.fstype()));
    Ok(Verdict::Pass)
}

/// A tmpfs mounted by a scenario, unmounted on drop (also on error).
struct TmpfsMount(std::path::PathBuf);

impl TmpfsMount {
    fn new(at: &Path, source: &str) -> anyhow::Result<TmpfsMount> {
        std::fs::create_dir_all(at).with_context(|| format!("mkdir {}", at.display()))?;
        rustix::mount::mount(
            source,
            at,
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            c"size=16m",
        )
        .with_context(|| format!("mount tmpfs on {}", at.display()))?;
        Ok(TmpfsMount(at.to_owned()))
    }

    fn unmount(self) -> anyhow::Result<()> {
        let at = self.0.clone();
        std::mem::forget(self);
        crate::cleanup::unmount(&at).map_err(|e| anyhow::anyhow!(e))
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        if let Err(e) = crate::cleanup::unmount(&self.0) {
            eprintln!("testbench: {e}");
        }
    }
}

/// The memo as on a kernel before 6.8 (no unique mount id, whatever this
/// one has): one filesystem still shares a report, and after an unmount
/// and a mount of the same kind at the same place — where the reusable
/// mount id and the anonymous device may well be reused, and the source
/// and options are equal — the report is probed again, never the old
/// filesystem's.
fn memo_forgets_an_unmounted_filesystem(ctx: &Ctx<'_>) -> ScenarioResult {
    let at = ctx.path("memo-mnt");
    let first = TmpfsMount::new(&at, "sparsekit-memo")?;
    std::fs::create_dir(at.join("sub"))?;
    let a = Caps::for_path_without_unique_mount_id(&at)?;
    let start = Instant::now();
    let b = Caps::for_path_without_unique_mount_id(at.join("sub"))?;
    let again = start.elapsed();
    ensure!(
        std::sync::Arc::ptr_eq(&a.shared(), &b.shared()),
        "two probes for one filesystem without a unique mount id"
    );
    ensure!(
        again < Duration::from_millis(50),
        "memoized lookup took {again:?}"
    );
    ensure!(a.filesystem.fs_type == "tmpfs", "{:?}", a.filesystem);
    ensure!(a.is_memoized(), "the tmpfs report is not memoized");
    first.unmount()?;
    // Whether or not the next mount reuses the mount id and device (so
    // the fingerprints are equal), the unmount itself must drop the entry.
    ensure!(
        !a.is_memoized(),
        "the report of an unmounted tmpfs is still memoized"
    );
    let second = TmpfsMount::new(&at, "sparsekit-memo")?;
    let c = Caps::for_path_without_unique_mount_id(&at)?;
    ensure!(
        !std::sync::Arc::ptr_eq(&a.shared(), &c.shared()),
        "the report of the unmounted tmpfs was handed out for the new one \
         (mount id {:?} then {:?}, device {} then {})",
        a.filesystem.mount_id,
        c.filesystem.mount_id,
        a.filesystem.device,
        c.filesystem.device
    );
    let d = Caps::for_path_without_unique_mount_id(&at)?;
    ensure!(
        std::sync::Arc::ptr_eq(&c.shared(), &d.shared()),
        "the new tmpfs is not memoized"
    );
    second.unmount()?;
    Ok(Verdict::Pass)
}

/// The committed tmpfs expectations of the caps crate's insta test, one
/// per kernel series: `crates/caps/tests/snapshots/snapshot__tmpfs_report@linux-<series>.snap`.
fn tmpfs_snapshots() -> anyhow::Result<Vec<(String, CapsReport)>> {
    const PREFIX: &str = "snapshot__tmpfs_report@linux-";
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/caps/tests/snapshots");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("read_dir {}", dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let Some(series) = name
            .strip_prefix(PREFIX)
            .and_then(|n| n.strip_suffix(".snap"))
        else {
            continue;
        };
        let path = dir.join(&name);
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        let mut parts = text.splitn(3, "---\n");
        let body = match (parts.next(), parts.next(), parts.next()) {
            (Some(""), Some(_header), Some(body)) => body,
            _ => bail!("{}: not an insta snapshot", path.display()),
        };
        let report = toml::from_str(body).with_context(|| format!("parse {}", path.display()))?;
        out.push((series.to_owned(), report));
    }
    ensure!(!out.is_empty(), "no tmpfs expectation in {}", dir.display());
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// `6.18` of `6.18.44-fc-v857`.
fn kernel_series(release: &str) -> String {
    release
        .split(|c: char| !c.is_ascii_digit())
        .take(2)
        .collect::<Vec<_>>()
        .join(".")
}

/// The same check as the caps crate's insta snapshot test, on the bench's
/// own tmpfs (the snapshot test skips where /dev/shm is not a tmpfs): the
/// whole report against the expectation of this kernel's series; on a
/// series without one, what does not depend on the kernel against every
/// expectation (a format change still fails; an older kernel alone not).
fn tmpfs_snapshot(ctx: &Ctx<'_>) -> ScenarioResult {
    if ctx.fs_name() != "tmpfs" {
        skip!("the snapshot is of plain tmpfs; this is {}", ctx.fs_name());
    }
    let report = sparsekit_caps::probe(ctx.dir())?;
    let series = kernel_series(&report.filesystem.kernel_release);
    let all = tmpfs_snapshots()?;
    let Some((_, want)) = all.iter().find(|(s, _)| *s == series) else {
        let got = report.kernel_independent();
        for (s, want) in &all {
            let want = want.kernel_independent();
            if got != want {
                bail!(
                    "no tmpfs expectation for Linux {series}, and the report differs from the \
                     Linux {s} one beyond the kernel-dependent cells:\n{}",
                    report_diffs(&got, &want).join("\n")
                );
            }
        }
        eprintln!(
            "  caps: no tmpfs expectation for Linux {series}: compared what does not depend on \
             the kernel with Linux {}",
            all.iter()
                .map(|(s, _)| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return Ok(Verdict::Pass);
    };
    let got = report.redacted();
    if &got != want {
        bail!(
            "tmpfs report differs from the Linux {series} snapshot (update it with \
             INSTA_UPDATE=always cargo test -p sparsekit-caps --test snapshot):\n{}",
            report_diffs(&got, want).join("\n")
        );
    }
    Ok(Verdict::Pass)
}

/// Where two reports differ, one line each.
fn report_diffs(got: &CapsReport, want: &CapsReport) -> Vec<String> {
    let mut diffs = Vec::new();
    if got.filesystem != want.filesystem {
        diffs.push(format!(
            "filesystem: {:?} != {:?}",
            got.filesystem, want.filesystem
        ));
    }
    for name in CAPABILITIES {
        let (g, w) = (got.get(name), want.get(name));
        if g != w {
            diffs.push(format!("{name}: got {g:?}, snapshot {w:?}"));
        }
    }
    if got.not_tried != want.not_tried {
        diffs.push(format!(
            "not_tried: {:?} != {:?}",
            got.not_tried, want.not_tried
        ));
    }
    diffs
}
