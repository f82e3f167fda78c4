//! Which metadata fields to ask for: the `STATX_*` mask bits.

use std::fmt;

bitflags::bitflags! {
    /// `STATX_*` mask bits: the fields a probe asks for, and (in
    /// [`Metadata::filled`](crate::Metadata::filled)) the fields the kernel
    /// says it filled.
    ///
    /// The values are the kernel's, so `Fields::SIZE.bits() == STATX_SIZE`.
    /// Asking for a field is a request, not a promise: a filesystem or an
    /// older kernel may leave it out, and the result then says so.
    ///
    /// # References
    /// - [`statx(2)`](https://man7.org/linux/man-pages/man2/statx.2.html)
    /// - `include/uapi/linux/stat.h`
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
    pub struct Fields: u32 {
        /// `STATX_TYPE`: the file type bits of `stx_mode`.
        const TYPE = 0x0000_0001;
        /// `STATX_MODE`: the permission bits of `stx_mode`.
        const MODE = 0x0000_0002;
        /// `STATX_NLINK`: `stx_nlink`.
        const NLINK = 0x0000_0004;
        /// `STATX_UID`: `stx_uid`.
        const UID = 0x0000_0008;
        /// `STATX_GID`: `stx_gid`.
        const GID = 0x0000_0010;
        /// `STATX_ATIME`: `stx_atime`.
        const ATIME = 0x0000_0020;
        /// `STATX_MTIME`: `stx_mtime`.
        const MTIME = 0x0000_0040;
        /// `STATX_CTIME`: `stx_ctime`.
        const CTIME = 0x0000_0080;
        /// `STATX_INO`: `stx_ino`.
        const INO = 0x0000_0100;
        /// `STATX_SIZE`: `stx_size`.
        const SIZE = 0x0000_0200;
        /// `STATX_BLOCKS`: `stx_blocks` (512-byte units allocated).
        const BLOCKS = 0x0000_0400;
        /// `STATX_BASIC_STATS`: everything `stat(2)` returns.
        const BASIC = 0x0000_07ff;
        /// `STATX_BTIME`: `stx_btime`, the creation time (since Linux 4.11,
        /// filled by ext4, xfs, btrfs, tmpfs since 6.x, …).
        const BTIME = 0x0000_0800;
        /// `STATX_MNT_ID`: `stx_mnt_id` (since Linux 5.8).
        const MNT_ID = 0x0000_1000;
        /// `STATX_DIOALIGN`: `stx_dio_mem_align` and `stx_dio_offset_align`
        /// (since Linux 6.1; regular files and block devices only).
        const DIOALIGN = 0x0000_2000;
        /// `STATX_MNT_ID_UNIQUE`: a 64-bit mount id never reused (since
        /// Linux 6.8). When granted, the kernel reports it *instead of*
        /// `STATX_MNT_ID`.
        const MNT_ID_UNIQUE = 0x0000_4000;
        /// `STATX_SUBVOL`: `stx_subvol`, the btrfs/bcachefs subvolume (since
        /// Linux 6.10).
        const SUBVOL = 0x0000_8000;
        /// `STATX_WRITE_ATOMIC`: the `stx_atomic_write_*` limits (since
        /// Linux 6.11).
        const WRITE_ATOMIC = 0x0001_0000;
        /// `STATX_DIO_READ_ALIGN`: `stx_dio_read_offset_align` (since
        /// Linux 6.14), when direct reads allow a finer alignment than writes.
        const DIO_READ_ALIGN = sparsekit_sys::consts::STATX_DIO_READ_ALIGN.bits();
    }
}

/// One row per field: name used on the command line and in JSON, the C
/// name, and the first kernel that knows it.
const TABLE: &[(Fields, &str, &str, &str)] = &[
    (Fields::TYPE, "type", "STATX_TYPE", "4.11"),
    (Fields::MODE, "mode", "STATX_MODE", "4.11"),
    (Fields::NLINK, "nlink", "STATX_NLINK", "4.11"),
    (Fields::UID, "uid", "STATX_UID", "4.11"),
    (Fields::GID, "gid", "STATX_GID", "4.11"),
    (Fields::ATIME, "atime", "STATX_ATIME", "4.11"),
    (Fields::MTIME, "mtime", "STATX_MTIME", "4.11"),
    (Fields::CTIME, "ctime", "STATX_CTIME", "4.11"),
    (Fields::INO, "ino", "STATX_INO", "4.11"),
    (Fields::SIZE, "size", "STATX_SIZE", "4.11"),
    (Fields::BLOCKS, "blocks", "STATX_BLOCKS", "4.11"),
    (Fields::BTIME, "btime", "STATX_BTIME", "4.11"),
    (Fields::MNT_ID, "mnt_id", "STATX_MNT_ID", "5.8"),
    (Fields::DIOALIGN, "dioalign", "STATX_DIOALIGN", "6.1"),
    (
        Fields::MNT_ID_UNIQUE,
        "mnt_id_unique",
        "STATX_MNT_ID_UNIQUE",
        "6.8",
    ),
    (Fields::SUBVOL, "subvol", "STATX_SUBVOL", "6.10"),
    (
        Fields::WRITE_ATOMIC,
        "write_atomic",
        "STATX_WRITE_ATOMIC",
        "6.11",
    ),
    (
        Fields::DIO_READ_ALIGN,
        "dio_read_align",
        "STATX_DIO_READ_ALIGN",
        "6.14",
    ),
];

