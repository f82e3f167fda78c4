//! The README promises that the test command does its own set-up on a
//! fresh Debian machine: install the system packages the build and the
//! bench need (as root, with the command printed), or say which are missing.

use anyhow::bail;
use std::path::Path;
use std::process::Command;

/// A system package and how to tell it is present.
struct Need {
    package: &'static str,
    why: &'static str,
    present: fn() -> bool,
}

fn libclang_present() -> bool {
    // bindgen (loopdev-3's build script) loads libclang.so at build time.
    ["/usr/lib", "/usr/lib64", "/usr/lib/x86_64-linux-gnu"]
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|rd| rd.flatten())
        .any(|e| {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            (name.starts_with("llvm-") && p.join("lib/libclang.so").exists())
                || name.starts_with("libclang.so")
        })
}

fn on_path(prog: &str) -> bool {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .any(|d| Path::new(d).join(prog).is_file())
}

const NEEDS: &[Need] = &[
    Need {
        package: "libclang-dev",
        why: "bindgen in loopdev-3's build script",
        present: libclang_present,
    },
    Need {
        package: "time",
        why: "peak-memory measurement in benchmarks",
        present: || Path::new("/usr/bin/time").is_file(),
    },
    Need {
        package: "xfsprogs",
        why: "mkfs.xfs and xfs_io for the bench",
        present: || on_path("mkfs.xfs"),
    },
    Need {
        package: "btrfs-progs",
        why: "mkfs.btrfs for the bench",
        present: || on_path("mkfs.btrfs"),
    },
    Need {
        package: "fuse3",
        why: "fusermount3 for the bench's FUSE filesystem",
        present: || on_path("fusermount3"),
    },
    Need {
        package: "bubblewrap",
        why: "bwrap for the probe bench's seccomp (statx ENOSYS) scenario",
        present: || on_path("bwrap"),
    },
    Need {
        package: "python3-venv",
        why: "a virtualenv for kcidb-io and junitparser, the readers that check junit.xml and kcidb.json",
        present: || {
            Command::new("python3")
                .args(["-c", "import ensurepip, venv"])
                .output()
                .is_ok_and(|o| o.status.success())
        },
    },
    Need {
        package: "qemu-utils",
        why: "qemu-img, a peer in the copy benchmark",
        present: || on_path("qemu-img"),
    },
    Need {
        package: "libnbd-bin",
        why: "nbdcopy, a peer in the copy benchmark",
        present: || on_path("nbdcopy"),
    },
];

/// Installs missing packages when root on Debian/Ubuntu; otherwise fails
/// with the command to run (only for those `required`).
pub(crate) fn ensure(required: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&Need> = NEEDS.iter().filter(|n| !(n.present)()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|n| n.package).collect();
    let root = crate::util::is_root();
    if root && on_path("apt-get") {
        for n in &missing {
            println!("xtask: missing {} ({})", n.package, n.why);
        }
        let mut update = Command::new("apt-get");
        update
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive");
        crate::util::run(update)?;
        let mut install = Command::new("apt-get");
        install
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&names)
            .env("DEBIAN_FRONTEND", "noninteractive");
        crate::util::run(install)?;
        return Ok(());
    }
    let needed: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| required.contains(n))
        .collect();
    if !needed.is_empty() {
        bail!(
            "missing system packages: install them with: sudo apt-get install -y {}",
            needed.join(" ")
        );
    }
    Ok(())
}

/// The Python packages that read our CI results, pinned so that a new
/// release cannot change the verdict behind our back (kcidb-io 141 knows
/// KCIDB I/O schema v5.3, the version `kcidb.json` declares).
const PYTHON_TOOLS: &[&str] = &["kcidb-io==141", "junitparser==5.0.3"];

