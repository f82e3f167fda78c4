//! `sparsekit compare` and `copy --verify` through the CLI on a real
//! filesystem: two equal copies (exit 0, the holes not read), one byte
//! changed in data and one byte written into a hole (exit 1 naming the
//! offset), different sizes (exit 1), a hole against written zeros (equal
//! content; with `--allocation` different wherever the zeros take space),
//! a file against a loop device holding the same bytes, and `copy
//! --verify` (exit 0, the read-back reported).

use crate::fixture::LoopImage;
use crate::scenario::{Ctx, Scenario, ScenarioResult, Verdict};
use anyhow::{Context, ensure};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The scenarios of this module.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario::new("compare/equal", equal),
        Scenario::new("compare/data_byte_changed", data_byte_changed),
        Scenario::new("compare/hole_byte_written", hole_byte_written),
        Scenario::new("compare/different_sizes", different_sizes),
        Scenario::new("compare/hole_vs_zeros", hole_vs_zeros),
        Scenario::new("compare/block_device", block_device),
        Scenario::new("compare/copy_verify", copy_verify),
    ]
}

const MIB: u64 = 1 << 20;

/// Data at 0 (1 MiB), a 6 MiB hole, data at 7 MiB (2 MiB), a 5 MiB hole,
/// 64 KiB of data at 14 MiB, a hole to 16 MiB + 1000 (unaligned end).
const DATA: [(u64, u64); 3] = [(0, MIB), (7 * MIB, 2 * MIB), (14 * MIB, 64 << 10)];
const SIZE: u64 = 16 * MIB + 1000;
/// Inside the 6 MiB hole.
const IN_HOLE: u64 = 3 * MIB + 12_345;

fn byte_at(off: u64) -> u8 {
    (off.wrapping_mul(2_654_435_761) >> 11) as u8 | 1
}

fn write_image(path: &Path) -> anyhow::Result<()> {
    let f = File::create(path).with_context(|| format!("create {}", path.display()))?;
    for (off, len) in DATA {
        let buf: Vec<u8> = (off..off + len).map(byte_at).collect();
        f.write_all_at(&buf, off)?;
    }
    f.set_len(SIZE)?;
    f.sync_all()?;
    Ok(())
}

fn sparsekit(args: &[&str]) -> anyhow::Result<Output> {
    let bin = crate::bench::measure::sparsekit_bin()?;
    Command::new(&bin)
        .args(args)
        .output()
        .with_context(|| format!("run {}", bin.display()))
}

fn s(p: &Path) -> anyhow::Result<&str> {
    p.to_str().context("non-UTF-8 path")
}

/// `compare --json A B [extra]`: exit code and document.
fn compare(a: &Path, b: &Path, extra: &[&str]) -> anyhow::Result<(i32, serde_json::Value)> {
    let mut args = vec!["compare", "--json"];
    args.extend_from_slice(extra);
    args.extend([s(a)?, s(b)?]);
    let o = sparsekit(&args)?;
    let code = o.status.code().context("killed by a signal")?;
    let stderr = String::from_utf8_lossy(&o.stderr);
    ensure!(code == 0 || code == 1, "exit {code}: {stderr}");
    let v = serde_json::from_slice(&o.stdout)
        .with_context(|| format!("JSON: {}", String::from_utf8_lossy(&o.stdout)))?;
    Ok((code, v))
}

/// Two equal images in the scratch directory.
fn pair(ctx: &Ctx<'_>) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (a, b) = (ctx.path("a.img"), ctx.path("b.img"));
    write_image(&a)?;
    write_image(&b)?;
    Ok((a, b))
}

fn poke(path: &Path, off: u64, byte: u8) -> anyhow::Result<()> {
    let f = File::options().write(true).open(path)?;
    f.write_all_at(&[byte], off)?;
    f.sync_all()?;
    Ok(())
}

fn equal(ctx: &Ctx<'_>) -> ScenarioResult {
    let (a, b) = pair(ctx)?;
    let (code, v) = compare(&a, &b, &[])?;
    ensure!(code == 0 && v["equal"] == true, "exit {code}: {v}");
    ensure!(v["bytes_compared"] == SIZE, "{v}");
    let data: u64 = DATA.iter().map(|d| d.1).sum();
    // Unless a side had to be scanned, the 11 MiB of holes are not read.
    let mapped = |side: &str| !matches!(v[side]["map_method"].as_str(), Some("scan" | "all_data"));
    if mapped("a") && mapped("b") {
        let skipped = v["bytes_skipped"].as_u64().unwrap_or(0);
        ensure!(skipped >= SIZE - data - 2 * MIB, "holes read: {v}");
        for side in ["a", "b"] {
            let read = v[side]["bytes_read"].as_u64().unwrap_or(u64::MAX);
            ensure!(read <= data + 2 * MIB, "{side} read {read} bytes: {v}");
        }
    }
    Ok(Verdict::Pass)
}

/// One byte changed at `off` in B: exit 1, the offset in words and JSON.
fn one_byte(ctx: &Ctx<'_>, off: u64) -> ScenarioResult {
    let (a, b) = pair(ctx)?;
    let mut old = [0u8];
    File::open(&b)?.read_exact_at(&mut old, off)?;
    poke(&b, off, old[0] ^ 0x81)?;
    let o = sparsekit(&["compare", s(&a)?, s(&b)?])?;
    let stdout = String::from_utf8_lossy(&o.stdout);
    ensure!(
        o.status.code() == Some(1),
        "exit {:?}: {stdout}",
        o.status.code()
    );
    ensure!(
        stdout.contains(&format!("differ: first at offset {off}\n")),
        "{stdout}"
    );
    let (code, v) = compare(&a, &b, &["--limit", "5"])?;
    ensure!(code == 1, "{v}");
    ensure!(
        v["differences"] == serde_json::json!([{"offset": off, "length": 1}]),
        "{v}"
    );
    Ok(Verdict::Pass)
}

