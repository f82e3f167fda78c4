//! resolve → download → unpack: a Debian kernel package into a cache under
//! `target/kernels/` (`downloads/NAME_VERSION_amd64.deb`, unpacked in
//! `NAME_VERSION/`). A second run finds both and downloads nothing. Each step
//! works in a temporary name and renames when complete, so an interrupted
//! run never leaves something that looks finished; the temporary directory
//! is removed by a guard on any failure.

use super::group::run_bounded;
use super::spec::{deb_file_name, newest_image};
use super::{Stage, StageError, limits};
use anyhow::{Context, anyhow, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A kernel ready to boot.
#[derive(Debug, Clone)]
pub(crate) struct Kernel {
    /// The vmlinuz (modules in `../lib/modules/RELEASE` beside it).
    pub(crate) image: PathBuf,
    /// `NAME VERSION` of the package, when it came from one.
    pub(crate) package: Option<String>,
}

/// A Debian package name and version.
#[derive(Debug, Clone)]
pub(crate) struct Package {
    pub(crate) name: String,
    pub(crate) version: String,
}

/// The newest `linux-image-SERIES…-amd64` in the apt lists, and its version.
pub(crate) fn resolve(series: &str, log: &Path) -> anyhow::Result<Package> {
    let out = Command::new("apt-cache")
        .args(["pkgnames", &format!("linux-image-{series}.")])
        .output()
        .context("cannot run apt-cache (a Debian host is needed for debian:SERIES)")?;
    let names = String::from_utf8_lossy(&out.stdout).into_owned();
    std::fs::write(log, &names)?;
    let name = newest_image(names.lines(), series).ok_or_else(|| {
        anyhow!(
            "no linux-image-{series}.*-amd64 package in the apt lists (run `apt-get update`; \
             Debian bookworm's security suite carries 6.1 and 6.12)"
        )
    })?;
    let show = Command::new("apt-cache")
        .args(["show", "--no-all-versions", name])
        .output()?;
    let text = String::from_utf8_lossy(&show.stdout);
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .ok_or_else(|| anyhow!("apt-cache show {name}: no Version"))?;
    Ok(Package {
        name: name.to_owned(),
        version: version.trim().to_owned(),
    })
}

/// Removes a directory tree on drop unless disarmed.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_dir_all(&p);
        }
    }
}

/// The cached `.deb` of `pkg`, downloaded with `apt-get download` unless
/// present.
pub(crate) fn download(pkg: &Package, cache: &Path, log: &Path) -> anyhow::Result<PathBuf> {
    let dir = cache.join("downloads");
    let deb = dir.join(deb_file_name(&pkg.name, &pkg.version));
    if deb.is_file() {
        println!("kernel: {} is cached, nothing to download", deb.display());
        return Ok(deb);
    }
    let tmp = dir.join(format!(".partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let guard = RemoveOnDrop(Some(tmp.clone()));
    let mut cmd = Command::new("apt-get");
    cmd.arg("download")
        .arg(format!("{}={}", pkg.name, pkg.version))
        .current_dir(&tmp);
    run_bounded(cmd, log, limits::DOWNLOAD)?;
    let got = tmp.join(deb.file_name().context("deb name")?);
    if !got.is_file() {
        bail!("apt-get download did not write {}", got.display());
    }
    std::fs::rename(&got, &deb)?;
    drop(guard);
    Ok(deb)
}

/// `dpkg -x DEB` into `cache/NAME_VERSION/` (kept for later runs), and the
/// vmlinuz inside.
pub(crate) fn unpack(deb: &Path, cache: &Path, log: &Path) -> anyhow::Result<PathBuf> {
    let stem = deb
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix("_amd64.deb"))
        .with_context(|| format!("{}: not NAME_VERSION_amd64.deb", deb.display()))?;
    let root = cache.join(stem);
    if !root.is_dir() {
        let tmp = cache.join(format!(".unpacking-{stem}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        let guard = RemoveOnDrop(Some(tmp.clone()));
        let mut cmd = Command::new("dpkg");
        cmd.arg("-x").arg(deb).arg(&tmp);
        run_bounded(cmd, log, limits::UNPACK)?;
        find_image(&tmp)?;
        std::fs::rename(&tmp, &root)?;
        drop(guard);
    }
    find_image(&root)
}

/// The one `boot/vmlinuz-*` of an unpacked package.
fn find_image(root: &Path) -> anyhow::Result<PathBuf> {
    let boot = root.join("boot");
    let images: Vec<PathBuf> = std::fs::read_dir(&boot)
        .with_context(|| format!("{}: no boot/ directory in the package", boot.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .collect();
    match &images[..] {
        [one] => Ok(one.clone()),
        _ => bail!(
            "{}: expected one vmlinuz-*, found {}",
            boot.display(),
            images.len()
        ),
    }
}

/// resolve → download → unpack a `debian:SERIES` kernel, each stage's
/// failure named.
pub(crate) fn debian(
    series: &str,
    label: &str,
    cache: &Path,
    logs: &Path,
) -> Result<Kernel, StageError> {
    let fail = |stage: Stage, log: &Path| {
        let (label, log) = (label.to_owned(), log.to_owned());
        move |e: anyhow::Error| StageError::new(&label, stage, &log, e)
    };
    let log = logs.join("resolve.log");
    let pkg = resolve(series, &log).map_err(fail(Stage::Resolve, &log))?;
    println!("kernel {label}: {} {}", pkg.name, pkg.version);
    let log = logs.join("download.log");
    let deb = download(&pkg, cache, &log).map_err(fail(Stage::Download, &log))?;
    let log = logs.join("unpack.log");
    let image = unpack(&deb, cache, &log).map_err(fail(Stage::Unpack, &log))?;
    Ok(Kernel {
        image,
        package: Some(format!("{} {}", pkg.name, pkg.version)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_package_that_does_not_unpack_leaves_no_directory() {
        let cache = tempfile_dir();
        let deb = cache.join("linux-image-x_1.0_amd64.deb");
        std::fs::write(&deb, b"not a deb").unwrap();
        let log = cache.join("unpack.log");
        if Command::new("dpkg").arg("--version").output().is_err() {
            // Not a Debian host: nothing to unpack with (the bench machines have it).
            return;
        }
        let err = unpack(&deb, &cache, &log).unwrap_err();
        assert!(format!("{err:#}").contains("dpkg"), "{err:#}");
        let left: Vec<_> = std::fs::read_dir(&cache)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n != "linux-image-x_1.0_amd64.deb" && n != "unpack.log")
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
        std::fs::remove_dir_all(&cache).unwrap();
    }

    #[test]
    fn a_package_without_a_vmlinuz_is_refused() {
        let root = tempfile_dir();
        std::fs::create_dir_all(root.join("boot")).unwrap();
        assert!(find_image(&root).is_err());
        std::fs::write(root.join("boot/vmlinuz-6.1.0-57-amd64"), b"x").unwrap();
        assert!(
            find_image(&root)
                .unwrap()
                .ends_with("boot/vmlinuz-6.1.0-57-amd64")
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "xtask-kernel-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
