//! `ci`: what CI runs, the README's test command.

use crate::util::{cargo, is_root, run};
use anyhow::bail;

/// fmt --check, clippy -D warnings, tests, rustdoc -D warnings, the
/// README's matrix, junit.xml/kcidb.json read back by other readers,
/// `cargo package` of every published crate, then the bench.
pub(crate) fn run_ci(args: &[String]) -> anyhow::Result<()> {
    let no_bench = args.iter().any(|a| a == "--no-bench");
    let no_kernel = args.iter().any(|a| a == "--no-kernel");
    if let Some(other) = args
        .iter()
        .find(|a| *a != "--no-bench" && *a != "--no-kernel")
    {
        bail!("unknown argument {other:?}");
    }
    // The whole workspace (the bench included) builds with libclang.
    crate::setup::ensure(&["libclang-dev"])?;
    let mut c = cargo();
    c.args(["fmt", "--all", "--check"]);
    run(c)?;
    let mut c = cargo();
    c.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ]);
    run(c)?;
    let mut c = cargo();
    c.args(["test", "--workspace", "--locked"]);
    run(c)?;
    let mut c = cargo();
    c.args(["doc", "--workspace", "--no-deps", "--locked"])
        .env("RUSTDOCFLAGS", "-D warnings");
    run(c)?;
    // The README's matrix must match matrix.toml (no root needed).
    crate::matrix::command(&["readme".into(), "--check".into()])?;
    crate::man::command(&["--check".into()])?;
    // junit.xml and kcidb.json as other readers see them (no root needed).
    crate::results::check_sample()?;
    // Each library crate and the CLI can be published alone: packaged and
    // built from its .crate as crates.io would (verification needs only the
    // registry cache, so it stays on). --allow-dirty: this checks that the
    // crates package, not that the work tree is committed.
    forget_packaged_builds()?;
    let mut c = cargo();
    c.args([
        "package",
        "--workspace",
        "--exclude",
        "sparsekit-testbench",
        "--exclude",
        "xtask",
        "--locked",
        "--allow-dirty",
    ]);
    run(c)?;
    if no_bench {
        println!(
            "xtask ci: --no-bench given: the test bench was NOT run, so this is not a full pass"
        );
        return Ok(());
    }
    if !is_root() {
        bail!(
            "the unit tests passed, but the test bench needs root (loop devices, mkfs, mount) \
             and this is not root: run `sudo -E cargo xtask ci`, or `cargo xtask ci --no-bench` \
             for the unprivileged part only"
        );
    }
    crate::testbench::command(&[])?;
    if no_kernel {
        println!("xtask ci: --no-kernel given: no foreign kernel was booted");
        return Ok(());
    }
    // Another kernel, in a VM: first proof that a kernel that cannot boot
    // fails cleanly, then the capabilities of every filesystem plus a named
    // subset of scenarios (the whole suite under software emulation does
    // not fit CI's budget; see the README's "Other kernels").
    crate::kernel::selftest()?;
    crate::testbench::command(&CI_KERNEL_RUN.map(String::from))?;
    crate::testbench::command(&CI_NFS_RUN.map(String::from))
}

/// NFS in CI: v4.2 and v3 over xfs on Debian 6.12, their capabilities,
/// the server-stopped outage scenarios (soft and hard), and the scenarios
/// whose checks NFS changed (sharing seen on the server, zero detection
/// where the map calls holes data, holes by the method used; seconds each).
/// The unreachable outages (about 95 + 57 s more per definition) run in the
/// blessed columns, not here. About 9 minutes under TCG on a loaded 2-core
/// host (boot 1-3 min, server and caps about 1 min per definition, each
/// outage scenario 50-80 s).
const CI_NFS_RUN: [&str; 9] = [
    "--kernel",
    "debian:6.12",
    "--fs",
    "nfs4.2-xfs,nfs3-xfs",
    "--filter",
    "nfs/outage_stopped,clone/cli_json,copy/reflink_always,copy/random_layouts,copy/in_place_larger",
    "--no-selftest",
    "--run-timeout",
    "1800",
];