fn data_byte_changed(ctx: &Ctx<'_>) -> ScenarioResult {
    one_byte(ctx, 7 * MIB + 4321)
}

fn hole_byte_written(ctx: &Ctx<'_>) -> ScenarioResult {
    one_byte(ctx, IN_HOLE)
}

fn different_sizes(ctx: &Ctx<'_>) -> ScenarioResult {
    let (a, b) = pair(ctx)?;
    File::options().write(true).open(&b)?.set_len(SIZE + 4096)?;
    let (code, v) = compare(&a, &b, &[])?;
    ensure!(code == 1 && v["sizes_equal"] == false, "{v}");
    ensure!(v["content_equal"] == true, "{v}");
    ensure!(v["first_difference"] == SIZE, "{v}");
    Ok(Verdict::Pass)
}

fn hole_vs_zeros(ctx: &Ctx<'_>) -> ScenarioResult {
    let (a, b) = pair(ctx)?;
    // B gets 2 MiB of written zeros inside the hole that A keeps.
    let f = File::options().write(true).open(&b)?;
    f.write_all_at(&vec![0u8; 2 << 20], 2 * MIB)?;
    f.sync_all()?;
    drop(f);
    let (code, v) = compare(&a, &b, &[])?;
    ensure!(code == 0 && v["equal"] == true, "content differs: {v}");
    let (code, v) = compare(&a, &b, &["--allocation", "--limit", "10"])?;
    ensure!(v["content_equal"] == true, "{v}");
    let alloc = &v["allocation"];
    ensure!(
        (code == 1) == (alloc["equal"] == false),
        "exit {code} but allocation {alloc}"
    );
    if let Some(blind) = alloc["unobserved"].as_array().filter(|u| !u.is_empty()) {
        // No SEEK_HOLE or FIEMAP (NFSv3): unknown, never equal, and only
        // where the map could not have seen allocation.
        ensure!(code == 1 && alloc["equal"] == false, "{v}");
        for side in blind {
            let method = &v[side.as_str().unwrap_or("?")]["map_method"];
            ensure!(
                method == "scan" || method == "all_data",
                "allocation called unknown though {side} was mapped by {method}: {v}"
            );
        }
        return Ok(Verdict::Pass);
    }
    let (ba, bb) = (
        std::fs::metadata(&a)?.blocks(),
        std::fs::metadata(&b)?.blocks(),
    );
    if bb > ba {
        // The zeros took space: the map must show them allocated in B only.
        ensure!(
            code == 1,
            "zeros allocated ({bb} > {ba} blocks) but not reported: {v}"
        );
        let only_b = alloc["only_b"].as_u64().unwrap_or(0);
        ensure!(only_b >= MIB && alloc["only_a"] == 0, "{v}");
        ensure!(alloc["differences"][0]["allocated_in"] == "b", "{v}");
    }
    Ok(Verdict::Pass)
}

fn block_device(ctx: &Ctx<'_>) -> ScenarioResult {
    let img = ctx.path("dev.img");
    write_image(&img)?;
    let size = SIZE.next_multiple_of(MIB);
    File::options().write(true).open(&img)?.set_len(size)?;
    let dev = LoopImage::create("compare-dev", size, &[])?;
    {
        let (from, to) = (
            File::open(&img)?,
            File::options().write(true).open(dev.device())?,
        );
        let mut buf = vec![0u8; MIB as usize];
        for off in (0..size).step_by(MIB as usize) {
            from.read_exact_at(&mut buf, off)?;
            to.write_all_at(&buf, off)?;
        }
        to.sync_all()?;
    }
    let (code, v) = compare(&img, dev.device(), &[])?;
    ensure!(code == 0, "{v}");
    ensure!(v["b"]["map_method"] == "all_data", "{v}");
    poke(dev.device(), IN_HOLE, 1)?;
    let (code, v) = compare(&img, dev.device(), &[])?;
    ensure!(code == 1 && v["first_difference"] == IN_HOLE, "{v}");
    Ok(Verdict::Pass)
}

fn copy_verify(ctx: &Ctx<'_>) -> ScenarioResult {
    let (a, _) = pair(ctx)?;
    let dst = ctx.path("copy.img");
    for extra in [
        &[][..],
        &["--reflink", "never"],
        &["--cache", "keep", "--reflink", "never"],
    ] {
        let _ = std::fs::remove_file(&dst);
        let mut args = vec!["copy", "--verify", "--json", "--no-progress"];
        args.extend_from_slice(extra);
        args.extend([s(&a)?, s(&dst)?]);
        let o = sparsekit(&args)?;
        ensure!(
            o.status.success(),
            "{extra:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
        let verified = &v["verified"];
        ensure!(verified["equal"] == true, "{extra:?}: {v}");
        // The destination was read back: its data at least (all of it
        // where the map cannot tell holes).
        let data: u64 = DATA.iter().map(|d| d.1).sum();
        ensure!(
            verified["bytes_read"].as_u64().unwrap_or(0) >= data,
            "{extra:?}: {v}"
        );
        let (code, cv) = compare(&a, &dst, &[])?;
        ensure!(code == 0, "{extra:?}: the verified copy differs: {cv}");
    }
    Ok(Verdict::Pass)
}
