//! `cargo xtask testbench --kernel SPEC[,SPEC…]`: the bench on other kernels,
//! in a VM. Stages: resolve → download → unpack ([`fetch`]) → boot → run
//! ([`vm`]) → collect (the host's `sparsekit-testbench collect`, which
//! compares the guest's column with the committed matrix and blesses it).
//!
//! Why here and not in the testbench crate: the launcher drives host tools
//! (apt, dpkg, virtme-run, QEMU) and cargo, and the testbench binary is what
//! runs *inside* the guest; keeping the launcher out of it means the guest
//! runs exactly the binary a host run uses, and xtask stays the one place
//! that installs and orchestrates.
//!
//! Every stage is bounded by a timeout; a failure names the kernel, the stage
//! and the log to read; every child runs in a process group killed by a guard
//! ([`group::Group`]), and half-downloaded or half-unpacked files live under
//! temporary names removed on failure.

mod fetch;
mod group;
pub(crate) mod spec;
mod vm;

use crate::util::{cargo, root, run};
use anyhow::{Context, bail};
use spec::Spec;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Stage time limits (the run's is `--run-timeout`).
pub(crate) mod limits {
    use std::time::Duration;
    /// apt-get download of a ~100 MB package.
    pub(crate) const DOWNLOAD: Duration = Duration::from_secs(900);
    /// dpkg -x.
    pub(crate) const UNPACK: Duration = Duration::from_secs(300);
    /// Power-on to the guest script: 5–6 s under TCG on an idle host; a
    /// loaded shared host is many times slower.
    pub(crate) const BOOT: Duration = Duration::from_secs(300);
    /// The bench inside, by default.
    pub(crate) const RUN: Duration = Duration::from_secs(3600);
}

/// The launcher's stages, named in every failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Resolve,
    Download,
    Unpack,
    Boot,
    Run,
    Collect,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Resolve => "resolve",
            Stage::Download => "download",
            Stage::Unpack => "unpack",
            Stage::Boot => "boot",
            Stage::Run => "run",
            Stage::Collect => "collect",
        }
    }
}

/// A failed stage: which kernel, which stage, which log to read.
#[derive(Debug)]
pub(crate) struct StageError {
    pub(crate) kernel: String,
    pub(crate) stage: Stage,
    pub(crate) log: PathBuf,
    pub(crate) error: anyhow::Error,
}

impl StageError {
    pub(crate) fn new(kernel: &str, stage: Stage, log: &Path, error: anyhow::Error) -> Self {
        StageError {
            kernel: kernel.to_owned(),
            stage,
            log: log.to_owned(),
            error,
        }
    }
}

impl std::fmt::Display for StageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "kernel {}: stage {} failed: {:#} (log: {})",
            self.kernel,
            self.stage.name(),
            self.error,
            self.log.display()
        )
    }
}

impl std::error::Error for StageError {}

/// `testbench` arguments split into the kernels, the launcher's own
/// options and what goes to the bench.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct KernelArgs {
    pub(crate) specs: Vec<Spec>,
    pub(crate) run_limit: Option<Duration>,
    pub(crate) bless: bool,
    /// For the bench (`--fs`, `--filter`, `--no-selftest`, `--no-install`).
    pub(crate) bench: Vec<String>,
}

/// Splits `testbench` arguments; `None` without `--kernel`.
pub(crate) fn parse_args(args: &[String]) -> anyhow::Result<Option<KernelArgs>> {
    let mut k = KernelArgs::default();
    let mut any = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--kernel" => {
                any = true;
                k.specs = spec::parse_specs(it.next().context("--kernel SPEC[,SPEC…]")?)?;
            }
            "--run-timeout" => {
                let secs: u64 = it
                    .next()
                    .context("--run-timeout SECONDS")?
                    .parse()
                    .context("--run-timeout SECONDS")?;
                k.run_limit = Some(Duration::from_secs(secs));
            }
            "--bless" => k.bless = true,
            "--fs" | "--filter" => {
                k.bench.push(a.clone());
                k.bench
                    .push(it.next().with_context(|| format!("{a} VALUE"))?.clone());
            }
            "--no-selftest" | "--no-install" => k.bench.push(a.clone()),
            other => bail!("unknown argument {other:?} for testbench --kernel"),
        }
    }
    if !any {
        if k.run_limit.is_some() {
            bail!("--run-timeout goes with --kernel");
        }
        return Ok(None);
    }
    Ok(Some(k))
}

