//! The result of a probe: the fields the kernel filled, and nothing else.

use crate::{Fallback, Fields, StatxUnavailable, Strategy, SyncMode};
use std::fmt;
use std::time::{Duration, SystemTime};

/// What a probe found: the fields the kernel actually filled (its
/// `stx_mask`), how it was asked, and by which strategy.
///
/// Every accessor for an optional field returns `None` unless the kernel
/// reported that field. Nothing is ever filled in from a default or a guess:
/// a filesystem that does not keep a creation time has
/// [`btime`](Metadata::btime) `None`, and a statx that fell back to
/// `fstatat(2)` has only the [`Fields::BASIC`] ones.
///
/// `blksize`, `dev` and `rdev` are always filled by both `statx(2)` and
/// `fstatat(2)`, so they are plain values.
#[derive(Clone, Debug)]
pub struct Metadata {
    pub(crate) requested: Fields,
    pub(crate) filled: Fields,
    pub(crate) raw_mask: u32,
    pub(crate) strategy: Strategy,
    pub(crate) sync: SyncMode,
    pub(crate) fallback: Option<StatxUnavailable>,
    pub(crate) attributes: Option<Attributes>,
    pub(crate) raw: Raw,
}

/// The decoded numbers, valid only where `filled` says so.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Raw {
    pub(crate) mode: u32,
    pub(crate) nlink: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) ino: u64,
    pub(crate) size: u64,
    pub(crate) blocks: u64,
    pub(crate) blksize: u32,
    pub(crate) atime: Timestamp,
    pub(crate) btime: Timestamp,
    pub(crate) ctime: Timestamp,
    pub(crate) mtime: Timestamp,
    pub(crate) dev: DevId,
    pub(crate) rdev: DevId,
    pub(crate) mnt_id: u64,
    pub(crate) dio_mem_align: u32,
    pub(crate) dio_offset_align: u32,
    pub(crate) dio_read_offset_align: u32,
    pub(crate) subvol: u64,
    pub(crate) atomic_write_unit_min: u32,
    pub(crate) atomic_write_unit_max: u32,
    pub(crate) atomic_write_segments_max: u32,
    pub(crate) atomic_write_unit_max_opt: u32,
}

impl Metadata {
    /// The fields that were asked for.
    pub fn requested(&self) -> Fields {
        self.requested
    }

    /// The fields the kernel filled: `stx_mask` restricted to
    /// [`Fields::KNOWN`] (with `statx`), or [`Fields::FSTATAT`] (with the
    /// fallback). It may hold fields that were not requested: the kernel
    /// returns the basic ones anyway.
    pub fn filled(&self) -> Fields {
        self.filled
    }

    /// Requested fields the kernel did not fill: unsupported by this
    /// filesystem or kernel, or dropped by the `fstatat` fallback.
    ///
    /// A granted `STATX_MNT_ID_UNIQUE` answers a request for `STATX_MNT_ID`
    /// too (the kernel fills one mount id and sets only the unique bit), so
    /// `MNT_ID` is not listed as missing then.
    pub fn missing(&self) -> Fields {
        let mut answered = self.filled;
        if answered.contains(Fields::MNT_ID_UNIQUE) {
            answered |= Fields::MNT_ID;
        }
        self.requested - answered
    }

    /// The raw `stx_mask`, including bits this crate does not decode (a
    /// newer kernel's). With the fallback, [`Fields::FSTATAT`]'s bits.
    pub fn raw_mask(&self) -> u32 {
        self.raw_mask
    }

    /// The strategy that produced the answer: [`Strategy::Statx`] or
    /// [`Strategy::Fstatat`], never `Auto`.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// The cache behaviour in effect. The `fstatat` fallback cannot pass
    /// `AT_STATX_DONT_SYNC` or `AT_STATX_FORCE_SYNC`, so it is always
    /// [`SyncMode::AsStat`] there, whatever was asked.
    pub fn sync(&self) -> SyncMode {
        self.sync
    }

    /// The fallback `Auto` took, if it used `fstatat` instead of `statx`:
    /// the record every sparsekit crate uses (`statx` and the errno that
    /// decided). [`statx_unavailable`](Self::statx_unavailable) has the
    /// whole story.
    pub fn fallback(&self) -> Option<Fallback> {
        self.fallback.as_ref().map(StatxUnavailable::fallback)
    }

