//! `sparsekit clone --json` and `dedupe --json` on a real filesystem:
//! where sharing works, the documents say what was shared and FIEMAP
//! agrees; a dedupe of differing data prints a `differs` document and
//! exits 1 with both files unchanged. Where the filesystem cannot share,
//! the scenario skips with the errno the command reported; where it clones
//! but has no dedupe (NFS), the dedupe must be refused naming the file and
//! the errno. On NFS the sharing is seen on the server ([`Ctx::sharing`]).

use crate::scenario::{Ctx, ScenarioResult, Verdict};
use crate::skip;
use anyhow::{Context, ensure};
use serde_json::Value;
use std::process::{Command, Output};

fn run(args: &[&str]) -> anyhow::Result<Output> {
    let bin = crate::bench::measure::sparsekit_bin()?;
    Command::new(&bin)
        .args(args)
        .output()
        .with_context(|| format!("run {}", bin.display()))
}

fn document(out: &Output) -> anyhow::Result<Value> {
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "stdout is not one JSON document: {:?} (stderr {:?})",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

pub(super) fn clone_and_dedupe_json(ctx: &Ctx<'_>) -> ScenarioResult {
    let len = 256 * 1024usize;
    let data: Vec<u8> = (0..len).map(|i| (i / 4096 % 251) as u8 + 1).collect();
    let (src, dst) = (ctx.path("src"), ctx.path("dst"));
    std::fs::write(&src, &data)?;
    let s = |p: &std::path::Path| p.to_str().expect("utf-8 scratch path").to_owned();
    let out = run(&["clone", &s(&src), &s(&dst), "--json"])?;
    if out.status.code() == Some(1) {
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        ensure!(out.stdout.is_empty(), "a failed clone printed a document");
        ensure!(!dst.exists(), "a failed clone left {}", dst.display());
        match err.split(['(', ')']).nth(1) {
            Some(errno) if errno.starts_with('E') => skip!("clone: {errno}"),
            _ => anyhow::bail!("clone failed without an errno: {err}"),
        }
    }
    ensure!(out.status.success(), "clone: {out:?}");
    let doc = document(&out)?;
    ensure!(
        doc["operation"] == "clone" && doc["strategy"] == "ficlone",
        "{doc}"
    );
    ensure!(doc["bytes"] == len as u64, "{doc}");
    ensure!(doc["destination_change"] == "created", "{doc}");
    ensure!(doc["fallbacks"] == serde_json::json!([]), "{doc}");
    ensure!(std::fs::read(&dst)? == data, "clone content differs");
    let seen = ctx.sharing(&dst, 0..len as u64)?;
    ensure!(seen.shared == len as u64, "not all shared: {seen:?}");
    match doc["shared_bytes"].as_u64() {
        Some(n) => ensure!(
            n == len as u64,
            "the document says {n} shared, FIEMAP {seen:?}"
        ),
        // Null: the client cannot observe sharing (NFS has no FIEMAP).
        None => ensure!(
            matches!(
                sparsekit_clone::sharing(&std::fs::File::open(&dst)?, 0..1),
                Err(sparsekit_clone::MapError::Unsupported { .. })
            ),
            "shared_bytes is null where FIEMAP works: {doc}"
        ),
    }

    // Dedupe of equal data: same, every byte shared.
    let other = ctx.path("other");
    std::fs::write(&other, &data)?;
    // The whole file: a range ending at EOF may be unaligned wherever the
    // block size is (NFS: 512 KiB or more).
    let whole = len.to_string();
    let range = ["--src-offset", "0", "--dst-offset", "0", "--length", &whole];
    let mut args = vec!["dedupe", &s(&src), &s(&other)]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    args.extend(range.iter().map(|a| a.to_string()));
    args.push("--json".into());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&argv)?;
    if out.status.code() == Some(1) && out.stdout.is_empty() {
        // NFS clones but has no dedupe: the refusal must name the errno
        // and leave the file alone.
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            err.contains("EOPNOTSUPP") && err.contains(&s(&other)),
            "dedupe refused unclearly: {err}"
        );
        ensure!(
            std::fs::read(&other)? == data,
            "a refused dedupe changed the file"
        );
        return Ok(Verdict::Pass);
    }
    ensure!(out.status.success(), "dedupe: {out:?}");
    let doc = document(&out)?;
    ensure!(
        doc["status"] == "same" && doc["bytes_deduped"] == len as u64,
        "{doc}"
    );
    ensure!(doc["strategy"] == "fideduperange", "{doc}");

    // Dedupe of differing data: a differs document, exit 1, nothing changed.
    let mut changed = data.clone();
    changed[5000] ^= 0xff;
    std::fs::write(&other, &changed)?;
    let out = run(&argv)?;
    ensure!(out.status.code() == Some(1), "differing dedupe: {out:?}");
    let doc = document(&out)?;
    ensure!(doc["status"] == "differs", "{doc}");
    ensure!(doc["differs_from"].as_u64().is_some(), "{doc}");
    ensure!(
        std::fs::read(&other)? == changed,
        "a differing dedupe changed the file"
    );
    Ok(Verdict::Pass)
}
