//! sparsekit-clone on a real filesystem: FICLONE, FICLONERANGE and
//! FIDEDUPERANGE each forced in turn, content and FIEMAP sharing checked;
//! where the filesystem cannot share, the clear `Unsupported` error and no
//! leftover file; every refused request changes nothing.
//!
//! "Not supported here" is a skip with the errno, never a pass.

use crate::scenario::{Ctx, Scenario, ScenarioResult, Verdict};
use crate::skip;
use anyhow::{Context, bail, ensure};
use sparsekit_clone::{
    CloneError, DedupeOptions, DedupeStatus, DedupeTarget, DestinationChange, MapError, Side,
    clone_file, clone_file_to_path, clone_range, dedupe_range, dedupe_range_with,
};
use sparsekit_sys::pattern;
use std::fs::File;
use std::os::unix::fs::FileExt;

/// The scenarios of this module.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "clone/cli_json",
            run: cli_json::clone_and_dedupe_json,
        },
        Scenario {
            name: "clone/ficlone_shares",
            run: ficlone_shares,
        },
        Scenario {
            name: "clone/ficlone_path_replaces",
            run: ficlone_path_replaces,
        },
        Scenario {
            name: "clone/ficlonerange_shares",
            run: ficlonerange_shares,
        },
        Scenario {
            name: "clone/ficlonerange_eof_tail",
            run: ficlonerange_eof_tail,
        },
        Scenario {
            name: "clone/dedupe_equal_shares",
            run: dedupe_equal_shares,
        },
        Scenario {
            name: "clone/dedupe_differs_unchanged",
            run: dedupe_differs_unchanged,
        },
        Scenario {
            name: "clone/dedupe_split_calls",
            run: dedupe_split_calls,
        },
        Scenario {
            name: "clone/unsupported_is_clear",
            run: unsupported_is_clear,
        },
        Scenario {
            name: "clone/cross_mount_unsupported",
            run: cross_mount_unsupported,
        },
        Scenario {
            name: "clone/refused_requests",
            run: refused_requests,
        },
        Scenario {
            name: "clone/cli_stdout_errors",
            run: cli_output::cli_stdout_errors,
        },
    ]
}

fn block_size(ctx: &Ctx<'_>) -> anyhow::Result<u64> {
    Ok(rustix::fs::statvfs(ctx.dir())?.f_bsize.max(512))
}

fn read_all(f: &File) -> anyhow::Result<Vec<u8>> {
    let len = f.metadata()?.len() as usize;
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}

/// Skips on `Unsupported`, fails on any other error.
macro_rules! supported {
    ($op:literal, $e:expr) => {
        match $e {
            Err(e) if e.is_unsupported() => skip!("{} not supported: {e}", $op),
            r => r.context($op)?,
        }
    };
}

/// FIEMAP's view of a range of the scratch file `name` (on NFS, seen on
/// the server: [`Ctx::sharing`]); skips where FIEMAP is missing, since
/// sharing cannot then be observed.
macro_rules! sharing_of {
    ($ctx:expr, $name:expr, $range:expr) => {
        match $ctx.sharing(&$ctx.path($name), $range) {
            Err(e @ MapError::Unsupported { .. }) => {
                skip!("sharing cannot be observed: {e}")
            }
            r => r.context("FIEMAP")?,
        }
    };
}

/// Skips when the filesystem refused a dedupe destination as unsupported
/// (xfs without reflink answers EOPNOTSUPP per destination, not per call).
macro_rules! dedupe_supported {
    ($r:expr) => {
        if let DedupeStatus::Failed(e) = &$r.status {
            if e.is_unsupported() {
                skip!("FIDEDUPERANGE not supported for this destination: {e}");
            }
        }
    };
}

mod cli_json;
mod cli_output;
mod refused;
use refused::{cross_mount_unsupported, refused_requests, unsupported_is_clear};

/// A source with data, a hole and an unaligned tail.
fn make_source(ctx: &Ctx<'_>, name: &str, block: u64) -> anyhow::Result<(File, Vec<u8>)> {
    let f = ctx.create(name)?;
    let mut content = pattern(block, 64 * block + 1000);
    // A hole of 16 blocks in the middle.
    content[(16 * block) as usize..(32 * block) as usize].fill(0);
    f.write_all_at(&content[..(16 * block) as usize], 0)?;
    f.write_all_at(&content[(32 * block) as usize..], 32 * block)?;
    f.sync_all()?;
    Ok((f, content))
}

