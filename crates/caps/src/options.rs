//! [`CapsOptions`] and [`probe`]: run every trial for one directory.

use crate::error::CapsError;
use crate::fsinfo;
use crate::report::CapsReport;
use crate::scratch::ScratchDir;
use crate::trials::{self, Ctx};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Options for a probe; start from [`CapsOptions::new`].
#[derive(Clone, Debug, Default)]
pub struct CapsOptions {
    cross_fs_dir: Option<PathBuf>,
    named_scratch: bool,
}

impl CapsOptions {
    /// No second directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// A writable directory on another filesystem, for
    /// `copy_file_range_cross_fs`. Without one (or with one on the same
    /// filesystem) that capability is listed in
    /// [`CapsReport::not_tried`] instead.
    pub fn cross_fs_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cross_fs_dir = Some(dir.into());
        self
    }

    /// Make scratch files by name (created, then unlinked at once) even
    /// where `O_TMPFILE` works: the fallback used where it does not, forced
    /// so it can be tested anywhere. The `o_tmpfile` cell still reports
    /// what `O_TMPFILE` does.
    pub fn named_scratch(mut self, named: bool) -> Self {
        self.named_scratch = named;
        self
    }

    /// Runs every trial in `dir` and classifies every capability of
    /// [`CAPABILITIES`](crate::CAPABILITIES).
    ///
    /// Scratch files are made in `dir` (and in the second directory) and
    /// are gone when this returns, whatever happens; the directory must be
    /// writable. Takes a few tens of milliseconds on local filesystems.
    ///
    /// # Errors
    /// [`CapsError`] when `dir` cannot be opened, is not a directory, or no
    /// scratch file can be made or written there (read-only, no
    /// permission, full); [`CapsError::CrossDir`] for an unusable second
    /// directory. Missing capabilities are never errors.
    pub fn probe(&self, dir: impl AsRef<Path>) -> Result<CapsReport, CapsError> {
        let dir = dir.as_ref();
        let scratch_dir = ScratchDir::open(dir, self.named_scratch)?;
        let first = scratch_dir.file()?;
        let mut filesystem = fsinfo::identify(&scratch_dir, &first)?;
        drop(first);

        let mut ctx = Ctx::new(&scratch_dir, filesystem.block_size);
        ctx.dio_align = filesystem.dio_mem_align.zip(filesystem.dio_offset_align);
        ctx.dio_read_align = filesystem.dio_read_offset_align;
        trials::meta::run(&mut ctx)?;
        trials::cache::run(&mut ctx)?;
        trials::seek::run(&mut ctx)?;
        trials::alloc::run(&mut ctx)?;
        trials::remap::run(&mut ctx)?;
        trials::lease::run(&mut ctx)?;

        let mut not_tried = BTreeMap::new();
        match &self.cross_fs_dir {
            None => {
                not_tried.insert(
                    "copy_file_range_cross_fs".to_owned(),
                    "no second directory on another filesystem was given".to_owned(),
                );
            }
            Some(peer_path) => {
                let cross = |op, errno| CapsError::CrossDir {
                    path: peer_path.clone(),
                    op,
                    errno,
                };
                let peer = ScratchDir::open(peer_path, self.named_scratch)
                    .map_err(|e| cross("open", e.errno().unwrap_or(rustix::io::Errno::INVAL)))?;
                let here = rustix::fs::fstat(&scratch_dir.dir).map_err(|e| cross("fstat", e))?;
                let there = rustix::fs::fstat(&peer.dir).map_err(|e| cross("fstat", e))?;
                let peer_fs = sparsekit_sys::fstype::FsType::of(&peer.dir)
                    .map_err(|e| cross("fstatfs", e))?
                    .to_string();
                filesystem.cross_fs_peer = Some(format!("{} ({peer_fs})", peer_path.display()));
                if here.st_dev == there.st_dev {
                    not_tried.insert(
                        "copy_file_range_cross_fs".to_owned(),
                        format!(
                            "the second directory {} is on the same filesystem",
                            peer_path.display()
                        ),
                    );
                } else {
                    trials::remap::cross_fs(&mut ctx, &peer, &peer_fs)?;
                }
            }
        }
        Ok(CapsReport {
            filesystem,
            capabilities: ctx.cells,
            not_tried,
        })
    }
}

/// Probes `dir` with the default [`CapsOptions`] (no second directory).
///
/// # Errors
/// As [`CapsOptions::probe`].
pub fn probe(dir: impl AsRef<Path>) -> Result<CapsReport, CapsError> {
    CapsOptions::new().probe(dir)
}
