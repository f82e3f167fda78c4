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

/// What the guest runs.
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
    format!(
        "#!/bin/sh\n\
         # Written by `cargo xtask testbench --kernel`: runs in the guest.\n\
         R={rw}\n\
         echo booted > \"$R/booted\"\n\
         # Scratch for loop images: the host's root is read-only here.\n\
         mount -t tmpfs -o size=2560m sparsekit-scratch /tmp >>\"$R/modprobe.log\" 2>&1\n\
         modprobe -a {MODULES} >>\"$R/modprobe.log\" 2>&1\n\
         echo $? > \"$R/modprobe.rc\"\n\
         [ \"$(cat \"$R/modprobe.rc\")\" = 0 ] || exit 0\n\
         cd /\n\
         TMPDIR=/tmp SPARSEKIT_MACHINE={machine} SPARSEKIT_KERNEL_PACKAGE={package} \\\n  {bench} >\"$R/guest.log\" 2>&1\n\
         echo $? > \"$R/run.rc\"\n\
         sync\n",
        machine = sh_quote(GUEST_MACHINE),
        bench = bench.join(" "),
    )
}

/// Boots the guest and waits for the bench inside; returns the bench's exit
/// code. Each stage is bounded; on any error or panic the guard kills
/// virtme-run and QEMU (one process group).
pub(crate) fn boot_and_run(g: &GuestRun<'_>) -> Result<i32, StageError> {
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
                return Err(err(
                    Stage::Run,
                    &g.rwdir.join("guest.log"),
                    anyhow::anyhow!("the bench did not finish in {} s", g.run_limit.as_secs()),
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
    if boot_time.is_none() && !booted.exists() {
        return Err(err(
            Stage::Boot,
            &console,
            anyhow::anyhow!(
                "the guest never reached its script (kernel panic or an unbootable image?)"
            ),
        ));
    }
    let modprobe_log = g.rwdir.join("modprobe.log");
    let modprobe_rc = std::fs::read_to_string(g.rwdir.join("modprobe.rc")).unwrap_or_default();
    if modprobe_rc.trim() != "0" {
        return Err(err(
            Stage::Boot,
            &modprobe_log,
            anyhow::anyhow!(
                "`modprobe -a {MODULES}` failed (exit {:?}): a module is missing",
                modprobe_rc.trim()
            ),
        ));
    }
    let rc = std::fs::read_to_string(&rc_file).unwrap_or_default();
    let rc: i32 = rc.trim().parse().map_err(|_| {
        err(
            Stage::Run,
            &g.rwdir.join("guest.log"),
            anyhow::anyhow!(
                "the guest stopped before the bench finished (panic or out of memory? see also {})",
                console.display()
            ),
        )
    })?;
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
    fn the_script_leaves_markers_and_quotes_every_argument() {
        let args = vec!["--filter".to_owned(), "it's".to_owned()];
        let g = GuestRun {
            label: "debian-6.1",
            image: Path::new("/k/vmlinuz"),
            package: Some("linux-image-6.1.0-57-amd64 6.1.192-3"),
            testbench: Path::new("/w/target/release/sparsekit-testbench"),
            bench_args: &args,
            rwdir: Path::new("/w/target/kernels/runs/debian-6.1"),
            accel: Accel::Tcg,
            boot_limit: Duration::from_secs(1),
            run_limit: Duration::from_secs(1),
        };
        let s = script(&g);
        assert!(s.contains("echo booted > \"$R/booted\""));
        assert!(s.contains("modprobe -a loop fuse overlay ext4 xfs btrfs"));
        assert!(s.contains(r"'--filter' 'it'\''s'"), "{s}");
        assert!(s.contains("--no-compare --out '/w/target/kernels/runs/debian-6.1'/out"));
        assert!(s.contains("SPARSEKIT_KERNEL_PACKAGE='linux-image-6.1.0-57-amd64 6.1.192-3'"));
        assert!(s.contains("echo $? > \"$R/run.rc\""));
    }
}
