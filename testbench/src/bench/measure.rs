//! Timing and peak memory of a command, measured by GNU time
//! (`/usr/bin/time -f "%e %M"`), and cache dropping between runs.

use anyhow::{Context, bail};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// One command's cost.
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    /// Wall seconds.
    pub seconds: f64,
    /// Peak resident set, KiB.
    pub max_rss_kib: u64,
}

/// Runs `argv` with stdout discarded; fails if it fails.
pub fn run(argv: &[&str]) -> anyhow::Result<Cost> {
    let child = Command::new("/usr/bin/time")
        .args(["-f", "SPARSEKIT-TIME %e %M"])
        .args(argv)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .context("run /usr/bin/time (apt-get install time)")?;
    // A signal to the bench kills the tool too: its open files would
    // keep the mounts busy.
    let _running = crate::cleanup::Running::new(child.id());
    let out = child.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("{argv:?} failed: {}", stderr.trim());
    }
    let line = stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("SPARSEKIT-TIME "))
        .context("no timing line from /usr/bin/time")?;
    let mut it = line.split_whitespace();
    Ok(Cost {
        seconds: it.next().context("seconds")?.parse()?,
        max_rss_kib: it.next().context("rss")?.parse()?,
    })
}

/// The best of `n` runs of each of `ours` and `peer`, interleaved so that
/// load from elsewhere on the machine falls on both alike.
pub fn best_of_pair(n: usize, ours: &[&str], peer: &[&str]) -> anyhow::Result<(Cost, Cost)> {
    let (mut a, mut b): (Option<Cost>, Option<Cost>) = (None, None);
    for _ in 0..n {
        for (argv, best) in [(ours, &mut a), (peer, &mut b)] {
            let c = run(argv)?;
            if best.is_none_or(|x| c.seconds < x.seconds) {
                *best = Some(c);
            }
        }
    }
    Ok((a.context("no runs")?, b.context("no runs")?))
}

/// `sync; echo 3 > /proc/sys/vm/drop_caches`.
pub fn drop_caches() -> anyhow::Result<()> {
    rustix::fs::sync();
    std::fs::write("/proc/sys/vm/drop_caches", "3").context("drop caches (needs root)")
}

/// The `sparsekit` binary built next to this one (target/release/sparsekit).
pub fn sparsekit_bin() -> anyhow::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("sparsekit");
    if !bin.is_file() {
        bail!(
            "{} not built: run `cargo build --release -p sparsekit-cli`",
            bin.display()
        );
    }
    Ok(bin)
}