/// Runs the bench on every kernel of `k`, one after the other; fails if any
/// failed, after trying all.
pub(crate) fn run_kernels(k: &KernelArgs) -> anyhow::Result<()> {
    let vm_needed = k.specs.iter().any(|s| *s != Spec::Host);
    if vm_needed {
        crate::setup::ensure_vm()?;
    }
    let mut c = cargo();
    c.args([
        "build",
        "--release",
        "--locked",
        "-p",
        "sparsekit-testbench",
        "-p",
        "sparsekit-cli",
    ]);
    run(c)?;
    let accel = if vm_needed {
        let (accel, why) = vm::probe_accel();
        println!("kernel: QEMU acceleration {accel:?}: {why}");
        accel
    } else {
        vm::Accel::Tcg
    };
    let mut failures = Vec::new();
    for spec in &k.specs {
        let started = Instant::now();
        let result = match spec {
            Spec::Host => host(k),
            _ => guest(spec, k, accel).map_err(anyhow::Error::from),
        };
        println!(
            "kernel {}: {} in {:.0} s",
            spec.label(),
            if result.is_ok() { "passed" } else { "FAILED" },
            started.elapsed().as_secs_f64()
        );
        if let Err(e) = result {
            eprintln!("xtask: {e:#}");
            failures.push(spec.label());
        }
    }
    if !failures.is_empty() {
        bail!("the bench failed on: {}", failures.join(", "));
    }
    Ok(())
}

fn host(k: &KernelArgs) -> anyhow::Result<()> {
    let mut args = k.bench.clone();
    if k.bless {
        args.push("--bless".into());
    }
    let mut c = Command::new(testbench_bin());
    c.arg("run").args(args).current_dir(root());
    run(c)
}

fn testbench_bin() -> PathBuf {
    root().join("target/release/sparsekit-testbench")
}

/// The release testbench and CLI copied beside the guest's run directory
/// (`target/kernel-runs/LABEL.bin/`); returns the testbench's path. The
/// guest runs this copy: a release build of the checkout while a guest
/// runs (`cargo xtask ci` does one) replaced `target/release/`'s binaries
/// under it, and every FUSE daemon the bench then started from its own
/// path died before mounting.
fn guest_binaries(label: &str) -> anyhow::Result<PathBuf> {
    let dir = runs_dir().join(format!("{label}.bin"));
    std::fs::create_dir_all(&dir)?;
    let release = root().join("target/release");
    for name in ["sparsekit-testbench", "sparsekit"] {
        let (from, to) = (release.join(name), dir.join(name));
        // Copied to a temporary name and renamed: a guest still running
        // an older copy keeps its inode.
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::copy(&from, &tmp)
            .with_context(|| format!("copy {} to {}", from.display(), tmp.display()))?;
        std::fs::rename(&tmp, &to)?;
    }
    Ok(dir.join("sparsekit-testbench"))
}

/// `target/kernels`: the package cache (shared between checkouts, so a
/// second checkout downloads nothing).
fn cache_dir() -> PathBuf {
    root().join("target/kernels")
}

/// `target/kernel-runs`: each guest's writable directory, per checkout
/// (not in the shared cache: two checkouts booting the same kernel at once
/// would empty each other's run).
fn runs_dir() -> PathBuf {
    root().join("target/kernel-runs")
}

