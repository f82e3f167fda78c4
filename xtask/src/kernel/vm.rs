//! boot → run: the kernel under virtme-ng (QEMU), the release testbench
//! binary inside as one long-lived process.
//!
//! The guest sees the host's root read-only over 9p and `rwdir` writable.
//! Without udev on the host virtme-run exits 255 and the script's stdout is
//! lost, so the script leaves everything in `rwdir`: a `booted` marker (the
//! boot stage ends when it appears), `modprobe.{log,rc}`, the bench's output
//! `guest.log` and exit code `run.rc`, and the run's matrix in `out/`.

use super::group::Group;
use super::spec::sh_quote;
use super::{Stage, StageError};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Modules the bench's filesystems need (built-in ones are fine too).
/// `modprobe -a`: without it the other names become module parameters.
const MODULES: &str = "loop fuse overlay ext4 xfs btrfs";

/// How QEMU runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Accel {
    Kvm,
    Tcg,
}

/// Whether QEMU can use /dev/kvm: a paravirtual KVM (kvm-pvm) exists but
/// aborts at vCPU reset ("failed to set MSR 0x10a"), so opening the device
/// proves nothing. A paused (`-S`) KVM machine that is still alive after a
/// moment has got past that reset.
pub(crate) fn probe_accel() -> (Accel, String) {
    if std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return (Accel::Tcg, "/dev/kvm is absent or not usable".into());
    }
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-accel",
        "kvm",
        "-cpu",
        "host",
        "-M",
        "q35",
        "-m",
        "64",
        "-display",
        "none",
        "-nodefaults",
        "-no-user-config",
        "-S",
    ]);
    let log = std::env::temp_dir().join(format!("xtask-kvm-probe-{}.log", std::process::id()));
    let verdict = match Group::spawn(cmd, &log) {
        Err(e) => (Accel::Tcg, format!("cannot run qemu-system-x86_64 ({e:#})")),
        Ok(mut g) => {
            let deadline = Instant::now() + Duration::from_secs(3);
            let mut exited = None;
            while Instant::now() < deadline {
                if let Ok(Some(s)) = g.try_wait() {
                    exited = Some(s);
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            g.kill();
            match exited {
                None => (Accel::Kvm, "KVM works".into()),
                Some(s) => {
                    let why = std::fs::read_to_string(&log).unwrap_or_default();
                    let why = why
                        .lines()
                        .find(|l| l.contains("error"))
                        .unwrap_or("")
                        .trim();
                    (
                        Accel::Tcg,
                        format!("QEMU cannot use /dev/kvm ({s}: {why}): software emulation (TCG)"),
                    )
                }
            }
        }
    };
    let _ = std::fs::remove_file(&log);
    verdict
}

/// A failure the kernel selftest forces in the guest, for real.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// None: the bench runs.
    None,
    /// The kernel panics (sysrq `c`) a few seconds into the bench.
    Panic,
    /// The bench is replaced by a sleep that never ends.
    Hang,
}

/// What the guest runs.
#[derive(Clone, Copy)]
pub(crate) struct GuestRun<'a> {
    pub(crate) label: &'a str,
    pub(crate) image: &'a Path,
    pub(crate) package: Option<&'a str>,
    /// The release testbench binary (on the host's root, seen by the guest).
    pub(crate) testbench: &'a Path,
    /// Arguments after `run` (`--fs`, `--filter`, `--no-selftest`).
    pub(crate) bench_args: &'a [String],
    /// Writable in the guest; emptied first.
    pub(crate) rwdir: &'a Path,
    pub(crate) accel: Accel,
    pub(crate) boot_limit: Duration,
    pub(crate) run_limit: Duration,
    pub(crate) fault: Fault,
}

/// The column's machine label for guests: the same on every host, so a
/// kernel's column from CI and from a developer's machine is one column.
pub(crate) const GUEST_MACHINE: &str = "x86_64 QEMU guest, 2 vCPUs, 3 GiB";

