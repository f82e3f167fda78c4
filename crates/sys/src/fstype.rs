//! Filesystem names from `statfs(2)`'s `f_type` magic numbers, so messages
//! can say "on ext4" rather than "on 0xef53".
//!
//! # References
//! - [`statfs(2)`](https://man7.org/linux/man-pages/man2/statfs.2.html)
//! - `include/uapi/linux/magic.h`

use rustix::fd::AsFd;
use std::fmt;

/// A filesystem type as `fstatfs` reports it in `f_type`.
///
/// Displays as the filesystem's name (`ext4`, `xfs`, `btrfs`, `tmpfs`, …)
/// or, for magics not in the table, as `filesystem 0x1234abcd`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FsType(pub u64);

impl FsType {
    /// `fstatfs(fd).f_type`—The type of the filesystem `fd` lives on.
    ///
    /// # References
    /// - [`fstatfs(2)`](https://man7.org/linux/man-pages/man2/fstatfs.2.html)
    #[doc(alias = "fstatfs")]
    pub fn of<Fd: AsFd>(fd: Fd) -> rustix::io::Result<Self> {
        let st = rustix::fs::fstatfs(fd)?;
        // f_type is a signed word on some targets; the magic is its bit pattern.
        Ok(FsType(st.f_type as u64 & 0xffff_ffff))
    }

    /// The usual name (`"ext4"`), or `None` for magics not in the table.
    ///
    /// ext2, ext3 and ext4 share one magic; it is named `ext4`, the driver
    /// that mounts all three on current kernels.
    pub fn name(self) -> Option<&'static str> {
        MAGICS.iter().find(|(m, _)| *m == self.0).map(|(_, n)| *n)
    }
}

impl fmt::Display for FsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "filesystem {:#x}", self.0),
        }
    }
}

impl fmt::Debug for FsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FsType({self} = {:#x})", self.0)
    }
}

/// `include/uapi/linux/magic.h` plus a few out-of-tree and FUSE ones.
const MAGICS: &[(u64, &str)] = &[
    (0xEF53, "ext4"),
    (0x5846_5342, "xfs"),
    (0x9123_683E, "btrfs"),
    (0x0102_1994, "tmpfs"),
    (0x6573_5546, "fuse"),
    (0x794C_7630, "overlayfs"),
    (0x7371_7368, "squashfs"),
    (0xE0F5_E1E2, "erofs"),
    (0xF2F5_2010, "f2fs"),
    (0x2FC1_2FC1, "zfs"),
    (0xCA45_1A4E, "bcachefs"),
    (0x6969, "nfs"),
    (0xFF53_4D42, "cifs"),
    (0xFE53_4D42, "smb2"),
    (0x0102_1997, "9p"),
    (0x0000_4d44, "vfat"),
    (0x2011_BAB0, "exfat"),
    (0x5346_544E, "ntfs"),
    (0x9660, "iso9660"),
    (0x1501_3346, "udf"),
    (0x3153_464A, "jfs"),
    (0x5265_4973, "reiserfs"),
    (0x8584_58f6, "ramfs"),
    (0x9FA0, "proc"),
    (0x6265_6572, "sysfs"),
    (0x1CD1, "devpts"),
    (0x0027_e0eb, "cgroup"),
    (0x6367_7270, "cgroup2"),
    (0x6462_6720, "debugfs"),
    (0x7472_6163, "tracefs"),
    (0xCAFE_4A11, "bpf"),
    (0x4244, "hfs"),
    (0x482b, "hfsplus"),
    (0x7461_636F, "ocfs2"),
    (0x0116_1970, "gfs2"),
    (0x00C3_6400, "ceph"),
    (0x5346_414F, "afs"),
    (0x5a3c_69f0, "aafs"),
    (0x7375_7245, "coda"),
    (0x6e73_6673, "nsfs"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_known_and_unknown_magics() {
        assert_eq!(FsType(0xEF53).to_string(), "ext4");
        assert_eq!(FsType(0x9123_683E).to_string(), "btrfs");
        assert_eq!(FsType(0x1234_5678).to_string(), "filesystem 0x12345678");
        assert_eq!(FsType(0x1234_5678).name(), None);
    }

    #[test]
    fn finds_the_type_of_an_open_file() {
        let f = std::fs::File::open("/proc/self/status").unwrap();
        assert_eq!(FsType::of(&f).unwrap().name(), Some("proc"));
    }
}
