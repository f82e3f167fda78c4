//! The report types: [`CapsReport`], [`FsInfo`], [`Cell`], [`Support`].
//!
//! These are the cell format of `matrix.toml`, so their serialized shape is
//! a contract: field names, the lowercase support levels and the capability
//! names only ever grow. The exact schema is in the crate docs.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// How well a filesystem provides one capability, as observed by trial.
///
/// Serialized as `"native"`, `"degraded"`, `"emulated"` or `"unsupported"`;
/// the why / by / errno of the design's
/// `Support { Native, Degraded { why }, Emulated { by }, Unsupported { errno } }`
/// live in the [`Cell`]'s `reason` and `errno` fields so that a cell stays a
/// flat table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Support {
    /// The kernel operation exists and its semantics were verified.
    Native,
    /// The call succeeds but does less than it promises (`reason` says what).
    Degraded,
    /// The kernel operation is missing (`errno`) and the op crate's fallback
    /// provides the semantics (`reason` names the fallback, which was run
    /// and verified).
    Emulated,
    /// Neither the kernel nor a fallback provides it (`errno` says why).
    Unsupported,
}

impl Support {
    /// The serialized name (`"native"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Support::Native => "native",
            Support::Degraded => "degraded",
            Support::Emulated => "emulated",
            Support::Unsupported => "unsupported",
        }
    }

    /// Parses a serialized name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "native" => Some(Support::Native),
            "degraded" => Some(Support::Degraded),
            "emulated" => Some(Support::Emulated),
            "unsupported" => Some(Support::Unsupported),
            _ => None,
        }
    }
}

impl fmt::Display for Support {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One capability of one filesystem: a cell of `matrix.toml`.
///
/// Optional fields are left out of the serialized form when empty.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cell {
    /// The classification.
    pub support: Support,
    /// The errno the kernel returned, by symbolic name (`"EOPNOTSUPP"`):
    /// always set for `unsupported` and `emulated` cells, sometimes for
    /// `degraded` ones (e.g. `ENXIO` from `SEEK_DATA`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<String>,
    /// Why it is degraded, which fallback emulates it, or what failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Observed values worth keeping (alignments, statx fields, bytes freed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// How the classification was verified, e.g. `"fallocate(PUNCH_HOLE);
    /// read back zeros; st_blocks fell"`.
    pub verified_by: String,
}

impl Cell {
    /// A native cell.
    pub fn native(verified_by: impl Into<String>) -> Self {
        Cell {
            support: Support::Native,
            errno: None,
            reason: None,
            detail: None,
            verified_by: verified_by.into(),
        }
    }

    /// A degraded cell: the call works but does less (`why`).
    pub fn degraded(why: impl Into<String>, verified_by: impl Into<String>) -> Self {
        Cell {
            support: Support::Degraded,
            reason: Some(why.into()),
            ..Cell::native(verified_by)
        }
    }

    /// An emulated cell: the kernel said `errno`, the fallback `by` works.
    pub fn emulated(
        errno: impl Into<String>,
        by: impl Into<String>,
        verified_by: impl Into<String>,
    ) -> Self {
        Cell {
            support: Support::Emulated,
            errno: Some(errno.into()),
            reason: Some(by.into()),
            ..Cell::native(verified_by)
        }
    }

    /// An unsupported cell with the errno seen.
    pub fn unsupported(errno: impl Into<String>, verified_by: impl Into<String>) -> Self {
        Cell {
            support: Support::Unsupported,
            errno: Some(errno.into()),
            ..Cell::native(verified_by)
        }
    }

    /// Adds (or replaces) the errno.
    pub fn with_errno(mut self, errno: impl Into<String>) -> Self {
        self.errno = Some(errno.into());
        self
    }

    /// Adds (or replaces) the reason.
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Adds (or replaces) the detail.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Whether the capability can be used, natively or otherwise
    /// (`native`, `degraded` or `emulated`).
    pub fn is_usable(&self) -> bool {
        self.support != Support::Unsupported
    }
}

/// What the filesystem under the probed directory is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsInfo {
    /// The filesystem name from `fstatfs` `f_type` (`"ext4"`, `"xfs"`, …),
    /// or `"0x…"` for an unknown magic.
    pub fs_type: String,
    /// `f_type` in hex (`"0xef53"`).
    pub magic: String,
    /// The filesystem type mountinfo reports (`"ext4"`, `"fuse.sshfs"`),
    /// which can be more precise than `fs_type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_fs_type: Option<String>,
    /// `f_bsize`: the block size allocation and alignment use.
    pub block_size: u64,
    /// The directory probed (as given).
    pub directory: String,
    /// The mount point it belongs to, from `/proc/self/mountinfo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_point: Option<String>,
    /// The mount source (`/dev/loop3`, `tmpfs`, `server:/export`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_source: Option<String>,
    /// Per-mount options (`rw,relatime`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_options: Option<String>,
    /// Per-superblock options (`rw,seclabel,size=…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub super_options: Option<String>,
    /// `st_dev` of the directory as `major:minor`.
    pub device: String,
    /// The mount id (`STATX_MNT_ID_UNIQUE` where the kernel has it, else
    /// `STATX_MNT_ID`, else the mountinfo id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_id: Option<u64>,
    /// `STATX_DIOALIGN` `stx_dio_mem_align` of a scratch file (bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dio_mem_align: Option<u32>,
    /// `STATX_DIOALIGN` `stx_dio_offset_align` of a scratch file (bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dio_offset_align: Option<u32>,
    /// `STATX_DIO_READ_ALIGN` `stx_dio_read_offset_align` (Linux 6.14).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dio_read_offset_align: Option<u32>,
    /// `uname -r`.
    pub kernel_release: String,
    /// How scratch files were made: `"o_tmpfile"` or `"named"` (a unique
    /// hidden name, removed afterwards).
    pub scratch: String,
    /// The second directory for cross-filesystem trials, and its type
    /// (`"/mnt/xfs (xfs)"`), if one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_fs_peer: Option<String>,
}

