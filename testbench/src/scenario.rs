//! The scenario API: a named function run on one mounted filesystem, whose
//! outcome is pass, fail (an error or a panic) or skip with a reason.
//!
//! ```ignore
//! fn punch_frees_blocks(ctx: &Ctx<'_>) -> ScenarioResult {
//!     let f = ctx.create("f")?;
//!     match try_punch(&f) {
//!         Err(e) if e == Errno::OPNOTSUPP => skip!("PUNCH_HOLE: {e}"),
//!         r => r?,
//!     }
//!     anyhow::ensure!(blocks(&f)? == 0, "blocks not freed");
//!     Ok(Verdict::Pass)
//! }
//! ```

use crate::fixture::MountedFs;
use sparsekit_clone::{MapError, Sharing, sharing};
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// What a scenario returns: `Ok(Pass)`, `Ok(Skip(reason))`, or `Err` (fail).
pub type ScenarioResult = anyhow::Result<Verdict>;

/// A wall-clock budget made for a real machine, stretched where the bench
/// runs under software emulation: `cargo xtask testbench --kernel` sets
/// `SPARSEKIT_ACCEL=tcg` when QEMU could not use KVM, where CPU-bound work
/// measured 8–15× and small I/O up to 25× slower than the host.
pub fn wall_budget(real: std::time::Duration) -> std::time::Duration {
    match std::env::var("SPARSEKIT_ACCEL").as_deref() {
        Ok("tcg") => real * TCG_SLOWDOWN,
        _ => real,
    }
}

/// The slowdown allowed for under TCG: the worst measured, with room.
const TCG_SLOWDOWN: u32 = 30;

/// A scenario's non-failing outcomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every check held.
    Pass,
    /// Not applicable here ("not supported here" is a result, not a
    /// failure); the reason is shown and counted.
    Skip(String),
}

/// Returns `Ok(Verdict::Skip(format!(…)))` from the enclosing scenario.
#[macro_export]
macro_rules! skip {
    ($($arg:tt)*) => {
        return Ok($crate::scenario::Verdict::Skip(format!($($arg)*)))
    };
}

/// Skips the scenario unless `cond` holds.
#[macro_export]
macro_rules! require {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            $crate::skip!($($arg)*);
        }
    };
}

/// A named scenario.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// `crate/what_it_checks`, unique.
    pub name: &'static str,
    /// The body.
    pub run: fn(&Ctx<'_>) -> ScenarioResult,
}

impl Scenario {
    /// `Scenario { name, run }`, for compact lists.
    pub const fn new(name: &'static str, run: fn(&Ctx<'_>) -> ScenarioResult) -> Self {
        Scenario { name, run }
    }
}

/// What a scenario gets: the filesystem and a fresh scratch directory on it
/// (removed afterwards).
#[derive(Debug)]
pub struct Ctx<'a> {
    fs: &'a MountedFs,
    dir: PathBuf,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(fs: &'a MountedFs, dir: PathBuf) -> Self {
        Ctx { fs, dir }
    }

    /// The filesystem under test.
    pub fn fs(&self) -> &MountedFs {
        self.fs
    }

    /// Its name in matrix.toml (`btrfs-zstd`).
    pub fn fs_name(&self) -> &str {
        self.fs.name()
    }

    /// Its mount(2) type (`btrfs`).
    pub fn fstype(&self) -> &str {
        &self.fs.def().fstype
    }

    /// The scratch directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A path in the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// FIEMAP's view of which bytes of `path` share extents: the file's
    /// own map, or on NFS the map of the same file on the server's
    /// filesystem ([`MountedFs::server_path`]), after the client's writes
    /// to it were flushed.
    pub fn sharing(&self, path: &Path, range: Range<u64>) -> Result<Sharing, MapError> {
        let failed = |op, e: std::io::Error| MapError::Io {
            op,
            offset: 0,
            errno: rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO),
        };
        let file = File::open(path).map_err(|e| failed("open", e))?;
        match self.fs.server_path(path) {
            None => sharing(&file, range),
            Some(on_server) => {
                file.sync_all().map_err(|e| failed("fsync", e))?;
                let seen = File::open(on_server).map_err(|e| failed("open", e))?;
                sharing(&seen, range)
            }
        }
    }

    /// Creates (truncates) a read-write file in the scratch directory.
    pub fn create(&self, name: &str) -> anyhow::Result<File> {
        let path = self.path(name);
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("create {}: {e}", path.display()))
    }
}
