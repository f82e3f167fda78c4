//! Filesystem definitions, read from the `[[filesystem]]` tables of matrix.toml.

use anyhow::{Context, bail};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// One filesystem the bench makes and mounts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsDef {
    /// Unique name, the matrix column (`xfs-noreflink`).
    pub name: String,
    /// Type passed to mount(2) (`xfs`).
    pub fstype: String,
    /// mkfs command and options; the image path is appended. Empty for tmpfs.
    #[serde(default)]
    pub mkfs: Vec<String>,
    /// Debian package providing `mkfs[0]`.
    #[serde(default)]
    pub package: Option<String>,
    /// Mount data string (`compress-force=zstd`).
    #[serde(default)]
    pub mount_options: String,
    /// Image size (`512M`); images are sparse, so this costs nothing until written.
    #[serde(default = "default_image_size")]
    pub image_size: String,
    /// For stacked filesystems: the definition mounted first. An overlay
    /// is mounted over its directories; an NFS definition (`fstype` `nfs`
    /// or `nfs4`, `vers=` in `mount_options`) exports it from a kernel NFS
    /// server in the same machine and mounts it back over 127.0.0.1.
    #[serde(default)]
    pub over: Option<String>,
    /// For block-device definitions: `"loop"` (a sparse image on the
    /// bench's temporary directory, attached to a loop device) or `"nbd"`
    /// (the image served by qemu-nbd to the kernel's nbd client). Nothing
    /// is mounted: the caps are the block rows and only the `blockdev/`
    /// scenarios run.
    #[serde(default)]
    pub device: Option<String>,
    /// Extra qemu-nbd options of an `nbd` device (`["--discard=unmap"]`).
    #[serde(default)]
    pub nbd_options: Vec<String>,
    /// `over`, resolved by [`load`].
    #[serde(skip)]
    pub over_def: Option<Box<FsDef>>,
}

fn default_image_size() -> String {
    "512M".into()
}

impl FsDef {
    /// Whether the filesystem lives on a loop-attached image (everything but tmpfs).
    pub fn needs_image(&self) -> bool {
        !self.mkfs.is_empty()
    }

    /// Whether this is a block-device definition (`device` set).
    pub fn is_block(&self) -> bool {
        self.device.is_some()
    }

    /// The NFS protocol version of an NFS definition (`"3"`, `"4.2"`), from
    /// the `vers=` mount option; `None` for other filesystems.
    pub fn nfs_version(&self) -> Option<&str> {
        if !matches!(self.fstype.as_str(), "nfs" | "nfs4") {
            return None;
        }
        self.mount_options
            .split(',')
            .find_map(|o| o.strip_prefix("vers="))
    }

    /// `image_size` in bytes.
    pub fn image_bytes(&self) -> anyhow::Result<u64> {
        parse_size(&self.image_size).with_context(|| format!("{}: image_size", self.name))
    }
}

#[derive(Debug, Deserialize)]
struct MatrixFile {
    #[serde(default)]
    filesystem: Vec<FsDef>,
}

/// The workspace's matrix.toml (found from this crate's manifest directory).
pub fn matrix_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../matrix.toml")
}

/// Reads the filesystem definitions from `path`.
pub fn load(path: &Path) -> anyhow::Result<Vec<FsDef>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let file: MatrixFile =
        toml::from_str(&text).with_context(|| format!("{}: invalid", path.display()))?;
    let mut seen = std::collections::HashSet::new();
    for def in &file.filesystem {
        if !seen.insert(&def.name) {
            bail!(
                "{}: filesystem {:?} defined twice",
                path.display(),
                def.name
            );
        }
        def.image_bytes()?;
        match def.device.as_deref() {
            None | Some("loop" | "nbd") => {}
            Some(other) => bail!(
                "{}: {:?}: device {other:?} is neither \"loop\" nor \"nbd\"",
                path.display(),
                def.name
            ),
        }
        if def.device.is_some() && (!def.mkfs.is_empty() || def.over.is_some()) {
            bail!(
                "{}: {:?}: a block device takes no mkfs and stacks on nothing",
                path.display(),
                def.name
            );
        }
        if matches!(def.fstype.as_str(), "nfs" | "nfs4")
            && (def.over.is_none() || def.nfs_version().is_none())
        {
            bail!(
                "{}: NFS filesystem {:?} needs `over` (the exported filesystem) and vers= in mount_options",
                path.display(),
                def.name
            );
        }
    }
    let all = file.filesystem.clone();
    let mut defs = file.filesystem;
    for def in &mut defs {
        if let Some(base) = &def.over {
            let found = all
                .iter()
                .find(|d| &d.name == base && d.over.is_none())
                .with_context(|| {
                    format!(
                        "{}: {:?} is over {base:?}, which is not a plain filesystem defined here",
                        path.display(),
                        def.name
                    )
                })?;
            def.over_def = Some(Box::new(found.clone()));
        }
    }
    Ok(defs)
}

/// `512M` → bytes (binary suffixes K, M, G).
pub fn parse_size(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let (num, shift) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    let n: u64 = num.parse().with_context(|| format!("bad size {s:?}"))?;
    Ok(n << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_matrix_defines_the_required_filesystems() {
        let defs = load(&matrix_path()).unwrap();
        let names: Vec<_> = defs.iter().map(|d| d.name.as_str()).collect();
        let overlay = defs.iter().find(|d| d.fstype == "overlay").unwrap();
        assert_eq!(overlay.over_def.as_ref().unwrap().fstype, "xfs");
        let nfs: Vec<_> = defs
            .iter()
            .filter_map(|d| Some((d.name.as_str(), d.nfs_version()?)))
            .collect();
        assert_eq!(
            nfs,
            [
                ("nfs4.2-xfs", "4.2"),
                ("nfs4.2-btrfs", "4.2"),
                ("nfs3-xfs", "3")
            ]
        );
        for required in ["ext4", "xfs", "btrfs", "tmpfs"] {
            assert!(
                names.contains(&required),
                "{required} missing from {names:?}"
            );
        }
        for required in ["loop", "nbd", "nbd-discard-ignore"] {
            let d = defs.iter().find(|d| d.name == required).unwrap();
            assert!(d.is_block() && d.mkfs.is_empty(), "{required}");
        }
        for d in &defs {
            let bytes = d.image_bytes().unwrap();
            // A device is written whole by its scenarios: smaller.
            let least = if d.is_block() { 32 << 20 } else { 256 << 20 };
            assert!((least..=1 << 30).contains(&bytes), "{}: {bytes}", d.name);
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert!(parse_size("x").is_err());
    }
}