/// Everything `caps` found out about one filesystem.
///
/// `capabilities` maps each capability name (see [`CAPABILITIES`]) to its
/// [`Cell`], in name order. `not_tried` names capabilities that could not
/// be tried at all and why (only `copy_file_range_cross_fs` without a
/// second directory, or one on the same filesystem).
///
/// [`CAPABILITIES`]: crate::CAPABILITIES
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapsReport {
    /// The filesystem.
    pub filesystem: FsInfo,
    /// Capability name → cell.
    pub capabilities: BTreeMap<String, Cell>,
    /// Capability name → why it was not tried.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub not_tried: BTreeMap<String, String>,
}

impl CapsReport {
    /// The cell of one capability, if it was tried.
    pub fn get(&self, capability: &str) -> Option<&Cell> {
        self.capabilities.get(capability)
    }

    /// The support level of one capability, if it was tried.
    pub fn support(&self, capability: &str) -> Option<Support> {
        self.get(capability).map(|c| c.support)
    }

    /// A copy with the machine-specific values replaced by
    /// [`REDACTED`](Self::REDACTED): directory, mount point, mount source
    /// and options, device, mount id, kernel release and the second
    /// directory's path. What is left depends only on the filesystem and
    /// the kernel's behaviour, so two machines can compare it (the tmpfs
    /// snapshot test and the bench do).
    pub fn redacted(&self) -> CapsReport {
        let mut r = self.clone();
        let fs = &mut r.filesystem;
        let red = || Self::REDACTED.to_owned();
        fs.directory = red();
        fs.device = red();
        fs.kernel_release = red();
        for field in [
            &mut fs.mount_point,
            &mut fs.mount_source,
            &mut fs.mount_options,
            &mut fs.super_options,
            &mut fs.cross_fs_peer,
        ] {
            if field.is_some() {
                *field = Some(red());
            }
        }
        fs.mount_id = fs.mount_id.map(|_| 0);
        r
    }

    /// What [`redacted`](Self::redacted) puts in place of a value.
    pub const REDACTED: &'static str = "[redacted]";

    /// The capabilities whose cell on one filesystem changes with the
    /// kernel release, not only with the filesystem: system calls and
    /// flags added over time (`cachestat` 6.5, tmpfs `O_DIRECT` 6.6,
    /// `RWF_DONTCACHE` 6.14, `FALLOC_FL_WRITE_ZEROES` 6.17), what is
    /// measured with them (page-cache residency: by `cachestat` or, before
    /// it, `mincore`), and the statx fields a kernel fills.
    pub const KERNEL_DEPENDENT: &'static [&'static str] = &[
        "cachestat",
        "fadvise_dontneed",
        "o_direct",
        "rwf_dontcache_read",
        "rwf_dontcache_write",
        "seek_sees_dirty_data",
        "statx",
        "write_zeroes",
    ];

    /// What [`kernel_independent`](Self::kernel_independent) puts as the
    /// reason of a cell it masks.
    pub const KERNEL_DEPENDENT_REASON: &'static str = "[depends on the kernel]";

    /// [`redacted`](Self::redacted), and each cell of
    /// [`KERNEL_DEPENDENT`](Self::KERNEL_DEPENDENT) reduced to its
    /// `verified_by` (support `unsupported`, reason
    /// [`KERNEL_DEPENDENT_REASON`](Self::KERNEL_DEPENDENT_REASON)): for
    /// comparing reports of one filesystem made on different kernels. The
    /// set of capabilities, the filesystem section, every other cell whole
    /// and every `verified_by` still count. Not a report to show.
    pub fn kernel_independent(&self) -> CapsReport {
        let mut r = self.redacted();
        for name in Self::KERNEL_DEPENDENT {
            if let Some(cell) = r.capabilities.get_mut(*name) {
                *cell = Cell {
                    support: Support::Unsupported,
                    errno: None,
                    reason: Some(Self::KERNEL_DEPENDENT_REASON.to_owned()),
                    detail: None,
                    verified_by: std::mem::take(&mut cell.verified_by),
                };
            }
        }
        r
    }
}