/// The guest script (POSIX sh, run by virtme-ng's init).
pub(crate) fn script(g: &GuestRun<'_>) -> String {
    let rw = sh_quote(&g.rwdir.to_string_lossy());
    let mut bench = vec![
        sh_quote(&g.testbench.to_string_lossy()),
        "run".into(),
        "--no-install".into(),
        "--no-compare".into(),
        "--out".into(),
        format!("{rw}/out"),
    ];
    bench.extend(g.bench_args.iter().map(|a| sh_quote(a)));
    let package = g.package.map(sh_quote).unwrap_or_else(|| "''".into());
    // SPARSEKIT_ACCEL: what probe_accel observed, so wall-clock budgets
    // in the bench can allow for software emulation.
    let accel = match g.accel {
        Accel::Kvm => "kvm",
        Accel::Tcg => "tcg",
    };
    let bench = format!(
        "TMPDIR=/tmp SPARSEKIT_MACHINE={machine} SPARSEKIT_ACCEL={accel} SPARSEKIT_KERNEL_PACKAGE={package} \\\n  {bench}",
        machine = sh_quote(GUEST_MACHINE),
        bench = bench.join(" "),
    );
    let bench = match g.fault {
        Fault::None => bench,
        Fault::Panic => format!("( sleep 3; echo c > /proc/sysrq-trigger ) &\n{bench}"),
        Fault::Hang => "sleep 86400".into(),
    };
    format!(
        "#!/bin/sh\n\
         # Written by `cargo xtask testbench --kernel`: runs in the guest.\n\
         R={rw}\n\
         echo booted > \"$R/booted\"\n\
         # Scratch for loop images: the host's root is read-only here.\n\
         mount -t tmpfs -o size=2560m sparsekit-scratch /tmp >>\"$R/modprobe.log\" 2>&1\n\
         # One at a time: a missing module skips the definitions needing it.\n\
         for m in {MODULES}; do\n\
         \x20 modprobe \"$m\" >>\"$R/modprobe.log\" 2>&1 || echo \"$m\" >> \"$R/modules.missing\"\n\
         done\n\
         cd /\n\
         {bench} >\"$R/guest.log\" 2>&1\n\
         echo $? > \"$R/run.rc\"\n\
         sync\n",
    )
}

/// What a guest left in its rwdir, read back after QEMU is gone.
#[derive(Debug, Default)]
pub(crate) struct RunFiles {
    pub(crate) booted: bool,
    /// `run.rc`, if written.
    pub(crate) rc: Option<String>,
    pub(crate) guest_log: bool,
    /// The console log (kernel messages, virtme's own output).
    pub(crate) console: String,
}

impl RunFiles {
    pub(crate) fn read(rwdir: &Path) -> Self {
        RunFiles {
            booted: rwdir.join("booted").exists(),
            rc: std::fs::read_to_string(rwdir.join("run.rc")).ok(),
            guest_log: rwdir.join("guest.log").exists(),
            console: std::fs::read_to_string(rwdir.join("console.log")).unwrap_or_default(),
        }
    }
}

/// Which log a failure points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Log {
    Console,
    Guest,
}

impl Log {
    pub(crate) fn file(self) -> &'static str {
        match self {
            Log::Console => "console.log",
            Log::Guest => "guest.log",
        }
    }
}

/// The bench's exit code, or the stage that failed, the log to read and why
/// (with the kernel's panic line when the console has one).
pub(crate) fn judge(f: &RunFiles) -> Result<i32, (Stage, Log, String)> {
    let panic = panic_line(&f.console);
    if !f.booted {
        return Err((
            Stage::Boot,
            Log::Console,
            format!(
                "the guest never reached its script (kernel panic or an unbootable image?){panic}"
            ),
        ));
    }
    match f.rc.as_deref().map(str::trim).map(str::parse::<i32>) {
        Some(Ok(rc)) => Ok(rc),
        _ => Err((
            Stage::Run,
            if f.guest_log {
                Log::Guest
            } else {
                Log::Console
            },
            format!(
                "the guest stopped before the bench finished (no exit code written){}",
                if panic.is_empty() {
                    " [console: no panic line; out of memory or killed?]".to_owned()
                } else {
                    panic
                }
            ),
        )),
    }
}

/// ` [console: LINE]` for the first line of `console` that shows the
/// kernel dying (panic, BUG, Oops), else empty.
fn panic_line(console: &str) -> String {
    console
        .lines()
        .find(|l| l.contains("Kernel panic") || l.contains("BUG:") || l.contains("Oops"))
        .map(|l| format!(" [console: {}]", l.trim()))
        .unwrap_or_default()
}