/// FICLONE: identical content, every data byte shared, and copy-on-write
/// keeps the source intact when the clone is written.
fn ficlone_shares(ctx: &Ctx<'_>) -> ScenarioResult {
    let block = block_size(ctx)?;
    let (src, content) = make_source(ctx, "src", block)?;
    let dst = ctx.create("dst")?;
    supported!("FICLONE", clone_file(&src, &dst));
    ensure!(
        read_all(&dst)? == content,
        "clone content differs from source"
    );
    let len = content.len() as u64;
    let src_map = sharing_of!(ctx, "src", 0..len);
    let dst_map = sharing_of!(ctx, "dst", 0..len);
    ensure!(
        dst_map.shared > 0,
        "no shared extents after FICLONE: {dst_map:?}"
    );
    ensure!(
        dst_map.exclusive == 0,
        "clone has unshared data: {dst_map:?}"
    );
    ensure!(
        src_map.shared == dst_map.shared,
        "source shares {} bytes, clone {}",
        src_map.shared,
        dst_map.shared
    );
    // Copy-on-write: writing the clone leaves the source as it was.
    dst.write_all_at(&[0xEE; 4096], 0)?;
    dst.sync_all()?;
    ensure!(
        read_all(&src)? == content,
        "writing the clone changed the source"
    );
    let after = sharing_of!(ctx, "dst", 0..4096);
    ensure!(
        after.shared == 0,
        "a rewritten block is still shared: {after:?}"
    );
    Ok(Verdict::Pass)
}

/// The path helper: a new destination is created, an existing one replaced
/// whole (shorter source, larger old file), with its permission bits.
fn ficlone_path_replaces(ctx: &Ctx<'_>) -> ScenarioResult {
    use std::os::unix::fs::PermissionsExt;
    let block = block_size(ctx)?;
    let (_src, content) = make_source(ctx, "src", block)?;
    let (src_path, new_path, old_path) = (ctx.path("src"), ctx.path("new"), ctx.path("old"));
    let done = match clone_file_to_path(&src_path, &new_path) {
        Err(e) if e.is_unsupported() => {
            skip!(
                "FICLONE not supported: {}",
                e.clone_error().map_or(e.to_string(), |c| c.to_string())
            )
        }
        r => r.context("FICLONE to a new path")?,
    };
    ensure!(done.destination == DestinationChange::Created, "{done:?}");
    ensure!(
        std::fs::read(&new_path)? == content,
        "new clone content differs"
    );

    let old = ctx.create("old")?;
    old.write_all_at(&pattern(7, 200 * block), 0)?;
    std::fs::set_permissions(&old_path, std::fs::Permissions::from_mode(0o640))?;
    drop(old);
    let done = clone_file_to_path(&src_path, &old_path).context("replace")?;
    ensure!(done.destination == DestinationChange::Replaced, "{done:?}");
    ensure!(
        std::fs::read(&old_path)? == content,
        "replaced file is not the source"
    );
    let mode = std::fs::metadata(&old_path)?.permissions().mode() & 0o7777;
    ensure!(mode == 0o640, "permissions not kept: {mode:o}");
    let left: Vec<_> = std::fs::read_dir(ctx.dir())?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    ensure!(
        left.iter().all(|n| !n.ends_with(".sparsekit-tmp")),
        "temporary file left: {left:?}"
    );
    Ok(Verdict::Pass)
}

