//! Benchmarks against peer tools, run by `cargo xtask bench [NAME]` (root).
//! Each prints a table of measurements and the ratios against the peers.

pub mod clone;
pub mod compare;
pub mod copy;
pub mod device;
pub mod dig;
pub mod extents;
mod image;
pub mod measure;
pub mod nfs;
pub mod probe;

use crate::defs::FsDef;
use crate::fixture::MountedFs;
use anyhow::{Context, bail};
use std::sync::OnceLock;

/// How the benchmarks' loop devices reach their backing files.
///
/// `Direct` (the default, `losetup --direct-io=on`): the loop device
/// submits its requests to the host file asynchronously, several in
/// flight, as a disk would, and nothing is cached twice. `Buffered`
/// (`--loop-io buffered`, losetup's default): one worker thread serves the
/// requests one at a time through the host's page cache, so a fragmented
/// image is bounded by that thread whatever a tool queues. Measured here on
/// the fragmented image (4 KiB of data every 16 KiB over 2 GiB, ext4 loop
/// mount): `dd bs=2M` reads it in 11.7 s buffered, 2.5 s direct; every
/// peer is faster direct too (nbdcopy copies it to xfs in 12.6 s against
/// 19.1 s, qemu-img convert 16.5 s against 18.2 s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoopIo {
    Direct,
    Buffered,
}

static LOOP_IO: OnceLock<LoopIo> = OnceLock::new();

/// Takes `--loop-io direct|buffered` out of the benchmarks' arguments.
pub fn take_loop_io(args: &[String]) -> anyhow::Result<Vec<String>> {
    let mut rest = Vec::new();
    let mut io = LoopIo::Direct;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--loop-io" {
            io = match it.next().map(String::as_str) {
                Some("direct") => LoopIo::Direct,
                Some("buffered") => LoopIo::Buffered,
                other => bail!("--loop-io direct|buffered, not {other:?}"),
            };
        } else {
            rest.push(a.clone());
        }
    }
    let _ = LOOP_IO.set(io);
    Ok(rest)
}

/// The loop mode of this run.
pub fn loop_io() -> LoopIo {
    *LOOP_IO.get().unwrap_or(&LoopIo::Direct)
}

/// Mounts `def` for a benchmark, its loop device (if any) in the run's
/// [`LoopIo`] mode.
pub fn mount(def: &FsDef) -> anyhow::Result<MountedFs> {
    let fs = MountedFs::mount(def)?;
    if let Some(dev) = fs.device().filter(|_| fs.nbd().is_none()) {
        let direct = loop_io() == LoopIo::Direct;
        loopdev::LoopDevice::open(dev)
            .and_then(|ld| ld.set_direct_io(direct))
            .with_context(|| format!("{}: LOOP_SET_DIRECT_IO {direct}", dev.display()))?;
    }
    Ok(fs)
}

/// A benchmark: name and entry point (arguments after the name).
pub type Bench = (&'static str, fn(&[String]) -> anyhow::Result<()>);

/// All benchmarks.
pub fn all() -> Vec<Bench> {
    vec![
        ("extents", extents::run),
        ("clone", clone::run),
        ("copy", copy::run),
        ("compare", compare::run),
        ("probe", probe::run),
        ("dig", dig::run),
        ("nfs", nfs::run),
    ]
}
