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

/// `target/kernels`: the package cache and the runs' shared directories.
fn cache_dir() -> PathBuf {
    root().join("target/kernels")
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
    // target/kernels is shared by every checkout on the machine: one
    // directory per launcher process, so parallel runs of one kernel never
    // empty each other's.
    let rwdir = cache
        .join("runs")
        .join(format!("{label}-{}", std::process::id()));
    let run_limit = k.run_limit.unwrap_or(limits::RUN);
    let rc = vm::boot_and_run(&vm::GuestRun {
        label: &label,
        image: &kernel.image,
        package: kernel.package.as_deref(),
        testbench: &testbench_bin(),
        bench_args: &k.bench,
        rwdir: &rwdir,
        accel,
        boot_limit: limits::BOOT,
        run_limit,
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

/// `cargo xtask kernel-selftest`: a kernel that cannot boot (a garbage
/// vmlinuz) fails at the boot stage with a message naming the kernel, the
/// stage and the log, and leaves no process behind.
pub(crate) fn selftest() -> anyhow::Result<()> {
    crate::setup::ensure_vm()?;
    let dir = cache_dir().join("selftest");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let image = dir.join("vmlinuz-garbage");
    std::fs::write(&image, vec![0x5a_u8; 1 << 20])?;
    let rwdir = dir.join("run");
    let started = Instant::now();
    let result = vm::boot_and_run(&vm::GuestRun {
        label: "selftest-garbage",
        image: &image,
        package: None,
        testbench: &testbench_bin(),
        bench_args: &[],
        rwdir: &rwdir,
        accel: vm::Accel::Tcg,
        // A garbage image either makes QEMU exit at once or runs garbage
        // forever; a working kernel reaches its script in seconds.
        boot_limit: Duration::from_secs(30),
        run_limit: Duration::from_secs(60),
    });
    let e = match result {
        Ok(rc) => bail!("kernel selftest: a garbage vmlinuz booted and ran the bench (exit {rc})"),
        Err(e) => e,
    };
    let msg = e.to_string();
    println!(
        "kernel selftest: got, after {:.1} s: {msg}",
        started.elapsed().as_secs_f64()
    );
    if e.stage != Stage::Boot || !msg.contains("selftest-garbage") || !msg.contains("stage boot") {
        bail!("kernel selftest: expected a boot failure naming the kernel, got: {msg}");
    }
    if !e.log.is_file() {
        bail!(
            "kernel selftest: the named log {} does not exist",
            e.log.display()
        );
    }
    let leftovers = qemu_processes_under(&dir);
    if !leftovers.is_empty() {
        bail!("kernel selftest: processes left behind: {leftovers:?}");
    }
    std::fs::remove_dir_all(&dir)?;
    println!("kernel selftest: passed (boot failure named, log kept, nothing left running)");
    Ok(())
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