/// FICLONERANGE into the middle of an existing file: the range matches the
/// source and is shared, the rest is untouched.
fn ficlonerange_shares(ctx: &Ctx<'_>) -> ScenarioResult {
    let block = block_size(ctx)?;
    let (src, content) = make_source(ctx, "src", block)?;
    let dst = ctx.create("dst")?;
    let mut expected = pattern(99, 128 * block);
    dst.write_all_at(&expected, 0)?;
    dst.sync_all()?;
    let (so, doff, len) = (32 * block, 40 * block, 16 * block);
    supported!("FICLONERANGE", clone_range(&src, so, &dst, doff, len));
    expected[doff as usize..(doff + len) as usize]
        .copy_from_slice(&content[so as usize..(so + len) as usize]);
    ensure!(read_all(&dst)? == expected, "range clone content wrong");
    let inside = sharing_of!(ctx, "dst", doff..doff + len);
    ensure!(
        inside.shared == len,
        "{} of {len} bytes shared: {inside:?}",
        inside.shared
    );
    let outside = sharing_of!(ctx, "dst", 0..doff);
    ensure!(
        outside.shared == 0,
        "bytes outside the range became shared: {outside:?}"
    );
    // Past the destination's end: extends it, leaving a hole.
    let far = 256 * block;
    clone_range(&src, 0, &dst, far, 4 * block).context("clone past EOF")?;
    ensure!(
        dst.metadata()?.len() == far + 4 * block,
        "destination not extended"
    );
    let mut buf = vec![0u8; (4 * block) as usize];
    dst.read_exact_at(&mut buf, far)?;
    ensure!(buf == content[..buf.len()], "content cloned past EOF wrong");
    Ok(Verdict::Pass)
}

/// The unaligned tail at the source's EOF clones to the destination's
/// end; into the middle of a larger file it is refused up front (the
/// kernel would say EINVAL).
fn ficlonerange_eof_tail(ctx: &Ctx<'_>) -> ScenarioResult {
    let block = block_size(ctx)?;
    let (src, content) = make_source(ctx, "src", block)?;
    let size = content.len() as u64;
    let tail_off = size / block * block;
    let dst = ctx.create("dst")?;
    dst.write_all_at(&pattern(3, 8 * block), 0)?;
    supported!(
        "FICLONERANGE",
        clone_range(&src, tail_off, &dst, 8 * block, size - tail_off)
    );
    ensure!(
        dst.metadata()?.len() == 8 * block + size - tail_off,
        "size after tail clone"
    );
    let mut buf = vec![0u8; (size - tail_off) as usize];
    dst.read_exact_at(&mut buf, 8 * block)?;
    ensure!(buf == content[tail_off as usize..], "tail content wrong");
    let before = read_all(&dst)?;
    match clone_range(&src, tail_off, &dst, 0, size - tail_off) {
        Err(CloneError::Misaligned { what: "length", .. }) => {}
        other => bail!("EOF tail into the middle: expected Misaligned, got {other:?}"),
    }
    ensure!(
        read_all(&dst)? == before,
        "refused clone changed the destination"
    );
    Ok(Verdict::Pass)
}

/// Two files written separately with equal data: nothing shared, then
/// FIDEDUPERANGE shares it all and says so.
fn dedupe_equal_shares(ctx: &Ctx<'_>) -> ScenarioResult {
    let block = block_size(ctx)?;
    let data = pattern(11, 32 * block + 123);
    let (a, b) = (ctx.create("a")?, ctx.create("b")?);
    a.write_all_at(&data, 0)?;
    b.write_all_at(&data, 0)?;
    a.sync_all()?;
    b.sync_all()?;
    let len = data.len() as u64;
    let before = sharing_of!(ctx, "b", 0..len);
    ensure!(
        before.shared == 0,
        "separately written files already share: {before:?}"
    );
    let r = supported!(
        "FIDEDUPERANGE",
        dedupe_range(&a, 0, len, &[DedupeTarget::new(&b, 0)])
    );
    dedupe_supported!(r[0]);
    ensure!(r[0].is_same(), "equal data not deduped: {:?}", r[0]);
    ensure!(
        r[0].bytes_deduped == len,
        "deduped {} of {len}",
        r[0].bytes_deduped
    );
    let after = sharing_of!(ctx, "b", 0..len);
    ensure!(
        after.exclusive == 0 && after.shared > 0,
        "not shared after dedupe: {after:?}"
    );
    ensure!(
        read_all(&b)? == data && read_all(&a)? == data,
        "dedupe changed content"
    );
    Ok(Verdict::Pass)
}