impl Fields {
    /// Every field this crate knows how to decode.
    pub const KNOWN: Fields = Fields::all();

    /// The fields `stat(2)`/`fstatat(2)` always return: what the fallback
    /// strategy can report.
    pub const FSTATAT: Fields = Fields::BASIC;

    /// Looks a field up by its name (`"size"`, `"btime"`, …, as in
    /// [`Fields::names`]), or one of the groups `"basic"` and `"all"`.
    /// Case and `-`/`_` are not significant; `STATX_SIZE` works too.
    pub fn by_name(name: &str) -> Option<Fields> {
        let n = name.trim().to_ascii_lowercase().replace('-', "_");
        let n = n.strip_prefix("statx_").unwrap_or(&n);
        match n {
            "basic" | "basic_stats" => return Some(Fields::BASIC),
            "all" => return Some(Fields::KNOWN),
            _ => {}
        }
        TABLE.iter().find(|row| row.1 == n).map(|row| row.0)
    }

    /// Parses a comma-separated list such as `"size,blocks,btime"`.
    ///
    /// # Errors
    /// The first unknown name, with the list of valid ones.
    pub fn parse_list(list: &str) -> Result<Fields, String> {
        let mut fields = Fields::empty();
        for name in list.split(',').filter(|s| !s.trim().is_empty()) {
            fields |= Fields::by_name(name).ok_or_else(|| {
                let valid: Vec<&str> = TABLE.iter().map(|row| row.1).collect();
                format!(
                    "unknown field {:?} (valid: {}, or the groups basic and all)",
                    name.trim(),
                    valid.join(", ")
                )
            })?;
        }
        if fields.is_empty() {
            return Err("no field named (e.g. size,blocks,btime)".to_owned());
        }
        Ok(fields)
    }

    /// The short names of the single fields set in `self`, in kernel bit
    /// order (`"type"`, `"mode"`, …, `"dio_read_align"`).
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        TABLE
            .iter()
            .filter(move |row| self.contains(row.0))
            .map(|row| row.1)
    }

    /// The C name (`"STATX_DIOALIGN"`) of a single field.
    pub fn c_name(self) -> Option<&'static str> {
        TABLE.iter().find(|row| row.0 == self).map(|row| row.2)
    }

    /// The first Linux version that can fill a single field (`"6.1"` for
    /// [`Fields::DIOALIGN`]); whether a filesystem fills it is another
    /// matter, which only a probe tells.
    pub fn since(self) -> Option<&'static str> {
        TABLE.iter().find(|row| row.0 == self).map(|row| row.3)
    }
}

impl fmt::Display for Fields {
    /// Comma-separated short names, or `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for name in self.names() {
            if !first {
                f.write_str(",")?;
            }
            f.write_str(name)?;
            first = false;
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_are_the_kernels() {
        // Values from include/uapi/linux/stat.h, checked against rustix where it has them.
        use rustix::fs::StatxFlags;
        assert_eq!(Fields::BASIC.bits(), StatxFlags::BASIC_STATS.bits());
        assert_eq!(Fields::BTIME.bits(), StatxFlags::BTIME.bits());
        assert_eq!(Fields::MNT_ID.bits(), StatxFlags::MNT_ID.bits());
        assert_eq!(Fields::DIOALIGN.bits(), StatxFlags::DIOALIGN.bits());
        assert_eq!(Fields::DIO_READ_ALIGN.bits(), 0x0002_0000);
    }

    #[test]
    fn names_round_trip() {
        for row in TABLE {
            assert_eq!(Fields::by_name(row.1), Some(row.0));
            assert_eq!(Fields::by_name(row.2), Some(row.0));
            assert_eq!(row.0.c_name(), Some(row.2));
            assert_eq!(row.0.names().collect::<Vec<_>>(), vec![row.1]);
        }
        assert_eq!(Fields::KNOWN.names().count(), TABLE.len());
    }

    #[test]
    fn parse_list_accepts_groups_and_spelling_variants() {
        assert_eq!(
            Fields::parse_list("size, Blocks,dio-read-align").unwrap(),
            Fields::SIZE | Fields::BLOCKS | Fields::DIO_READ_ALIGN
        );
        assert_eq!(
            Fields::parse_list("basic,btime").unwrap(),
            Fields::BASIC | Fields::BTIME
        );
        assert_eq!(Fields::parse_list("all").unwrap(), Fields::KNOWN);
    }

    #[test]
    fn parse_list_rejects_unknown_and_empty() {
        let err = Fields::parse_list("size,colour").unwrap_err();
        assert!(err.contains("\"colour\""), "{err}");
        assert!(err.contains("dioalign"), "{err}");
        assert!(Fields::parse_list(" , ").is_err());
    }

    #[test]
    fn display_lists_names() {
        assert_eq!((Fields::SIZE | Fields::BTIME).to_string(), "size,btime");
        assert_eq!(Fields::empty().to_string(), "none");
    }
}
