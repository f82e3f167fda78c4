//! `sparsekit clone` and `dedupe` with stdout on a full disk (`/dev/full`)
//! or a closed pipe, where sharing works (so the command gets as far as
//! printing). They panicked (exit 101) before; now a full stdout is exit 1
//! saying the clone itself completed, a closed pipe is exit 0, and the
//! destination holds the source's data either way.

use super::{block_size, pattern};
use crate::scenario::{Ctx, ScenarioResult, Verdict};
use crate::skip;
use anyhow::{Context, ensure};
use std::process::{Command, Stdio};

/// Runs `sparsekit ARGS` with stdout to `/dev/full` (`full`) or to a pipe
/// whose reader is closed; returns (exit code, stderr).
fn run(bin: &str, args: &[&str], full: bool) -> anyhow::Result<(Option<i32>, String)> {
    let stdout = if full {
        Stdio::from(std::fs::File::options().write(true).open("/dev/full")?)
    } else {
        let (reader, writer) = rustix::pipe::pipe()?;
        drop(reader);
        Stdio::from(writer)
    };
    let out = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("spawn sparsekit {args:?}"))?;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// `clone/cli_stdout_errors`: see the module docs.
pub(super) fn cli_stdout_errors(ctx: &Ctx<'_>) -> ScenarioResult {
    let bin = crate::bench::measure::sparsekit_bin()?;
    let bin = bin.to_str().context("binary path")?;
    let block = block_size(ctx)? as usize;
    let content = pattern(7, 16 * block as u64);
    std::fs::write(ctx.path("src"), &content)?;
    std::fs::write(ctx.path("same"), &content)?;
    let (src, same) = (ctx.path("src"), ctx.path("same"));
    let (src, same) = (
        src.to_str().context("path")?,
        same.to_str().context("path")?,
    );
    if let Err(e) = sparsekit_clone::clone_file_to_path(src, ctx.path("probe")) {
        skip!("FICLONE not supported here: {e}");
    }
    let length = (16 * block).to_string();
    for full in [true, false] {
        let dst = ctx.path(if full { "dst-full" } else { "dst-pipe" });
        let dst = dst.to_str().context("path")?;
        let cases: [(&str, Vec<&str>); 3] = [
            ("clone", vec!["clone", src, dst]),
            (
                "clone range",
                vec!["clone", src, dst, "--length", &length, "--timeout", "10s"],
            ),
            (
                "dedupe",
                vec![
                    "dedupe",
                    src,
                    same,
                    "--src-offset",
                    "0",
                    "--dst-offset",
                    "0",
                    "--length",
                    &length,
                ],
            ),
        ];
        for (what, args) in cases {
            let (code, err) = run(bin, &args, full)?;
            if what == "dedupe" && code == Some(1) && err.contains("not supported") {
                skip!("FIDEDUPERANGE not supported here: {err}");
            }
            ensure!(!err.contains("panicked"), "{what}: panicked: {err}");
            if full {
                ensure!(code == Some(1), "{what} > /dev/full: exit {code:?}: {err}");
                ensure!(
                    err.contains("stdout: write: ENOSPC")
                        && err.contains("the operation itself completed"),
                    "{what} > /dev/full: {err}"
                );
            } else {
                ensure!(code == Some(0), "{what} | (closed): exit {code:?}: {err}");
            }
            let target = if what == "dedupe" { same } else { dst };
            ensure!(
                std::fs::read(target)? == content,
                "{what}: {target} does not hold the source's data"
            );
        }
    }
    Ok(Verdict::Pass)
}
