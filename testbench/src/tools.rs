//! Finding (and on Debian, as root, installing) the mkfs programs; for
//! NFS, whether this kernel and machine can run the server and client.

use crate::defs::FsDef;
use std::path::Path;
use std::process::Command;

/// Whether `prog` is on PATH (or in the sbin directories root's PATH may lack).
pub fn have(prog: &str) -> bool {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .any(|d| Path::new(d).join(prog).is_file())
}

/// Makes sure the tools of `def` exist. Returns `Err(reason)` to skip the
/// filesystem, naming the install command.
pub fn ensure(def: &FsDef, may_install: bool) -> Result<(), String> {
    if let Some(base) = &def.over_def {
        ensure(base, may_install)?;
    }
    if def.device.as_deref() == Some("nbd") {
        ensure_prog("qemu-nbd", def, may_install)?;
        return nbd_module();
    }
    if def.nfs_version().is_some() {
        return crate::fixture::nfs::available();
    }
    match def.mkfs.first() {
        Some(prog) => ensure_prog(prog, def, may_install),
        None => Ok(()),
    }
}

/// Loads the kernel's nbd client; `Err(reason)` when this kernel has none
/// (the host kernel here), so the definition is skipped with the reason.
fn nbd_module() -> Result<(), String> {
    if Path::new("/sys/module/nbd").exists() {
        return Ok(());
    }
    match Command::new("modprobe").arg("nbd").output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "no nbd client in this kernel: modprobe nbd: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("no nbd client: cannot run modprobe: {e}")),
    }
}

/// Makes sure `prog` exists, installing `def`'s package if allowed.
fn ensure_prog(prog: &str, def: &FsDef, may_install: bool) -> Result<(), String> {
    if have(prog) {
        return Ok(());
    }
    let package = def.package.as_deref().unwrap_or(prog);
    let hint = format!("{prog} not found; install it with: apt-get install -y {package}");
    let is_root = rustix::process::geteuid().is_root();
    if !may_install || !is_root || !have("apt-get") {
        return Err(hint);
    }
    println!("testbench: {prog} missing, running: apt-get install -y {package}");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", package])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        println!("testbench: retrying after: apt-get update");
        let _ = Command::new("apt-get").args(["update", "-q"]).status();
        if !install() {
            return Err(format!("{hint} (the install failed)"));
        }
    }
    if have(prog) {
        Ok(())
    } else {
        Err(format!("{hint} (installed {package}, still no {prog})"))
    }
}
