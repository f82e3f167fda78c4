//! Guards for what the bench creates: a work directory, a loop-attached
//! image, a mounted filesystem. Each guard's `Drop` undoes it (unmount,
//! detach, remove), so a panicking scenario leaves nothing behind; signals
//! are covered by [`crate::cleanup`].

pub mod nfs;

use crate::cleanup::{self, PREFIX, Registration};
use crate::defs::FsDef;
use anyhow::{Context, bail};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// `/tmp/sparsekit-testbench-<pid>-<seq>-<label>`, registered for cleanup.
pub(crate) fn work_dir(label: &str) -> anyhow::Result<(PathBuf, Registration)> {
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("{PREFIX}-{}-{seq}-{label}", std::process::id()));
    // Register before creating, so a signal in between still removes it.
    let reg = Registration::new(&dir);
    std::fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
    Ok((dir, reg))
}

/// A sparse image file attached to a free loop device (autoclear).
#[derive(Debug)]
pub struct LoopImage {
    image: PathBuf,
    device: PathBuf,
    // Held open until drop: with autoclear the kernel detaches on last close.
    loop_dev: Option<loopdev::LoopDevice>,
    reg: Registration,
}

impl LoopImage {
    /// Creates a sparse image of `size` bytes (optionally formatted with
    /// `mkfs`) and attaches it.
    pub fn create(label: &str, size: u64, mkfs: &[String]) -> anyhow::Result<LoopImage> {
        let (dir, reg) = work_dir(label)?;
        let image = dir.join("image");
        File::create(&image)
            .and_then(|f| f.set_len(size))
            .with_context(|| format!("create {}", image.display()))?;
        if let Some((prog, args)) = mkfs.split_first() {
            let out = Command::new(prog)
                .args(args)
                .arg(&image)
                .output()
                .with_context(|| format!("run {prog}"))?;
            if !out.status.success() {
                let _ = reg.cleanup();
                bail!(
                    "{} {} failed: {}",
                    prog,
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        match attach(&image) {
            Ok((loop_dev, device)) => {
                reg.set_loop(&device, &image);
                Ok(LoopImage {
                    image,
                    device,
                    loop_dev: Some(loop_dev),
                    reg,
                })
            }
            Err(e) => {
                let _ = reg.cleanup();
                Err(e)
            }
        }
    }

    /// `/dev/loopN`.
    pub fn device(&self) -> &Path {
        &self.device
    }

    /// The backing image file.
    pub fn image(&self) -> &Path {
        &self.image
    }
}

impl Drop for LoopImage {
    fn drop(&mut self) {
        drop(self.loop_dev.take());
        let _ = self.reg.cleanup();
    }
}

/// Attaches `image` to a free loop device with autoclear. Another process
/// may take the device `LOOP_CTL_GET_FREE` offered before we attach: retry.
fn attach(image: &Path) -> anyhow::Result<(loopdev::LoopDevice, PathBuf)> {
    let control = loopdev::LoopControl::open().context("open /dev/loop-control")?;
    let mut last = None;
    for _ in 0..20 {
        let ld = control.next_free().context("LOOP_CTL_GET_FREE")?;
        let path = ld.path().context("loop device has no path")?;
        match ld.with().autoclear(true).attach(image) {
            Ok(()) => return Ok((ld, path)),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()) => {
                last = Some(e);
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("attach {} to {}", image.display(), path.display()));
            }
        }
    }
    Err(last.unwrap()).context("no free loop device after 20 tries")
}

/// A mounted filesystem made from a [`FsDef`]; unmounted, detached and
/// removed on drop.
#[derive(Debug)]
pub struct MountedFs {
    def: FsDef,
    mountpoint: PathBuf,
    image: Option<LoopImage>,
    /// The device of an `nbd` block definition.
    nbd: Option<crate::nbd::NbdDevice>,
    /// The NFS server exporting `base` (stopped after the client unmounts).
    server: Option<nfs::NfsServer>,
    /// The filesystem an overlay or NFS is stacked on (dropped last).
    base: Option<Box<MountedFs>>,
    reg: Registration,
}

impl MountedFs {
    /// Makes the image (if any), mkfs, attach, mount; for an overlay, mounts
    /// its base first and stacks on directories there; for NFS, mounts its
    /// base, exports it from a server started here ([`nfs::NfsServer`])
    /// and mounts that over 127.0.0.1.
    pub fn mount(def: &FsDef) -> anyhow::Result<MountedFs> {
        if def.is_block() {
            return MountedFs::block(def);
        }
        let base = match &def.over_def {
            Some(b) => Some(Box::new(MountedFs::mount(b)?)),
            None => None,
        };
        let mut options = def.mount_options.clone();
        let mut server = None;
        let mut nfs_source = None;
        match (&base, def.nfs_version()) {
            (Some(b), Some(version)) => {
                let srv = nfs::NfsServer::start(b.mountpoint())?;
                let (source, data) = nfs::client_mount_args(&srv, version, &options);
                nfs_source = Some(PathBuf::from(source));
                options = data;
                server = Some(srv);
            }
            (Some(b), None) => options = overlay_options(b, &options)?,
            (None, _) => {}
        }
        let image = if def.needs_image() {
            Some(LoopImage::create(&def.name, def.image_bytes()?, &def.mkfs)?)
        } else {
            None
        };
        let (dir, reg) = work_dir(&format!("{}-mnt", def.name))?;
        let mountpoint = dir.join("mnt");
        std::fs::create_dir(&mountpoint)?;
        let source = match (&image, nfs_source) {
            (_, Some(nfs)) => nfs,
            (Some(i), None) => i.device().to_owned(),
            (None, None) => PathBuf::from(&def.fstype),
        };
        let data = std::ffi::CString::new(options.as_str())?;
        reg.set_mountpoint(&mountpoint);
        rustix::mount::mount(
            &source,
            &mountpoint,
            def.fstype.as_str(),
            rustix::mount::MountFlags::empty(),
            Some(data.as_c_str()),
        )
        .with_context(|| {
            format!(
                "mount -t {} -o '{}' {} {}",
                def.fstype,
                options,
                source.display(),
                mountpoint.display()
            )
        })?;
        Ok(MountedFs {
            def: def.clone(),
            mountpoint,
            image,
            nbd: None,
            server,
            base,
            reg,
        })
    }