    /// Why `Auto` used `fstatat` instead of `statx`, if it did: what statx
    /// returned and what the definitive probe returned.
    pub fn statx_unavailable(&self) -> Option<&StatxUnavailable> {
        self.fallback.as_ref()
    }

    fn get<T>(&self, field: Fields, value: T) -> Option<T> {
        self.filled.contains(field).then_some(value)
    }

    /// The file type (`STATX_TYPE`).
    pub fn file_type(&self) -> Option<FileType> {
        self.get(Fields::TYPE, FileType::from_mode(self.raw.mode))
    }

    /// The permission bits including set-user-ID, set-group-ID and sticky
    /// (`mode & 0o7777`, `STATX_MODE`).
    pub fn mode(&self) -> Option<u32> {
        self.get(Fields::MODE, self.raw.mode & 0o7777)
    }

    /// The number of hard links (`STATX_NLINK`).
    pub fn nlink(&self) -> Option<u32> {
        self.get(Fields::NLINK, self.raw.nlink)
    }

    /// The owner's user id (`STATX_UID`).
    pub fn uid(&self) -> Option<u32> {
        self.get(Fields::UID, self.raw.uid)
    }

    /// The group id (`STATX_GID`).
    pub fn gid(&self) -> Option<u32> {
        self.get(Fields::GID, self.raw.gid)
    }

    /// The inode number (`STATX_INO`).
    pub fn ino(&self) -> Option<u64> {
        self.get(Fields::INO, self.raw.ino)
    }

    /// The size in bytes (`STATX_SIZE`).
    pub fn size(&self) -> Option<u64> {
        self.get(Fields::SIZE, self.raw.size)
    }

    /// The number of 512-byte blocks allocated (`STATX_BLOCKS`).
    pub fn blocks(&self) -> Option<u64> {
        self.get(Fields::BLOCKS, self.raw.blocks)
    }

    /// Bytes allocated: [`blocks`](Metadata::blocks) × 512.
    pub fn allocated_bytes(&self) -> Option<u64> {
        self.blocks().map(|b| b.saturating_mul(512))
    }

    /// Last access (`STATX_ATIME`).
    pub fn atime(&self) -> Option<Timestamp> {
        self.get(Fields::ATIME, self.raw.atime)
    }

    /// Last data modification (`STATX_MTIME`).
    pub fn mtime(&self) -> Option<Timestamp> {
        self.get(Fields::MTIME, self.raw.mtime)
    }

    /// Last status change (`STATX_CTIME`).
    pub fn ctime(&self) -> Option<Timestamp> {
        self.get(Fields::CTIME, self.raw.ctime)
    }

    /// Creation ("birth") time (`STATX_BTIME`), where the filesystem keeps one.
    pub fn btime(&self) -> Option<Timestamp> {
        self.get(Fields::BTIME, self.raw.btime)
    }

    /// The mount id: the unique 64-bit one when `STATX_MNT_ID_UNIQUE` was
    /// granted (Linux 6.8+), else the reusable one of `STATX_MNT_ID` (5.8+).
    pub fn mount_id(&self) -> Option<MountId> {
        if self.filled.contains(Fields::MNT_ID_UNIQUE) {
            Some(MountId::Unique(self.raw.mnt_id))
        } else {
            self.get(Fields::MNT_ID, MountId::Reusable(self.raw.mnt_id))
        }
    }

    /// Direct I/O alignment (`STATX_DIOALIGN`, Linux 6.1+). Present but
    /// zero means the file does not support direct I/O.
    pub fn dio_align(&self) -> Option<DioAlign> {
        self.get(
            Fields::DIOALIGN,
            DioAlign {
                mem_align: self.raw.dio_mem_align,
                offset_align: self.raw.dio_offset_align,
            },
        )
    }

    /// The file offset alignment direct *reads* need
    /// (`stx_dio_read_offset_align`, `STATX_DIO_READ_ALIGN`, Linux 6.14+).
    pub fn dio_read_offset_align(&self) -> Option<u32> {
        self.get(Fields::DIO_READ_ALIGN, self.raw.dio_read_offset_align)
    }

    /// The subvolume id (`STATX_SUBVOL`, Linux 6.10+: btrfs, bcachefs).
    pub fn subvol(&self) -> Option<u64> {
        self.get(Fields::SUBVOL, self.raw.subvol)
    }

