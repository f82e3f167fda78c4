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