/// A Python with [`PYTHON_TOOLS`] installed: a virtualenv under
/// `target/pyvenv`, made and filled with pip on first use (like the apt
/// packages above; a virtualenv because Debian's system Python refuses
/// `pip install`, PEP 668).
pub(crate) fn python_tools() -> anyhow::Result<std::path::PathBuf> {
    let venv = crate::util::root().join("target/pyvenv");
    let python = venv.join("bin/python3");
    let ready = || {
        Command::new(&python)
            .args(["-c", "import kcidb_io, junitparser"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if ready() {
        return Ok(python);
    }
    ensure(&["python3-venv"])?;
    println!(
        "xtask: installing {} into {} (pip)",
        PYTHON_TOOLS.join(" "),
        venv.display()
    );
    let mut c = Command::new("python3");
    c.args(["-m", "venv"]).arg(&venv);
    crate::util::run(c)?;
    let mut c = Command::new(&python);
    c.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ])
    .args(PYTHON_TOOLS);
    crate::util::run(c)?;
    if !ready() {
        bail!(
            "{} still cannot import kcidb_io and junitparser after pip install",
            python.display()
        );
    }
    Ok(python)
}

/// What `--kernel` needs besides the bench's packages: QEMU, kmod
/// (`modprobe`/`depmod` for the guest), busybox-static (virtme-ng's init
/// falls back to it), the NFS server and client tools (run by the guest
/// from the host's root; stopped on the host, see [`stop_nfs_services`]),
/// virtme-ng (pip) and an empty `/usr/lib/modules`
/// (virtme-run refuses to start without it). Installs them as root on
/// Debian, else says what to run.
pub(crate) fn ensure_vm() -> anyhow::Result<()> {
    ensure(&[])?;
    let apt_missing: Vec<&str> = [
        ("qemu-system-x86", on_path("qemu-system-x86_64")),
        ("kmod", on_path("modprobe") && on_path("depmod")),
        ("busybox-static", on_path("busybox")),
        // The NFS server and client tools the guest runs from the host's
        // root (the NFS definitions of matrix.toml).
        ("rpcbind", on_path("rpcbind") && on_path("rpcinfo")),
        (
            "nfs-kernel-server",
            on_path("rpc.nfsd") && on_path("exportfs") && on_path("rpc.mountd"),
        ),
        ("nfs-common", on_path("rpc.statd")),
    ]
    .iter()
    .filter(|(_, present)| !present)
    .map(|(p, _)| *p)
    .collect();
    let root = crate::util::is_root();
    if !apt_missing.is_empty() {
        if !(root && on_path("apt-get")) {
            bail!(
                "--kernel needs: sudo apt-get install -y {}",
                apt_missing.join(" ")
            );
        }
        println!("xtask: missing {} (for --kernel)", apt_missing.join(", "));
        let mut update = Command::new("apt-get");
        update
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive");
        crate::util::run(update)?;
        let mut install = Command::new("apt-get");
        install
            .args([
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                "--allow-downgrades",
            ])
            .args(apt_missing.iter().filter(|p| **p != "qemu-system-x86"))
            .env("DEBIAN_FRONTEND", "noninteractive");
        // qemu-system-x86 from the distribution's suite removes a newer
        // qemu-utils (the qemu-img peer of the benchmarks) that the image may
        // carry from backports: take qemu-utils at the very same version
        // (one source package), replacing the newer one rather than losing it.
        if apt_missing.contains(&"qemu-system-x86") {
            match apt_candidate("qemu-system-x86") {
                Some(v) => {
                    install.args([format!("qemu-system-x86={v}"), format!("qemu-utils={v}")])
                }
                None => install.arg("qemu-system-x86"),
            };
        }
        crate::util::run(install)?;
        stop_nfs_services(&apt_missing);
    }
    if virtme_run().is_none() {
        if !root {
            bail!("--kernel needs virtme-ng: pip install virtme-ng");
        }
        println!("xtask: missing virtme-run (for --kernel): pip install virtme-ng");
        let mut pip = Command::new("python3");
        pip.args(["-m", "pip", "install", "-q", "virtme-ng"]);
        if crate::util::run(pip).is_err() {
            // Debian's own python refuses system-wide pip installs (PEP 668).
            let mut pip = Command::new("python3");
            pip.args([
                "-m",
                "pip",
                "install",
                "-q",
                "--break-system-packages",
                "virtme-ng",
            ]);
            crate::util::run(pip)?;
        }
        if virtme_run().is_none() {
            bail!(
                "pip installed virtme-ng but no virtme-run is on PATH or in python3's scripts directory"
            );
        }
    }
    if root {
        std::fs::create_dir_all("/usr/lib/modules")?;
    } else if !Path::new("/usr/lib/modules").is_dir() {
        bail!("--kernel needs an (empty) /usr/lib/modules: sudo mkdir -p /usr/lib/modules");
    }
    Ok(())
}

/// The NFS packages are for the guest only: on a host booted with systemd
/// their installation enables and starts rpcbind (port 111) and an NFS
/// server, which the bench never uses on the host. Stops and disables what
/// this installation brought (never services that were there before).
fn stop_nfs_services(installed: &[&str]) {
    if !Path::new("/run/systemd/system").is_dir() {
        return; // no systemd: the packages' scripts started nothing
    }
    let mut units = Vec::new();
    if installed.contains(&"rpcbind") {
        units.extend(["rpcbind.socket", "rpcbind.service"]);
    }
    if installed.contains(&"nfs-kernel-server") {
        units.extend(["nfs-server.service", "nfs-mountd.service"]);
    }
    if installed.contains(&"nfs-common") {
        units.extend(["rpc-statd.service", "nfs-client.target"]);
    }
    if units.is_empty() {
        return;
    }
    println!(
        "xtask: the NFS tools are for the guest: systemctl disable --now {}",
        units.join(" ")
    );
    let _ = Command::new("systemctl")
        .args(["disable", "--now"])
        .args(&units)
        .status();
}

/// apt's candidate version of `package`.
fn apt_candidate(package: &str) -> Option<String> {
    let out = Command::new("apt-cache")
        .args(["policy", package])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate: "))
        .filter(|v| *v != "(none)")
        .map(str::to_owned)
}

/// virtme-run: on PATH, else in python3's scripts directory (where pip put
/// it, which a non-login PATH may lack).
pub(crate) fn virtme_run() -> Option<std::path::PathBuf> {
    if on_path("virtme-run") {
        return Some("virtme-run".into());
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .ok()?;
    let p = Path::new(String::from_utf8_lossy(&out.stdout).trim()).join("virtme-run");
    p.is_file().then_some(p)
}