fn guest(spec: &Spec, k: &KernelArgs, accel: vm::Accel) -> Result<(), StageError> {
    let label = spec.label();
    let cache = cache_dir();
    let logs = cache.join("logs").join(&label);
    std::fs::create_dir_all(&logs)
        .map_err(|e| StageError::new(&label, Stage::Resolve, &logs, e.into()))?;
    let kernel = match spec {
        Spec::Debian { series } => fetch::debian(series, &label, &cache, &logs)?,
        Spec::Image(p) => {
            let image = std::fs::canonicalize(p).map_err(|e| {
                StageError::new(
                    &label,
                    Stage::Resolve,
                    p,
                    anyhow::Error::from(e).context("no such kernel image"),
                )
            })?;
            fetch::Kernel {
                image,
                package: std::env::var("SPARSEKIT_KERNEL_PACKAGE").ok(),
            }
        }
        Spec::Host => unreachable!("the host runs without a VM"),
    };
    let rwdir = runs_dir().join(&label);
    let run_limit = k.run_limit.unwrap_or(limits::RUN);
    let testbench =
        guest_binaries(&label).map_err(|e| StageError::new(&label, Stage::Boot, &rwdir, e))?;
    let rc = vm::boot_and_run(&vm::GuestRun {
        label: &label,
        image: &kernel.image,
        package: kernel.package.as_deref(),
        testbench: &testbench,
        bench_args: &k.bench,
        rwdir: &rwdir,
        accel,
        boot_limit: limits::BOOT,
        run_limit,
        fault: vm::Fault::None,
    })?;
    let guest_log = rwdir.join("guest.log");
    // The guest's report, shown here since its stdout is lost.
    if let Ok(text) = std::fs::read_to_string(&guest_log) {
        let summary: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("filesystem "))
            .collect();
        for l in summary {
            println!("  guest| {l}");
        }
    }
    let out = rwdir.join("out");
    let mut c = Command::new(testbench_bin());
    c.arg("collect").arg(&out).current_dir(root());
    if k.bless {
        c.arg("--bless");
    }
    let collected = run(c);
    if rc != 0 {
        return Err(StageError::new(
            &label,
            Stage::Run,
            &guest_log,
            anyhow::anyhow!("the bench failed in the guest (exit {rc})"),
        ));
    }
    collected.map_err(|e| StageError::new(&label, Stage::Collect, &out.join("matrix.toml"), e))
}

/// `cargo xtask kernel-selftest`: every way a guest run can fail, forced
/// for real, ends with a message naming the kernel, the stage and a log that
/// exists, within its time limit, with no process left behind:
/// - a garbage vmlinuz (boot);
/// - the Debian 6.12 kernel (from the cache) whose btrfs module is removed:
///   the btrfs definition is skipped with the reason, the run passes;
/// - the same kernel panicking a few seconds into the bench (run);
/// - a guest whose bench never ends (run, bounded by its time limit).
pub(crate) fn selftest() -> anyhow::Result<()> {
    crate::setup::ensure_vm()?;
    let dir = runs_dir().join("selftest");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let garbage = dir.join("vmlinuz-garbage");
    std::fs::write(&garbage, vec![0x5a_u8; 1 << 20])?;
    // A garbage image either makes QEMU exit at once or runs garbage
    // forever; a working kernel reaches its script in seconds.
    expect_failure(
        &dir,
        "selftest-garbage",
        &garbage,
        vm::Fault::None,
        Stage::Boot,
        Duration::from_secs(60),
        "",
    )?;
    run(release_build())?;
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let kernel = fetch::debian("6.12", "debian-6.12", &cache_dir(), &logs)?;
    let image = without_module(&kernel.image, &dir.join("no-btrfs"), "btrfs")?;
    missing_module_is_skipped(&dir, &image)?;
    expect_failure(
        &dir,
        "selftest-panic",
        &image,
        vm::Fault::Panic,
        Stage::Run,
        limits::BOOT + Duration::from_secs(300),
        "Kernel panic",
    )?;
    expect_failure(
        &dir,
        "selftest-hang",
        &image,
        vm::Fault::Hang,
        Stage::Run,
        limits::BOOT + Duration::from_secs(60),
        "did not finish in 20 s",
    )?;
    std::fs::remove_dir_all(&dir)?;
    println!(
        "kernel selftest: passed (each failure named with its stage and log, bounded, nothing left running)"
    );
    Ok(())
}

