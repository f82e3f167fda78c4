//! The frozen cases: a command with `--timeout` on a file that stops
//! answering, at once or in the middle of the operation.

use super::mount::FaultMount;
use super::rule::Rule;
use super::{Cli, LIMIT, MIB, case, entries, lost_bytes, model, no_panic, s, setup, write_sparse};
use crate::scenario::{Ctx, ScenarioResult, Verdict};
use crate::skip;
use anyhow::ensure;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `--timeout` of the frozen cases.
const TIMEOUT: &str = "700ms";
/// How long a frozen case may take: the timeout, the CLI watchdog's grace
/// for the command to stop by itself (1 s) and its bound on cleaning up on
/// a mount that does not answer (2 s), plus 1 s for a loaded machine
/// (stretched under TCG, where starting the process alone took seconds).
fn timeout_bound() -> Duration {
    Duration::from_millis(700 + 1000 + 2000) + crate::scenario::wall_budget(Duration::from_secs(1))
}

/// How a frozen case stalls.
enum Freeze {
    /// This name (`*`: every name) is frozen before the command starts.
    Name(&'static str),
    /// The first request of this name at this byte freezes it.
    At(&'static str, u64),
}

/// A command on a frozen file, with `--timeout`: exit 3 within a bounded
/// time naming the path; after the thaw the source is unchanged and no
/// destination or temporary file is left. `argv` gets `--timeout`
/// appended.
fn frozen_case(
    ctx: &Ctx<'_>,
    cmd: &str,
    freeze: Freeze,
    argv: impl FnOnce(&FaultMount, &Path) -> anyhow::Result<Vec<String>>,
) -> ScenarioResult {
    let cli = Cli::new()?;
    if !cli.has_timeout(cmd)? {
        skip!("`sparsekit {cmd}` has no --timeout yet (the cli branch adds it)");
    }
    let (mut fm, out) = setup(ctx)?;
    let bytes = model(11);
    write_sparse(&fm.backing("f"), &bytes)?;
    let local = out.join("f");
    write_sparse(&local, &bytes)?;
    let before_mnt = entries(fm.backing_dir())?;
    let before_out = entries(&out)?;
    let mut args = argv(&fm, &out)?;
    args.extend(["--timeout".to_owned(), TIMEOUT.to_owned()]);
    let named = args[1].clone();
    let what = match freeze {
        Freeze::Name(_) => format!("{cmd} on a frozen file"),
        Freeze::At(_, at) => format!("{cmd} on a file that freezes at byte {at}"),
    };
    case(&mut fm, &what, |fm| {
        match freeze {
            Freeze::Name(name) => fm.freeze(name)?,
            Freeze::At(name, at) => fm.set(
                name,
                &Rule {
                    freeze_at: Some(at),
                    ..Rule::default()
                },
            )?,
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = cli.run(&argv, LIMIT)?;
        fm.thaw("*")?;
        let lost = lost_bytes(&fm.backing("f"), &bytes) + lost_bytes(&local, &bytes);
        let checks = (|| {
            no_panic(cmd, &r)?;
            ensure!(
                r.code == Some(3),
                "{cmd} on a frozen file exited {:?}, want 3 (timeout): {}",
                r.code,
                r.stderr
            );
            ensure!(
                r.elapsed < timeout_bound(),
                "{cmd} --timeout {TIMEOUT} took {:?} (bound {:?})",
                r.elapsed,
                timeout_bound()
            );
            ensure!(
                r.stderr.contains(named.as_str())
                    || r.stderr.contains(fm.mountpoint().to_str().unwrap_or("")),
                "{cmd}: the message names neither {named} nor the mount: {}",
                r.stderr
            );
            // Held requests of the killed command are answered; then the
            // directories must hold what they held.
            // On a destination frozen mid-write, the staged file cannot be
            // removed (its mount does not answer, and FUSE has no
            // O_TMPFILE): a hidden name is allowed there if the message
            // names it, so the user can remove it. The final name never.
            let after = entries(fm.backing_dir())?;
            for left in after.difference(&before_mnt) {
                ensure!(
                    left.starts_with('.') && named_in(&r.stderr, left),
                    "left on the mount: {left:?} (before {before_mnt:?}), not named as left over: {}",
                    r.stderr
                );
            }
            let after = entries(&out)?;
            ensure!(after == before_out, "left in {}: {after:?}", out.display());
            Ok(())
        })();
        Ok((lost, checks, r.stderr.clone()))
    })?;
    fm.teardown()?;
    Ok(Verdict::Pass)
}

/// Whether `msg` names the file `name`: literally, or by a pattern with
/// one `*` (`/dir/.dst.sparsekit-123-*.tmp`).
fn named_in(msg: &str, name: &str) -> bool {
    msg.contains(name)
        || msg.split_whitespace().any(|word| {
            let base = word.rsplit('/').next().unwrap_or(word);
            base.split_once('*').is_some_and(|(pre, post)| {
                name.len() >= pre.len() + post.len()
                    && name.starts_with(pre)
                    && name.ends_with(post)
            })
        })
}

fn path_string(p: PathBuf) -> anyhow::Result<String> {
    Ok(s(&p)?.to_owned())
}

/// `faults/frozen_stat`: `stat --timeout` on a frozen file.
pub(super) fn frozen_stat(ctx: &Ctx<'_>) -> ScenarioResult {
    frozen_case(ctx, "stat", Freeze::Name("f"), |fm, _| {
        Ok(vec!["stat".into(), path_string(fm.path("f"))?])
    })
}

/// `faults/frozen_map`: `map --timeout` on a frozen file.
pub(super) fn frozen_map(ctx: &Ctx<'_>) -> ScenarioResult {
    frozen_case(ctx, "map", Freeze::Name("f"), |fm, _| {
        Ok(vec!["map".into(), path_string(fm.path("f"))?])
    })
}

/// `faults/frozen_dig`: `dig --dry-run --timeout` on a frozen file.
pub(super) fn frozen_dig(ctx: &Ctx<'_>) -> ScenarioResult {
    frozen_case(ctx, "dig", Freeze::Name("f"), |fm, _| {
        Ok(vec![
            "dig".into(),
            path_string(fm.path("f"))?,
            "--dry-run".into(),
        ])
    })
}

/// `faults/frozen_punch`: `punch --timeout` on a frozen file.
pub(super) fn frozen_punch(ctx: &Ctx<'_>) -> ScenarioResult {
    frozen_case(ctx, "punch", Freeze::Name("f"), |fm, _| {
        Ok(vec![
            "punch".into(),
            path_string(fm.path("f"))?,
            "--offset".into(),
            "3M".into(),
            "--length".into(),
            "64K".into(),
        ])
    })
}

/// `faults/frozen_copy_source`: `copy --timeout` from a frozen file.
pub(super) fn frozen_copy_source(ctx: &Ctx<'_>) -> ScenarioResult {
    frozen_case(ctx, "copy", Freeze::Name("f"), |fm, out| {
        Ok(vec![
            "copy".into(),
            path_string(fm.path("f"))?,
            path_string(out.join("dst"))?,
        ])
    })
}

/// `faults/frozen_copy_destination`: `copy --timeout` into a frozen mount
/// (every name frozen, so the staging file's creation hangs).
pub(super) fn frozen_copy_destination(ctx: &Ctx<'_>) -> ScenarioResult {
    frozen_case(ctx, "copy", Freeze::Name("*"), |fm, out| {
        Ok(vec![
            "copy".into(),
            path_string(out.join("f"))?,
            path_string(fm.path("dst"))?,
        ])
    })
}

/// `faults/stalled_copy_source`: `copy --timeout` from a file that
/// freezes at 3 MiB, after most of the copy was done.
pub(super) fn stalled_copy_source(ctx: &Ctx<'_>) -> ScenarioResult {
    frozen_case(ctx, "copy", Freeze::At("f", 3 * MIB), |fm, out| {
        Ok(vec![
            "copy".into(),
            path_string(fm.path("f"))?,
            path_string(out.join("dst"))?,
        ])
    })
}

/// `faults/stalled_copy_destination`: `copy --timeout` into the fault
/// mount, whose staged file freezes when written at 2 MiB.
pub(super) fn stalled_copy_destination(ctx: &Ctx<'_>) -> ScenarioResult {
    frozen_case(ctx, "copy", Freeze::At("*", 2 * MIB), |fm, out| {
        Ok(vec![
            "copy".into(),
            path_string(out.join("f"))?,
            path_string(fm.path("dst"))?,
        ])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_are_named_literally_or_by_a_pattern() {
        let msg = "a staged file /m/.dst.sparsekit-10280-*.tmp may be left: remove it";
        assert!(named_in(msg, ".dst.sparsekit-10280-0.tmp"));
        assert!(!named_in(msg, ".dst.sparsekit-999-0.tmp"));
        assert!(!named_in(msg, ".other"));
        assert!(named_in("left /m/.x.tmp", ".x.tmp"));
    }
}