    /// A block-device definition: the device (a loop-attached image, or an
    /// image served over nbd) and, as the "mount point", a plain scratch
    /// directory on the bench's temporary directory for the scenarios'
    /// source files. Nothing is mounted.
    fn block(def: &FsDef) -> anyhow::Result<MountedFs> {
        let size = def.image_bytes()?;
        let (image, nbd) = match def.device.as_deref() {
            Some("nbd") => (
                None,
                Some(crate::nbd::NbdDevice::create(
                    &def.name,
                    size,
                    &def.nbd_options,
                )?),
            ),
            _ => (Some(LoopImage::create(&def.name, size, &[])?), None),
        };
        let (dir, reg) = work_dir(&format!("{}-files", def.name))?;
        let mountpoint = dir.join("files");
        std::fs::create_dir(&mountpoint)?;
        Ok(MountedFs {
            def: def.clone(),
            mountpoint,
            image,
            nbd,
            server: None,
            base: None,
            reg,
        })
    }

    /// The NFS server of an NFS definition (for outage scenarios).
    pub fn nfs_server(&self) -> Option<&nfs::NfsServer> {
        self.server.as_ref()
    }

    /// The same file on the server's own filesystem, for a `path` under an
    /// NFS mount (the server and the client are this machine); `None`
    /// elsewhere. The NFS client has no FIEMAP, so whether a FICLONE
    /// (an NFS CLONE) shared extents is seen only there.
    pub fn server_path(&self, path: &Path) -> Option<PathBuf> {
        let base = self.base.as_ref().filter(|_| self.server.is_some())?;
        let rel = path.strip_prefix(&self.mountpoint).ok()?;
        Some(base.mountpoint().join(rel))
    }

    /// The definition it was made from.
    pub fn def(&self) -> &FsDef {
        &self.def
    }

    /// The definition's name (`xfs-noreflink`).
    pub fn name(&self) -> &str {
        &self.def.name
    }

    /// Where it is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The loop device, for filesystems on an image; the device itself for
    /// a block definition (loop or nbd).
    pub fn device(&self) -> Option<&Path> {
        match &self.nbd {
            Some(n) => Some(n.device()),
            None => self.image.as_ref().map(|i| i.device()),
        }
    }

    /// The nbd device of an `nbd` block definition.
    pub fn nbd(&self) -> Option<&crate::nbd::NbdDevice> {
        self.nbd.as_ref()
    }

    /// The image behind a block definition's device (what qemu-nbd
    /// serves, or the loop device's backing file).
    pub fn device_image(&self) -> Option<&Path> {
        match &self.nbd {
            Some(n) => Some(n.image()),
            None => self.image.as_ref().map(|i| i.image()),
        }
    }
}

impl Drop for MountedFs {
    fn drop(&mut self) {
        // Unmount first (the registration owns the mount point), then the image.
        let _ = self.reg.cleanup();
        drop(self.nbd.take());
        drop(self.image.take());
        drop(self.server.take());
        drop(self.base.take());
    }
}

/// An overlay's `lowerdir=…,upperdir=…,workdir=…` on directories made in
/// its base, before the definition's own options.
fn overlay_options(base: &MountedFs, options: &str) -> anyhow::Result<String> {
    let dirs: Vec<PathBuf> = ["lower", "upper", "work"]
        .iter()
        .map(|d| base.mountpoint().join(d))
        .collect();
    for d in &dirs {
        std::fs::create_dir(d)?;
    }
    let stack = format!(
        "lowerdir={},upperdir={},workdir={}",
        dirs[0].display(),
        dirs[1].display(),
        dirs[2].display()
    );
    Ok(if options.is_empty() {
        stack
    } else {
        format!("{stack},{options}")
    })
}

/// Whether `path` is currently a mount point (for tests of the guards).
pub fn is_mounted(path: &Path) -> bool {
    let p = path.to_string_lossy();
    std::fs::read_to_string("/proc/self/mounts")
        .map(|m| m.lines().any(|l| l.split(' ').nth(1) == Some(&*p)))
        .unwrap_or(false)
}

/// Whether a loop device is still attached to `image`.
pub fn is_attached(device: &Path, image: &Path) -> bool {
    cleanup::backing_file(device)
        .is_some_and(|b| b.to_string_lossy().starts_with(&*image.to_string_lossy()))
}