    /// Untorn-write limits (`STATX_WRITE_ATOMIC`, Linux 6.11+).
    pub fn atomic_write(&self) -> Option<AtomicWrite> {
        let opt = self.raw.atomic_write_unit_max_opt;
        self.get(
            Fields::WRITE_ATOMIC,
            AtomicWrite {
                unit_min: self.raw.atomic_write_unit_min,
                unit_max: self.raw.atomic_write_unit_max,
                segments_max: self.raw.atomic_write_segments_max,
                unit_max_opt: (opt != 0).then_some(opt),
            },
        )
    }

    /// The preferred I/O block size (`stx_blksize`; always filled).
    pub fn blksize(&self) -> u32 {
        self.raw.blksize
    }

    /// The device the file lives on (`stx_dev_major:stx_dev_minor`; always filled).
    pub fn dev(&self) -> DevId {
        self.raw.dev
    }

    /// The device a device file stands for (`stx_rdev_*`; always filled,
    /// `0:0` for other files).
    pub fn rdev(&self) -> DevId {
        self.raw.rdev
    }

    /// File attributes with the mask of those this filesystem supports
    /// (`stx_attributes`, `stx_attributes_mask`). `None` with the `fstatat`
    /// fallback, which has no such fields.
    pub fn attributes(&self) -> Option<Attributes> {
        self.attributes
    }
}

/// A timestamp as the kernel gives it: seconds and nanoseconds since the
/// Unix epoch (`struct statx_timestamp`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Seconds since 1970-01-01T00:00:00Z (negative before).
    pub sec: i64,
    /// Nanoseconds, below 1 000 000 000.
    pub nsec: u32,
}

impl Timestamp {
    /// As a [`SystemTime`]; `None` if it does not fit.
    pub fn to_system_time(self) -> Option<SystemTime> {
        let nanos = Duration::from_nanos(u64::from(self.nsec));
        if self.sec >= 0 {
            SystemTime::UNIX_EPOCH
                .checked_add(Duration::from_secs(self.sec.unsigned_abs()))?
                .checked_add(nanos)
        } else {
            SystemTime::UNIX_EPOCH
                .checked_sub(Duration::from_secs(self.sec.unsigned_abs()))?
                .checked_add(nanos)
        }
    }
}

impl fmt::Display for Timestamp {
    /// `1700000000.123456789` (seconds.nanoseconds since the epoch).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:09}", self.sec, self.nsec)
    }
}

/// A device number split into major and minor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DevId {
    /// The major number.
    pub major: u32,
    /// The minor number.
    pub minor: u32,
}

impl fmt::Display for DevId {
    /// `major:minor`, like `/proc/self/mountinfo`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// A mount id, of one of the two kinds statx can return.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MountId {
    /// `STATX_MNT_ID`: the id of `/proc/self/mountinfo`, reused after unmount.
    Reusable(u64),
    /// `STATX_MNT_ID_UNIQUE`: a 64-bit id never reused while the system runs.
    Unique(u64),
}

impl MountId {
    /// The number, whichever kind.
    pub fn get(self) -> u64 {
        match self {
            MountId::Reusable(id) | MountId::Unique(id) => id,
        }
    }
}

/// Direct I/O alignment restrictions (`STATX_DIOALIGN`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DioAlign {
    /// `stx_dio_mem_align`: the alignment of user memory buffers.
    pub mem_align: u32,
    /// `stx_dio_offset_align`: the alignment of file offsets and lengths.
    pub offset_align: u32,
}

impl DioAlign {
    /// Whether direct I/O is supported at all (both values non-zero).
    pub fn supported(self) -> bool {
        self.mem_align != 0 && self.offset_align != 0
    }
}

/// Untorn (atomic) write limits (`STATX_WRITE_ATOMIC`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AtomicWrite {
    /// `stx_atomic_write_unit_min`: the smallest untorn write, in bytes.
    pub unit_min: u32,
    /// `stx_atomic_write_unit_max`: the largest untorn write, in bytes.
    pub unit_max: u32,
    /// `stx_atomic_write_segments_max`: the most iovecs in one untorn write.
    pub segments_max: u32,
    /// `stx_atomic_write_unit_max_opt` (Linux 6.16+): the largest untorn
    /// write that is still fast; `None` when zero (no such limit, or a
    /// kernel that does not fill it).
    pub unit_max_opt: Option<u32>,
}