/// The modules `modules.missing` names (one a line).
pub(crate) fn missing_modules(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

/// [`boot_and_run_once`], booted a second time when the first boot oopsed
/// or panicked before the script: under TCG a stock kernel now and then
/// oopses early (seen in CI: "Oops: int3" 1.7 s into a Debian 6.12 boot
/// that boots every other time). A kernel that fails twice is failed; an
/// image that does not even start (no oops, no panic) is not retried.
///
/// A KVM that cannot run the guest ([`kvm_failed`]) is given up for the
/// rest of the process and the boot done again under TCG.
pub(crate) fn boot_and_run(g: &GuestRun<'_>) -> Result<i32, StageError> {
    let mut g = *g;
    if KVM_GIVEN_UP.load(Ordering::Relaxed) {
        g.accel = Accel::Tcg;
    }
    match boot_and_run_once(&g) {
        Err(e)
            if e.stage == Stage::Boot
                && g.accel == Accel::Kvm
                && kvm_failed(&e.error.to_string()) =>
        {
            KVM_GIVEN_UP.store(true, Ordering::Relaxed);
            println!(
                "kernel {}: KVM could not run the guest ({:#}); software emulation (TCG) from now on",
                g.label, e.error
            );
            g.accel = Accel::Tcg;
            boot_and_run(&g)
        }
        Err(e) if e.stage == Stage::Boot && oopsed(&e.error.to_string()) => {
            println!(
                "kernel {}: the boot failed ({:#}); booting once more",
                g.label, e.error
            );
            boot_and_run_once(&g)
        }
        other => other,
    }
}

/// Set once a guest showed that QEMU's KVM cannot run it.
static KVM_GIVEN_UP: AtomicBool = AtomicBool::new(false);

/// What QEMU prints when KVM stops a guest it cannot run. [`probe_accel`]
/// cannot see it: a paravirtual KVM that starts a paused machine may still
/// fail the kernel's first instruction it must emulate (seen: "KVM internal
/// error. Suberror: 1 … emulation failure" in the boot stub, with QEMU
/// left hanging).
const KVM_FAILURE: &str = "KVM internal error";

/// How long a KVM guest may stay silent before the kernel's first line
/// ("Linux version …", printed in well under a second under KVM): the same
/// paravirtual KVM hangs Debian 6.1's boot stub after "Probing EDD" without
/// any message, where 6.12's gets the internal error above.
const KVM_SILENCE: Duration = Duration::from_secs(30);
/// The boot error of a silent KVM guest.
const KVM_SILENT: &str = "the kernel printed nothing under KVM";

/// Whether a boot failure is KVM's, not the kernel's.
fn kvm_failed(why: &str) -> bool {
    why.contains(KVM_FAILURE) || why.contains(KVM_SILENT)
}

/// Whether a boot failure's console line is a kernel oops or panic.
fn oopsed(why: &str) -> bool {
    why.contains("Oops") || why.contains("Kernel panic")
}

/// Boots the guest and waits for the bench inside; returns the bench's exit
/// code. Each stage is bounded; on any error or panic the guard kills
/// virtme-run and QEMU (one process group).
fn boot_and_run_once(g: &GuestRun<'_>) -> Result<i32, StageError> {
    let err = |stage: Stage, log: &Path, e: anyhow::Error| StageError::new(g.label, stage, log, e);
    let console = g.rwdir.join("console.log");
    let setup = || -> anyhow::Result<PathBuf> {
        if g.rwdir.exists() {
            std::fs::remove_dir_all(g.rwdir)?;
        }
        std::fs::create_dir_all(g.rwdir)?;
        // virtme-run's --mods=auto needs this directory on the host.
        std::fs::create_dir_all("/usr/lib/modules")?;
        let path = g.rwdir.join("guest.sh");
        std::fs::write(&path, script(g))?;
        Ok(path)
    };
    let script_path = setup().map_err(|e| err(Stage::Boot, &console, e))?;
    let virtme = crate::setup::virtme_run().unwrap_or_else(|| "virtme-run".into());
    let mut cmd = Command::new(virtme);
    cmd.arg("--kimg")
        .arg(g.image)
        .args([
            "--mods=auto",
            "--memory",
            "3G",
            "--cpus",
            "2",
            "--verbose",
            "--show-boot-console",
        ])
        .arg(format!("--rwdir={}", g.rwdir.display()))
        .arg("--script-sh")
        .arg(format!("sh {}", sh_quote(&script_path.to_string_lossy())));
    if g.accel == Accel::Tcg {
        cmd.arg("--disable-kvm");
    }
    let started = Instant::now();
    let mut vm = Group::spawn(cmd, &console).map_err(|e| err(Stage::Boot, &console, e))?;
    let booted = g.rwdir.join("booted");
    let rc_file = g.rwdir.join("run.rc");
    let mut boot_time = None;
    let mut done_at = None;
    loop {
        let exited = vm.try_wait().map_err(|e| err(Stage::Boot, &console, e))?;
        if boot_time.is_none() && booted.exists() {
            boot_time = Some(started.elapsed());
            println!(
                "kernel {}: booted to the script in {:.1} s",
                g.label,
                started.elapsed().as_secs_f64()
            );
        }
        if done_at.is_none() && rc_file.exists() {
            done_at = Some(Instant::now());
        }
        if exited.is_some() {
            break;
        }
        if boot_time.is_none() && g.accel == Accel::Kvm {
            let text = std::fs::read_to_string(&console).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains(KVM_FAILURE)) {
                vm.kill();
                return Err(err(
                    Stage::Boot,
                    &console,
                    anyhow::anyhow!("QEMU stopped the guest: {}", line.trim()),
                ));
            }
            if started.elapsed() > KVM_SILENCE && !text.contains("Linux version") {
                vm.kill();
                return Err(err(
                    Stage::Boot,
                    &console,
                    anyhow::anyhow!(
                        "{KVM_SILENT} in {} s (last console line: {:?})",
                        KVM_SILENCE.as_secs(),
                        text.lines().last().unwrap_or("").trim()
                    ),
                ));
            }
        }
        match (boot_time, done_at) {
            (None, _) if started.elapsed() > g.boot_limit => {
                vm.kill();
                return Err(err(
                    Stage::Boot,
                    &console,
                    anyhow::anyhow!(
                        "the guest did not reach its script in {} s",
                        g.boot_limit.as_secs()
                    ),
                ));
            }
            (Some(b), None) if started.elapsed() > b + g.run_limit => {
                vm.kill();
                // The limit may strike before the bench started (modprobe
                // is slow under TCG): then the console is the log to read.
                let guest_log = g.rwdir.join("guest.log");
                return Err(err(
                    Stage::Run,
                    if guest_log.exists() {
                        &guest_log
                    } else {
                        &console
                    },
                    anyhow::anyhow!(
                        "the bench did not finish in {} s{}",
                        g.run_limit.as_secs(),
                        panic_line(&std::fs::read_to_string(&console).unwrap_or_default())
                    ),
                ));
            }
            // The bench is done; the guest powers off by itself, but a hung
            // poweroff is not worth waiting for.
            (_, Some(d)) if d.elapsed() > Duration::from_secs(60) => break,
            _ => std::thread::sleep(Duration::from_millis(500)),
        }
    }
    vm.kill();
    if vm.any_alive() {
        return Err(err(
            Stage::Boot,
            &console,
            anyhow::anyhow!("processes of `{}` survived SIGKILL", vm.shown()),
        ));
    }
    let rc = judge(&RunFiles::read(g.rwdir))
        .map_err(|(stage, log, why)| err(stage, &g.rwdir.join(log.file()), anyhow::anyhow!(why)))?;
    let missing = std::fs::read_to_string(g.rwdir.join("modules.missing")).unwrap_or_default();
    let missing = missing_modules(&missing);
    if !missing.is_empty() {
        println!(
            "kernel {}: no module for {} (see {}): the definitions needing it are skipped",
            g.label,
            missing.join(", "),
            g.rwdir.join("modprobe.log").display()
        );
    }
    println!(
        "kernel {}: bench finished in the guest in {:.0} s (exit {rc}), {:.0} s in all",
        g.label,
        (done_at.unwrap_or_else(Instant::now) - (started + boot_time.unwrap_or_default()))
            .as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(rc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_oops_or_panic_at_boot_is_booted_again() {
        assert!(oopsed(
            "the guest never reached its script [console: [    1.698980] Oops: int3: 0000 [#1]]"
        ));
        assert!(oopsed("[console: Kernel panic - not syncing: VFS]"));
        assert!(!oopsed("the guest never reached its script"));
        assert!(kvm_failed(
            "QEMU stopped the guest: KVM internal error. Suberror: 1"
        ));
        assert!(kvm_failed(&format!(
            "{KVM_SILENT} in 30 s (last console line: \"Probing EDD\")"
        )));
        assert!(!kvm_failed("the guest never reached its script"));
    }

    #[test]
    fn the_script_leaves_markers_and_quotes_every_argument() {
        let args = vec!["--filter".to_owned(), "it's".to_owned()];
        let g = GuestRun {
            label: "debian-6.1",
            image: Path::new("/k/vmlinuz"),
            package: Some("linux-image-6.1.0-57-amd64 6.1.192-3"),
            testbench: Path::new("/w/target/release/sparsekit-testbench"),
            bench_args: &args,
            rwdir: Path::new("/w/target/kernel-runs/debian-6.1"),
            accel: Accel::Tcg,
            boot_limit: Duration::from_secs(1),
            run_limit: Duration::from_secs(1),
            fault: Fault::None,
        };
        let s = script(&g);
        assert!(s.contains("echo booted > \"$R/booted\""));
        assert!(s.contains(" SPARSEKIT_ACCEL=tcg "), "{s}");
        assert!(
            s.contains("for m in loop fuse overlay ext4 xfs btrfs; do"),
            "{s}"
        );
        assert!(
            s.contains("modprobe \"$m\" >>\"$R/modprobe.log\" 2>&1 || echo \"$m\" >> \"$R/modules.missing\""),
            "{s}"
        );
        assert!(!s.contains("sysrq") && !s.contains("sleep 86400"));
        assert!(s.contains(r"'--filter' 'it'\''s'"), "{s}");
        assert!(s.contains("--no-compare --out '/w/target/kernel-runs/debian-6.1'/out"));
        assert!(s.contains("SPARSEKIT_KERNEL_PACKAGE='linux-image-6.1.0-57-amd64 6.1.192-3'"));
        assert!(s.contains("echo $? > \"$R/run.rc\""));
        let panic = script(&GuestRun {
            fault: Fault::Panic,
            ..g
        });
        assert!(panic.contains("( sleep 3; echo c > /proc/sysrq-trigger ) &\nTMPDIR=/tmp"));
        let hang = script(&GuestRun {
            fault: Fault::Hang,
            ..g
        });
        assert!(
            hang.contains("sleep 86400 >\"$R/guest.log\"") && !hang.contains("sparsekit-testbench")
        );
    }

    fn files(booted: bool, rc: Option<&str>, guest_log: bool, console: &str) -> RunFiles {
        RunFiles {
            booted,
            rc: rc.map(str::to_owned),
            guest_log,
            console: console.to_owned(),
        }
    }

    #[test]
    fn a_finished_bench_gives_its_exit_code() {
        assert_eq!(judge(&files(true, Some("0\n"), true, "")), Ok(0));
        assert_eq!(judge(&files(true, Some("1\n"), true, "")), Ok(1));
    }

    #[test]
    fn a_guest_that_never_booted_fails_at_boot_with_the_console() {
        let (stage, log, why) = judge(&files(false, None, false, "")).unwrap_err();
        assert_eq!((stage, log), (Stage::Boot, Log::Console));
        assert!(why.contains("never reached its script"), "{why}");
    }

    #[test]
    fn a_guest_that_died_mid_run_names_the_panic_and_the_log() {
        let console = "[ 9.1] sysrq: Trigger a crash\n[ 9.2] Kernel panic - not syncing: sysrq triggered crash\n";
        let (stage, log, why) = judge(&files(true, None, true, console)).unwrap_err();
        assert_eq!((stage, log), (Stage::Run, Log::Guest));
        assert!(why.contains("stopped before the bench finished"), "{why}");
        assert!(
            why.contains("Kernel panic - not syncing: sysrq triggered crash"),
            "{why}"
        );
        // Died before the bench wrote anything: the console is the log.
        let (_, log, why) = judge(&files(true, None, false, "")).unwrap_err();
        assert_eq!(log, Log::Console);
        assert!(why.contains("no panic line"), "{why}");
        // A torn exit code is no exit code.
        let (stage, _, _) = judge(&files(true, Some("1x"), true, "")).unwrap_err();
        assert_eq!(stage, Stage::Run);
    }

    #[test]
    fn missing_modules_are_read_one_a_line() {
        assert_eq!(missing_modules("btrfs\nxfs\n"), ["btrfs", "xfs"]);
        assert!(missing_modules("").is_empty());
    }
}
