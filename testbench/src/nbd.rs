//! The nbd fixture: an image served by `qemu-nbd --connect` to a free
//! `/dev/nbdN` (the kernel's nbd client), held by a guard whose `Drop`
//! disconnects the device and stops the server; [`crate::cleanup`] does the
//! same on a signal, and `leaks` finds a server that outlived its bench.

use crate::cleanup::Registration;
use crate::fixture::work_dir;
use anyhow::{Context, bail};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long qemu-nbd may take to connect (a TCG guest is slow to start it).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A sparse image served over nbd; disconnected, stopped and removed on drop.
#[derive(Debug)]
pub struct NbdDevice {
    device: PathBuf,
    image: PathBuf,
    server: Option<Child>,
    reg: Registration,
}

impl NbdDevice {
    /// Creates a sparse image of `size` bytes and serves it to a free nbd
    /// device with qemu-nbd and `options` (`--discard=unmap`).
    pub fn create(label: &str, size: u64, options: &[String]) -> anyhow::Result<NbdDevice> {
        let (dir, reg) = work_dir(label)?;
        let image = dir.join("image");
        File::create(&image)
            .and_then(|f| f.set_len(size))
            .with_context(|| format!("create {}", image.display()))?;
        let mut last = None;
        for device in free_devices() {
            let log = dir.join(format!("qemu-nbd-{}.log", name_of(&device)));
            // --verbose keeps qemu-nbd in the foreground (without it, it
            // forks away with --connect), so the guard owns its pid.
            let mut server = Command::new("qemu-nbd")
                .arg("--verbose")
                .arg(format!("--connect={}", device.display()))
                .args(["--format=raw"])
                .args(options)
                .arg(&image)
                .stdin(Stdio::null())
                .stdout(File::create(&log)?)
                .stderr(File::create(&log)?)
                .spawn()
                .context("run qemu-nbd")?;
            reg.set_nbd(&device, server.id());
            match wait_connected(&device, &mut server) {
                Ok(()) => {
                    return Ok(NbdDevice {
                        device,
                        image,
                        server: Some(server),
                        reg,
                    });
                }
                Err(e) => {
                    let _ = disconnect(&device, server.id());
                    let _ = server.wait();
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    last = Some(e.context(text.trim().to_owned()));
                }
            }
        }
        let _ = reg.cleanup();
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no /dev/nbd* device (is nbd loaded?)")))
            .context("no nbd device could be connected")
    }

    /// `/dev/nbdN`.
    pub fn device(&self) -> &Path {
        &self.device
    }

    /// The pid of the qemu-nbd serving it.
    pub fn server_pid(&self) -> u32 {
        self.server.as_ref().map_or(0, Child::id)
    }

    /// The image file qemu-nbd serves.
    pub fn image(&self) -> &Path {
        &self.image
    }
}

impl Drop for NbdDevice {
    fn drop(&mut self) {
        let _ = self.reg.cleanup();
        if let Some(mut server) = self.server.take() {
            let _ = server.wait();
        }
    }
}

fn name_of(device: &Path) -> String {
    device
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `/sys/block/nbdN/pid`: the pid serving a connected device.
pub fn server_of(device: &Path) -> Option<u32> {
    std::fs::read_to_string(format!("/sys/block/{}/pid", name_of(device)))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `/sys/block/nbdN/size`: the capacity in 512-byte sectors.
fn sectors(device: &Path) -> u64 {
    std::fs::read_to_string(format!("/sys/block/{}/size", name_of(device)))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// nbd devices no one serves, in number order.
fn free_devices() -> Vec<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix("nbd")?.parse().ok()?;
            let dev = Path::new("/dev").join(&name);
            (server_of(&dev).is_none() && dev.exists()).then_some((n, dev))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, d)| d).take(8).collect()
}

fn wait_connected(device: &Path, server: &mut Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        // The kernel publishes the pid before it sets the capacity: wait
        // for both, or the first user sees a device of 0 bytes.
        if server_of(device).is_some() && sectors(device) > 0 {
            return Ok(());
        }
        if let Some(status) = server.try_wait()? {
            bail!("qemu-nbd --connect={} exited: {status}", device.display());
        }
        if Instant::now() > deadline {
            bail!(
                "qemu-nbd --connect={} not connected after {CONNECT_TIMEOUT:?}",
                device.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `pid` is a live (not zombie) process started by a bench.
fn is_bench_server(pid: u32) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let zombie = stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
    !zombie && String::from_utf8_lossy(&cmdline).contains(crate::cleanup::PREFIX)
}

/// Disconnects `device` (`qemu-nbd --disconnect`, when `server` still
/// serves it), then waits for `server` to exit and kills it if it does not.
/// Only a process whose command line names the bench's directories is ever
/// signalled, so a reused pid is safe.
pub(crate) fn disconnect(device: &Path, server: u32) -> Result<(), String> {
    if server_of(device) == Some(server) {
        let _ = Command::new("qemu-nbd")
            .arg("--disconnect")
            .arg(device)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while is_bench_server(server) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if is_bench_server(server) {
        if let Some(pid) = rustix::process::Pid::from_raw(server as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while server_of(device) == Some(server) {
        if Instant::now() > deadline {
            return Err(format!(
                "{}: still served by qemu-nbd (pid {server})",
                device.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// qemu-nbd servers whose command line holds `marker` (a bench's
/// directory prefix), and the devices they serve.
pub(crate) fn leaks(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for ent in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = ent.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("qemu-nbd") && cmdline.contains(marker) && is_bench_server(pid) {
            found.push(format!("qemu-nbd: pid {pid}: {}", cmdline.trim()));
        }
    }
    found
}