/// The file type bits of a mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FileType {
    /// `S_IFREG`
    Regular,
    /// `S_IFDIR`
    Directory,
    /// `S_IFLNK`
    Symlink,
    /// `S_IFIFO`
    Fifo,
    /// `S_IFSOCK`
    Socket,
    /// `S_IFCHR`
    CharDevice,
    /// `S_IFBLK`
    BlockDevice,
    /// Type bits this crate does not know.
    Unknown(u32),
}

impl FileType {
    pub(crate) fn from_mode(mode: u32) -> FileType {
        match mode & 0o170000 {
            0o100000 => FileType::Regular,
            0o040000 => FileType::Directory,
            0o120000 => FileType::Symlink,
            0o010000 => FileType::Fifo,
            0o140000 => FileType::Socket,
            0o020000 => FileType::CharDevice,
            0o060000 => FileType::BlockDevice,
            other => FileType::Unknown(other),
        }
    }

    /// `"regular file"`, `"directory"`, … (as `stat(1)` says).
    pub fn as_str(self) -> &'static str {
        match self {
            FileType::Regular => "regular file",
            FileType::Directory => "directory",
            FileType::Symlink => "symbolic link",
            FileType::Fifo => "fifo",
            FileType::Socket => "socket",
            FileType::CharDevice => "character special file",
            FileType::BlockDevice => "block special file",
            FileType::Unknown(_) => "unknown",
        }
    }
}

impl fmt::Display for FileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

bitflags::bitflags! {
    /// `STATX_ATTR_*`: file attribute bits.
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
    pub struct Attribute: u64 {
        /// `STATX_ATTR_COMPRESSED`: the filesystem compresses the file.
        const COMPRESSED = 0x0000_0004;
        /// `STATX_ATTR_IMMUTABLE`: the file cannot be modified (`chattr +i`).
        const IMMUTABLE = 0x0000_0010;
        /// `STATX_ATTR_APPEND`: the file can only be appended to.
        const APPEND = 0x0000_0020;
        /// `STATX_ATTR_NODUMP`: not a candidate for backup.
        const NODUMP = 0x0000_0040;
        /// `STATX_ATTR_ENCRYPTED`: encrypted by the filesystem.
        const ENCRYPTED = 0x0000_0800;
        /// `STATX_ATTR_AUTOMOUNT`: an automount trigger.
        const AUTOMOUNT = 0x0000_1000;
        /// `STATX_ATTR_MOUNT_ROOT`: the root of a mount (Linux 5.8+).
        const MOUNT_ROOT = 0x0000_2000;
        /// `STATX_ATTR_VERITY`: fs-verity protected (Linux 5.5+).
        const VERITY = 0x0010_0000;
        /// `STATX_ATTR_DAX`: in DAX mode (Linux 5.8+).
        const DAX = 0x0020_0000;
        /// `STATX_ATTR_WRITE_ATOMIC`: untorn writes are enabled (Linux 6.11+).
        const WRITE_ATOMIC = 0x0040_0000;
        /// <https://docs.rs/bitflags/*/bitflags/#externally-defined-flags>
        const _ = !0;
    }
}

const ATTRIBUTE_NAMES: &[(Attribute, &str)] = &[
    (Attribute::COMPRESSED, "compressed"),
    (Attribute::IMMUTABLE, "immutable"),
    (Attribute::APPEND, "append"),
    (Attribute::NODUMP, "nodump"),
    (Attribute::ENCRYPTED, "encrypted"),
    (Attribute::AUTOMOUNT, "automount"),
    (Attribute::MOUNT_ROOT, "mount_root"),
    (Attribute::VERITY, "verity"),
    (Attribute::DAX, "dax"),
    (Attribute::WRITE_ATOMIC, "write_atomic"),
];

impl Attribute {
    /// The names of the known bits set in `self` (`"immutable"`, …).
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        ATTRIBUTE_NAMES
            .iter()
            .filter(move |(a, _)| self.contains(*a))
            .map(|(_, n)| *n)
    }
}