fn release_build() -> Command {
    let mut c = cargo();
    c.args([
        "build",
        "--release",
        "--locked",
        "-p",
        "sparsekit-testbench",
    ]);
    c
}

fn selftest_run<'a>(
    label: &'a str,
    image: &'a Path,
    testbench: &'a Path,
    rwdir: &'a Path,
    args: &'a [String],
    fault: vm::Fault,
) -> vm::GuestRun<'a> {
    vm::GuestRun {
        label,
        image,
        package: None,
        testbench,
        bench_args: args,
        rwdir,
        accel: vm::Accel::Tcg,
        boot_limit: limits::BOOT,
        run_limit: Duration::from_secs(20),
        fault,
    }
}

/// Boots `image` with `fault` and checks the run fails at `stage` with a
/// message naming the kernel, the stage, `needle` and an existing log, in
/// less than `bound`, leaving no process that mentions `dir`.
fn expect_failure(
    dir: &Path,
    label: &str,
    image: &Path,
    fault: vm::Fault,
    stage: Stage,
    bound: Duration,
    needle: &str,
) -> anyhow::Result<()> {
    let rwdir = dir.join(label);
    let args = [
        "--fs".to_owned(),
        "tmpfs".to_owned(),
        "--no-selftest".to_owned(),
    ];
    let bin = guest_binaries(label)?;
    let mut g = selftest_run(label, image, &bin, &rwdir, &args, fault);
    if label == "selftest-garbage" {
        g.boot_limit = Duration::from_secs(30);
    }
    let started = Instant::now();
    let e = match vm::boot_and_run(&g) {
        Ok(rc) => bail!("kernel selftest {label}: the guest ran the bench to the end (exit {rc})"),
        Err(e) => e,
    };
    let took = started.elapsed();
    let msg = e.to_string();
    println!(
        "kernel selftest {label}: after {:.0} s: {msg}",
        took.as_secs_f64()
    );
    let stage_text = format!("stage {}", stage.name());
    if e.stage != stage
        || !msg.contains(label)
        || !msg.contains(&stage_text)
        || !msg.contains(needle)
    {
        bail!(
            "kernel selftest {label}: expected a {stage_text} failure naming the kernel and {needle:?}, got: {msg}"
        );
    }
    if !e.log.is_file() {
        bail!(
            "kernel selftest {label}: the named log {} does not exist",
            e.log.display()
        );
    }
    if took > bound {
        bail!(
            "kernel selftest {label}: took {:.0} s, over its bound of {} s",
            took.as_secs_f64(),
            bound.as_secs()
        );
    }
    let leftovers = qemu_processes_under(dir);
    if !leftovers.is_empty() {
        bail!("kernel selftest {label}: processes left behind: {leftovers:?}");
    }
    Ok(())
}

/// A guest whose kernel lacks a filesystem's module: the definition is
/// skipped with the reason, nothing fails, and the launcher names the module.
fn missing_module_is_skipped(dir: &Path, image: &Path) -> anyhow::Result<()> {
    let label = "selftest-no-btrfs";
    let rwdir = dir.join(label);
    let args = [
        "--fs".to_owned(),
        "btrfs".to_owned(),
        "--no-selftest".to_owned(),
    ];
    let bin = guest_binaries(label)?;
    let g = selftest_run(label, image, &bin, &rwdir, &args, vm::Fault::None);
    let g = vm::GuestRun {
        run_limit: Duration::from_secs(600),
        ..g
    };
    let rc = vm::boot_and_run(&g).map_err(anyhow::Error::from)?;
    let log = std::fs::read_to_string(rwdir.join("guest.log")).unwrap_or_default();
    let missing = std::fs::read_to_string(rwdir.join("modules.missing")).unwrap_or_default();
    let counts = total_counts(&log);
    let skip = log
        .lines()
        .find(|l| l.contains("SKIP btrfs:"))
        .unwrap_or_default()
        .trim()
        .to_owned();
    println!("kernel selftest {label}: exit {rc}, modules.missing {missing:?}, {skip}");
    if rc != 0
        || vm::missing_modules(&missing) != ["btrfs"]
        || !skip.contains("no \"btrfs\" filesystem")
        || counts != Some((0, 0, 1))
    {
        bail!(
            "kernel selftest {label}: expected exit 0, btrfs named missing and skipped (0 passed, 0 failed, 1 skipped), got exit {rc}, {missing:?}, {skip:?}, counts {counts:?} (log: {})",
            rwdir.join("guest.log").display()
        );
    }
    Ok(())
}