/// Differing data: reported as differing, nothing shared, both files
/// unchanged.
fn dedupe_differs_unchanged(ctx: &Ctx<'_>) -> ScenarioResult {
    let block = block_size(ctx)?;
    let data = pattern(12, 16 * block);
    let mut other = data.clone();
    other[(9 * block + 5) as usize] ^= 0xFF;
    let (a, b) = (ctx.create("a")?, ctx.create("b")?);
    a.write_all_at(&data, 0)?;
    b.write_all_at(&other, 0)?;
    a.sync_all()?;
    b.sync_all()?;
    let len = data.len() as u64;
    let r = supported!(
        "FIDEDUPERANGE",
        dedupe_range(&a, 0, len, &[DedupeTarget::new(&b, 0)])
    );
    dedupe_supported!(r[0]);
    match r[0].status {
        DedupeStatus::Differs {
            differs_from,
            differs_to,
        } => {
            ensure!(
                differs_from <= 9 * block && 9 * block < differs_to,
                "difference at {} reported in {differs_from}..{differs_to}",
                9 * block
            );
        }
        ref s => bail!("differing data reported as {s:?}"),
    }
    ensure!(
        r[0].bytes_deduped == 0,
        "bytes_deduped {} for one chunk",
        r[0].bytes_deduped
    );
    let s = sharing_of!(ctx, "b", 0..len);
    ensure!(s.shared == 0, "differing file became shared: {s:?}");
    ensure!(
        read_all(&a)? == data && read_all(&b)? == other,
        "content changed"
    );
    Ok(Verdict::Pass)
}

/// Chunking forced small: progress carries across calls, destinations are
/// batched, and each gets its own result (equal, differing in a later
/// chunk, range past its end).
fn dedupe_split_calls(ctx: &Ctx<'_>) -> ScenarioResult {
    let block = block_size(ctx)?;
    let len = 64 * block;
    let data = pattern(13, len);
    let src = ctx.create("src")?;
    src.write_all_at(&data, 0)?;
    let mut dsts = Vec::new();
    for i in 0..3 {
        let f = ctx.create(&format!("d{i}"))?;
        f.write_all_at(&data, 0)?;
        dsts.push(f);
    }
    let differing = ctx.create("differs")?;
    let mut changed = data.clone();
    changed[(40 * block) as usize] ^= 1;
    differing.write_all_at(&changed, 0)?;
    let short = ctx.create("short")?;
    short.write_all_at(&data[..(8 * block) as usize], 0)?;
    for f in dsts.iter().chain([&src, &differing, &short]) {
        f.sync_all()?;
    }
    let mut targets: Vec<DedupeTarget<'_>> = dsts.iter().map(|f| DedupeTarget::new(f, 0)).collect();
    targets.push(DedupeTarget::new(&differing, 0));
    targets.push(DedupeTarget::new(&short, 0));
    let opts = DedupeOptions::default()
        .chunk(4 * block)
        .destinations_per_call(2);
    let r = supported!(
        "FIDEDUPERANGE",
        dedupe_range_with(&src, 0, len, &targets, &opts)
    );
    dedupe_supported!(r[0]);
    for (i, res) in r[..3].iter().enumerate() {
        ensure!(
            res.is_same() && res.bytes_deduped == len,
            "destination {i}: {res:?}"
        );
        ensure!(
            res.calls == 16,
            "destination {i}: {} calls for 16 chunks",
            res.calls
        );
        let s = sharing_of!(ctx, &format!("d{i}"), 0..len);
        ensure!(s.exclusive == 0, "destination {i} not fully shared: {s:?}");
    }
    match r[3].status {
        DedupeStatus::Differs {
            differs_from,
            differs_to,
        } => ensure!(
            differs_from == 40 * block
                && differs_to == 44 * block
                && r[3].bytes_deduped == 40 * block,
            "differing destination: {:?}",
            r[3]
        ),
        ref s => bail!("differing destination reported {s:?}"),
    }
    ensure!(
        read_all(&differing)? == changed,
        "differing destination changed"
    );
    ensure!(
        matches!(
            r[4].status,
            DedupeStatus::Failed(CloneError::PastEof {
                side: Side::Destination,
                ..
            })
        ) && r[4].calls == 0,
        "short destination: {:?}",
        r[4]
    );
    Ok(Verdict::Pass)
}