/// `stx_attributes` together with `stx_attributes_mask`: which attributes
/// are set, and which ones this filesystem can report at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Attributes {
    /// The attributes set on the file.
    pub set: Attribute,
    /// The attributes the filesystem supports (`stx_attributes_mask`): an
    /// attribute outside it is unknown, not absent.
    pub supported: Attribute,
}

impl Attributes {
    /// `Some(true/false)` for a supported attribute, `None` for one this
    /// filesystem does not report.
    pub fn get(self, attr: Attribute) -> Option<bool> {
        self.supported
            .contains(attr)
            .then(|| self.set.contains(attr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(filled: Fields) -> Metadata {
        Metadata {
            requested: Fields::KNOWN,
            filled,
            raw_mask: filled.bits(),
            strategy: Strategy::Statx,
            sync: SyncMode::AsStat,
            fallback: None,
            attributes: None,
            raw: Raw {
                mode: 0o100644,
                size: 4096,
                mnt_id: 77,
                dio_mem_align: 4,
                dio_offset_align: 512,
                ..Raw::default()
            },
        }
    }

    #[test]
    fn only_filled_fields_are_returned() {
        let m = meta(Fields::TYPE | Fields::SIZE);
        assert_eq!(m.file_type(), Some(FileType::Regular));
        assert_eq!(m.size(), Some(4096));
        assert_eq!(
            m.mode(),
            None,
            "mode bits were in the raw struct but not in the mask"
        );
        assert_eq!(m.btime(), None);
        assert_eq!(m.dio_align(), None);
        assert_eq!(m.mount_id(), None);
        assert_eq!(m.missing(), Fields::KNOWN - (Fields::TYPE | Fields::SIZE));
    }

    #[test]
    fn a_unique_mount_id_answers_a_request_for_the_reusable_one() {
        let m = meta(Fields::MNT_ID_UNIQUE);
        assert!(!m.missing().contains(Fields::MNT_ID));
        assert!(
            !m.filled().contains(Fields::MNT_ID),
            "filled stays the kernel's mask"
        );
        assert!(meta(Fields::empty()).missing().contains(Fields::MNT_ID));
    }

    #[test]
    fn mount_id_kind_follows_the_mask() {
        assert_eq!(meta(Fields::MNT_ID).mount_id(), Some(MountId::Reusable(77)));
        let both = Fields::MNT_ID | Fields::MNT_ID_UNIQUE;
        assert_eq!(meta(both).mount_id(), Some(MountId::Unique(77)));
        assert_eq!(
            meta(Fields::MNT_ID_UNIQUE).mount_id().map(MountId::get),
            Some(77)
        );
    }

    #[test]
    fn dio_align_zero_means_unsupported() {
        let d = meta(Fields::DIOALIGN).dio_align().unwrap();
        assert!(d.supported());
        assert!(
            !DioAlign {
                mem_align: 0,
                offset_align: 0
            }
            .supported()
        );
    }

    #[test]
    fn attributes_outside_the_mask_are_unknown() {
        let a = Attributes {
            set: Attribute::IMMUTABLE,
            supported: Attribute::IMMUTABLE | Attribute::APPEND,
        };
        assert_eq!(a.get(Attribute::IMMUTABLE), Some(true));
        assert_eq!(a.get(Attribute::APPEND), Some(false));
        assert_eq!(a.get(Attribute::VERITY), None);
        assert_eq!(
            a.supported.names().collect::<Vec<_>>(),
            ["immutable", "append"]
        );
    }

    #[test]
    fn timestamps_convert_and_display() {
        let t = Timestamp { sec: 1, nsec: 5 };
        assert_eq!(t.to_string(), "1.000000005");
        assert_eq!(
            t.to_system_time().unwrap(),
            SystemTime::UNIX_EPOCH + Duration::new(1, 5)
        );
        let before = Timestamp {
            sec: -2,
            nsec: 500_000_000,
        };
        assert_eq!(
            before.to_system_time().unwrap(),
            SystemTime::UNIX_EPOCH - Duration::from_millis(1500)
        );
    }

    #[test]
    fn file_types_from_mode() {
        assert_eq!(FileType::from_mode(0o040755), FileType::Directory);
        assert_eq!(FileType::from_mode(0o060600).as_str(), "block special file");
        assert_eq!(FileType::from_mode(0o000644), FileType::Unknown(0));
    }
}
