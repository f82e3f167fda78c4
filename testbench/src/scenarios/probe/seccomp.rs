//! The statx fallback for real: `sparsekit stat` run under a seccomp filter
//! (loaded by bubblewrap) that makes statx fail with ENOSYS or EPERM, as
//! old container runtimes do. The definitive probe must confirm statx is
//! gone, and the answer must come from fstatat with the basic fields only,
//! saying so.

use crate::scenario::{Ctx, ScenarioResult, Verdict};
use crate::skip;
use anyhow::{Context, ensure};
use rustix::io::Errno;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// `AUDIT_ARCH_*` and `__NR_statx` of this architecture.
fn arch_and_nr() -> Option<(u32, u32)> {
    if cfg!(target_arch = "x86_64") {
        Some((0xc000_003e, 332))
    } else if cfg!(target_arch = "aarch64") {
        Some((0xc000_00b7, 291))
    } else {
        None
    }
}

/// A classic-BPF seccomp program (`struct sock_filter[]`, as
/// `seccomp_export_bpf` writes it) that fails statx with `errno` and
/// allows everything else.
fn filter(errno: Errno) -> Option<Vec<u8>> {
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    const RET_ERRNO: u32 = 0x0005_0000;
    const RET_ALLOW: u32 = 0x7fff_0000;
    let (arch, nr) = arch_and_nr()?;
    let insns: [(u16, u8, u8, u32); 6] = [
        (LD_W_ABS, 0, 0, 4), // seccomp_data.arch
        (JEQ_K, 0, 3, arch), // another ABI: allow
        (LD_W_ABS, 0, 0, 0), // seccomp_data.nr
        (JEQ_K, 0, 1, nr),
        (RET_K, 0, 0, RET_ERRNO | errno.raw_os_error() as u32),
        (RET_K, 0, 0, RET_ALLOW),
    ];
    let mut prog = Vec::with_capacity(insns.len() * 8);
    for (code, jt, jf, k) in insns {
        prog.extend_from_slice(&code.to_ne_bytes());
        prog.push(jt);
        prog.push(jf);
        prog.extend_from_slice(&k.to_ne_bytes());
    }
    Some(prog)
}

/// Runs `argv` under bwrap with `prog` as its seccomp filter (given on
/// stdin, `--seccomp 0`).
fn under_filter(prog: &[u8], dir: &Path, argv: &[&str]) -> anyhow::Result<Output> {
    let prog_path = dir.join("filter.bpf");
    File::create(&prog_path)?.write_all(prog)?;
    let out = Command::new("bwrap")
        .args(["--dev-bind", "/", "/", "--seccomp", "0"])
        .args(argv)
        .stdin(File::open(&prog_path)?)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .context("run bwrap")?;
    std::fs::remove_file(&prog_path)?;
    Ok(out)
}

/// `probe/fallback_under_seccomp`: see the module docs.
pub fn fallback_under_seccomp(ctx: &Ctx<'_>) -> ScenarioResult {
    if !crate::tools::have("bwrap") {
        skip!("bwrap not installed (apt-get install bubblewrap): cannot filter statx");
    }
    if arch_and_nr().is_none() {
        skip!("no statx syscall number known for this architecture");
    }
    let probe = Command::new("bwrap")
        .args(["--dev-bind", "/", "/", "true"])
        .output()
        .context("run bwrap")?;
    if !probe.status.success() {
        skip!(
            "bwrap cannot run here: {}",
            String::from_utf8_lossy(&probe.stderr).trim()
        );
    }
    let bin = crate::bench::measure::sparsekit_bin()?;
    let bin = bin.to_str().context("binary path")?;
    let f = ctx.create("seccomp")?;
    f.write_all_at(&[1u8; 65536], 0)?;
    f.sync_all()?;
    let path = ctx.path("seccomp");
    let path = path.to_str().context("path")?;

    // Control: without the filter statx answers.
    let out = Command::new(bin).args(["stat", "--json", path]).output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    ensure!(
        v["strategy"] == "statx" && v["fallbacks"] == serde_json::json!([]),
        "without a filter: {v}"
    );

    for (errno, name) in [(Errno::NOSYS, "ENOSYS"), (Errno::PERM, "EPERM")] {
        let prog = filter(errno).context("filter")?;
        let out = under_filter(
            &prog,
            ctx.dir(),
            &[bin, "stat", "--json", "--fields", "all", path],
        )?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.success(),
            "statx filtered with {name}: stat failed: {stderr}"
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        ensure!(
            v["strategy"] == "fstatat",
            "statx filtered with {name}: answered by {}",
            v["strategy"]
        );
        // rustix runs its own definitive probe on the first failure and
        // reports a filtered statx as ENOSYS whatever the filter returned.
        let record = |errno: &str| serde_json::json!([{"strategy": "statx", "errno": errno}]);
        ensure!(
            v["fallbacks"] == record(name) || v["fallbacks"] == record("ENOSYS"),
            "fallbacks: {}",
            v["fallbacks"]
        );
        ensure!(
            stderr.contains("statx is not available")
                && (stderr.contains(name) || stderr.contains("ENOSYS"))
                && stderr.contains("statx on a pipe"),
            "no warning with the reason on stderr: {stderr}"
        );
        ensure!(v["fields"]["size"] == 65536, "size: {v}");
        let filled: Vec<&str> = v["filled"]
            .as_array()
            .context("filled")?
            .iter()
            .filter_map(|s| s.as_str())
            .collect();
        let basic: Vec<&str> = sparsekit_probe::Fields::BASIC.names().collect();
        ensure!(filled == basic, "fstatat claims {filled:?}");
        ensure!(
            v["fields"].get("btime").is_none() && v["attributes"].is_null(),
            "invented: {v}"
        );

        // Forcing statx under the filter fails with the filter's errno, exit 1.
        let out = under_filter(
            &prog,
            ctx.dir(),
            &[bin, "stat", "--strategy", "statx", path],
        )?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code() == Some(1),
            "forced statx exited {}: {stderr}",
            out.status
        );
        ensure!(
            stderr.contains(&format!("{path}: statx: {name}"))
                || stderr.contains(&format!("{path}: statx: ENOSYS")),
            "{stderr}"
        );
    }
    Ok(Verdict::Pass)
}