/// What `ci` runs on a foreign kernel: caps on the eight local filesystem
/// definitions (always probed) plus the scenarios named by the filter. The
/// caps scenarios: about 80 s in the guest under TCG on a loaded 2-core
/// machine (the punch scenarios add about 2 minutes and pass on 6.12 too,
/// but their random model runs would let an unrelated flake fail everyone's
/// CI). btrfs is in again since its `o_direct` trial writes over a mapped
/// range, which makes btrfs's buffered fallback visible every time (it was
/// native in most 6.12 guest runs and degraded in a few). The caps
/// scenarios but `caps/report_fast_complete_clean`, whose 1 s budget is a
/// wall-clock bound emulation misses on btrfs and overlay (1.4–1.8 s seen in
/// a loaded 6.1 guest); the host run keeps it.
///
/// The two nbd devices add their block caps (a few seconds: modprobe nbd
/// and qemu-nbd starting, twice); their `blockdev/` scenarios are not in
/// the filter (the host's `loop` device runs them in the step before).
const CI_KERNEL_RUN: [&str; 9] = [
    "--kernel",
    "debian:6.12",
    "--fs",
    "ext4,ext4-noextents,xfs,xfs-noreflink,btrfs,btrfs-zstd,overlay-xfs,tmpfs,nbd,nbd-discard-ignore",
    "--filter",
    "caps/named_scratch_clean,caps/agrees_with_direct_checks,caps/memoized_per_filesystem,caps/memo_forgets_an_unmounted_filesystem,caps/tmpfs_snapshot",
    "--no-selftest",
    "--run-timeout",
    "1800",
];

/// Removes what an earlier `cargo package` built from its temporary
/// registry. Cargo takes registry crates as immutable, so an unchanged
/// version (0.1.0) with a new module would verify against the stale build
/// (observed: `unresolved import sparsekit_sys::lease`). They are found by
/// their dep-info naming a source under `registry/src/-*` (the temporary
/// registry's directory; crates.io's is `index.crates.io-*`).
fn forget_packaged_builds() -> anyhow::Result<()> {
    forget_packaged_sources()?;
    let debug = crate::util::root().join("target/debug");
    let Ok(entries) = std::fs::read_dir(debug.join("deps")) else {
        return Ok(()); // nothing built yet
    };
    let mut hashes = Vec::new();
    for e in entries {
        let path = e?.path();
        if path.extension().is_none_or(|x| x != "d") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if !text.contains("/registry/src/-") {
            continue;
        }
        if let Some((_, hash)) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.rsplit_once('-'))
        {
            hashes.push(format!("-{hash}"));
        }
    }
    for dir in ["deps", ".fingerprint"] {
        for e in std::fs::read_dir(debug.join(dir))? {
            let path = e?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let stem = name.split('.').next().unwrap_or("");
            if hashes.iter().any(|h| stem.ends_with(h.as_str())) {
                if path.is_dir() {
                    std::fs::remove_dir_all(&path)?;
                } else {
                    std::fs::remove_file(&path)?;
                }
            }
        }
    }
    Ok(())
}

/// Removes the sources an earlier `cargo package` unpacked from its
/// temporary registry (`$CARGO_HOME/registry/src/-*/sparsekit-*`): cargo
/// never unpacks a registry crate twice, so a second run on one machine
/// verified the CLI against the library as it was at the first (observed:
/// `no method named progress_total` an hour after an earlier run).
/// crates.io's sources (`index.crates.io-*`) are left alone.
fn forget_packaged_sources() -> anyhow::Result<()> {
    let home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cargo")));
    let Some(src) = home.map(|h| h.join("registry/src")) else {
        return Ok(());
    };
    let Ok(registries) = std::fs::read_dir(&src) else {
        return Ok(()); // nothing unpacked yet
    };
    for registry in registries {
        let registry = registry?.path();
        let temporary = registry
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('-'));
        if !temporary || !registry.is_dir() {
            continue;
        }
        for e in std::fs::read_dir(&registry)? {
            let path = e?.path();
            let ours = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("sparsekit-"));
            if ours && path.is_dir() {
                std::fs::remove_dir_all(&path)?;
            }
        }
    }
    Ok(())
}
