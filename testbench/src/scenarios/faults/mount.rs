//! [`FaultMount`]: the fault-injecting filesystem mounted by its daemon,
//! under the probe scenarios' FUSE guard, and the commands it takes.

use super::rule::Rule;
use crate::scenarios::probe::fuse::FuseMount;
use anyhow::Context;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A mounted fault-injecting filesystem over a backing directory; its
/// guard is [`FuseMount`]'s (unmount and reap on drop).
#[derive(Debug)]
pub struct FaultMount {
    fuse: FuseMount,
    backing: PathBuf,
}

impl FaultMount {
    /// Mounts at `mnt` a filesystem passing through to `backing` (created).
    pub fn start(mnt: &Path, backing: &Path) -> anyhow::Result<FaultMount> {
        std::fs::create_dir_all(backing).with_context(|| format!("mkdir {}", backing.display()))?;
        let fuse = FuseMount::spawn(
            mnt,
            &["faults-fuse-daemon".into(), backing.as_os_str().to_owned()],
            true,
        )?;
        Ok(FaultMount {
            fuse,
            backing: backing.to_owned(),
        })
    }

    /// `NAME` through the mount.
    pub fn path(&self, name: &str) -> PathBuf {
        self.fuse.mountpoint().join(name)
    }

    /// `NAME` in the backing directory (bypasses every fault).
    pub fn backing(&self, name: &str) -> PathBuf {
        self.backing.join(name)
    }

    /// The backing directory.
    pub fn backing_dir(&self) -> &Path {
        &self.backing
    }

    /// Sets `rule` for `name` (`*`: every file without a rule of its own).
    pub fn set(&mut self, name: &str, rule: &Rule) -> anyhow::Result<()> {
        self.fuse
            .control(&format!("set {name} {}", rule.to_words()))?;
        Ok(())
    }

    /// Requests of `name` wait until [`thaw`](Self::thaw).
    pub fn freeze(&mut self, name: &str) -> anyhow::Result<()> {
        self.fuse.control(&format!("freeze {name}"))?;
        Ok(())
    }

    /// Lets `name`'s held requests go on.
    pub fn thaw(&mut self, name: &str) -> anyhow::Result<()> {
        self.fuse.control(&format!("thaw {name}"))?;
        Ok(())
    }

    /// No rules, nothing frozen.
    pub fn clear(&mut self) -> anyhow::Result<()> {
        self.fuse.control("clear")?;
        Ok(())
    }

    /// The daemon's counters, by kind.
    pub fn stats(&mut self) -> anyhow::Result<HashMap<String, u64>> {
        let line = self.fuse.control("stats")?;
        line.split_whitespace()
            .map(|w| {
                let (k, v) = w.split_once('=').context("stats KEY=VALUE")?;
                Ok((k.to_owned(), v.parse()?))
            })
            .collect()
    }

    /// Faults injected so far (every kind; abandoned requests are not faults).
    pub fn injected(&mut self) -> anyhow::Result<u64> {
        Ok(self
            .stats()?
            .iter()
            .filter(|(k, _)| k.as_str() != "interrupted")
            .map(|(_, v)| v)
            .sum())
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.fuse.pid()
    }

    /// The mount point.
    pub fn mountpoint(&self) -> &Path {
        self.fuse.mountpoint()
    }

    /// Unmounts and reaps; reports what went wrong.
    pub fn teardown(self) -> anyhow::Result<()> {
        self.fuse.teardown()
    }
}