/// (passed, failed, skipped) from the `total` line of the bench's summary
/// table (`total  P  F  S`).
fn total_counts(log: &str) -> Option<(usize, usize, usize)> {
    let line = log.lines().rev().find(|l| l.starts_with("total "))?;
    let n: Vec<usize> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    match n[..] {
        [p, f, s] => Some((p, f, s)),
        _ => None,
    }
}

/// A copy of the unpacked kernel package of `image` (hard links) without
/// `module`: returns the copy's image.
fn without_module(image: &Path, to: &Path, module: &str) -> anyhow::Result<PathBuf> {
    let package = image
        .parent()
        .and_then(Path::parent)
        .context("a kernel image lies in PACKAGE/boot/")?;
    let _ = std::fs::remove_dir_all(to);
    let mut c = Command::new("cp");
    c.arg("-al").arg(package).arg(to);
    run(c)?;
    let mut removed = 0;
    for modules in ["lib/modules", "usr/lib/modules"] {
        let Ok(walk) = std::fs::read_dir(to.join(modules)) else {
            continue;
        };
        for release in walk.flatten() {
            let dir = release.path().join("kernel/fs").join(module);
            if dir.is_dir() {
                std::fs::remove_dir_all(&dir)?;
                removed += 1;
            }
        }
    }
    if removed == 0 {
        bail!(
            "{}: no kernel/fs/{module} directory to remove",
            to.display()
        );
    }
    Ok(to
        .join("boot")
        .join(image.file_name().context("image name")?))
}

/// Pids of processes whose command line mentions `dir` (a guest of ours).
fn qemu_processes_under(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn kernel_arguments_split_between_launcher_and_bench() {
        assert_eq!(parse_args(&args(&["--fs", "ext4"])).unwrap(), None);
        let k = parse_args(&args(&[
            "--kernel",
            "debian:6.1,host",
            "--fs",
            "ext4,xfs",
            "--filter",
            "caps/",
            "--bless",
            "--no-selftest",
            "--run-timeout",
            "600",
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(k.specs.len(), 2);
        assert!(k.bless);
        assert_eq!(k.run_limit, Some(Duration::from_secs(600)));
        assert_eq!(
            k.bench,
            args(&["--fs", "ext4,xfs", "--filter", "caps/", "--no-selftest"])
        );
        assert!(parse_args(&args(&["--kernel"])).is_err());
        assert!(parse_args(&args(&["--kernel", "debian:6.1", "--what"])).is_err());
        assert!(parse_args(&args(&["--run-timeout", "5"])).is_err());
    }

    #[test]
    fn the_summary_total_line_gives_the_counts() {
        let log = "filesystem       passed failed skipped      time\nbtrfs                 0      0       1      3.1s\ntotal                 0      0       1\n";
        assert_eq!(total_counts(log), Some((0, 0, 1)));
        assert_eq!(total_counts("total 1 2\n"), None);
        assert_eq!(total_counts("no table\n"), None);
    }

    #[test]
    fn stage_errors_name_kernel_stage_and_log() {
        let e = StageError::new(
            "debian-6.1",
            Stage::Boot,
            Path::new("/t/console.log"),
            anyhow::anyhow!("the guest never reached its script"),
        );
        assert_eq!(
            e.to_string(),
            "kernel debian-6.1: stage boot failed: the guest never reached its script (log: /t/console.log)"
        );
    }
}
