//! Identifying the filesystem: `fstatfs`, `statx`, `/proc/self/mountinfo`,
//! `uname`.

use crate::error::CapsError;
use crate::report::FsInfo;
use crate::scratch::{Scratch, ScratchDir};
use rustix::fd::AsFd;
use sparsekit_probe::{Fields, MountId, ProbeOptions};
use sparsekit_sys::fstype::FsType;
use std::path::Path;

/// One line of `/proc/self/mountinfo` (see `proc_pid_mountinfo(5)`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MountEntry {
    pub(crate) mount_id: u64,
    pub(crate) device: String,
    pub(crate) mount_point: String,
    pub(crate) mount_options: String,
    pub(crate) fs_type: String,
    pub(crate) source: String,
    pub(crate) super_options: String,
}

/// Parses one mountinfo line:
/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`.
pub(crate) fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    let (left, right) = line.split_once(" - ")?;
    let mut l = left.split(' ');
    let mount_id = l.next()?.parse().ok()?;
    let _parent = l.next()?;
    let device = l.next()?.to_owned();
    let _root = l.next()?;
    let mount_point = unescape(l.next()?);
    let mount_options = l.next()?.to_owned();
    let mut r = right.split(' ');
    let fs_type = r.next()?.to_owned();
    let source = unescape(r.next()?);
    let super_options = r.next().unwrap_or("").to_owned();
    Some(MountEntry {
        mount_id,
        device,
        mount_point,
        mount_options,
        fs_type,
        source,
        super_options,
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`,
/// `\134`).
pub(crate) fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Finds the mount of a directory: by mount id when statx gave one,
/// otherwise the entry with the directory's device whose mount point is
/// the longest prefix of its canonical path.
pub(crate) fn find_mount(
    mountinfo: &str,
    mount_id: Option<u64>,
    device: &str,
    canonical: &Path,
) -> Option<MountEntry> {
    let entries = mountinfo.lines().filter_map(parse_mountinfo_line);
    if let Some(id) = mount_id {
        if let Some(e) = mountinfo
            .lines()
            .filter_map(parse_mountinfo_line)
            .find(|e| e.mount_id == id)
        {
            return Some(e);
        }
    }
    entries
        .filter(|e| e.device == device && canonical.starts_with(&e.mount_point))
        .max_by_key(|e| e.mount_point.len())
}

/// Identifies the filesystem of `dir` (with a scratch file for the
/// per-file DIO alignment).
pub(crate) fn identify(dir: &ScratchDir, scratch: &Scratch) -> Result<FsInfo, CapsError> {
    let path = &dir.path;
    let inspect = |op, errno| CapsError::Inspect {
        path: path.clone(),
        op,
        errno,
    };
    let fs = rustix::fs::fstatfs(&dir.dir).map_err(|e| inspect("fstatfs", e))?;
    let fs_type = FsType(fs.f_type as u64 & 0xffff_ffff);
    let st = rustix::fs::fstat(&dir.dir).map_err(|e| inspect("fstat", e))?;
    let device = format!(
        "{}:{}",
        rustix::fs::major(st.st_dev),
        rustix::fs::minor(st.st_dev)
    );
    // The reusable id matches mountinfo; the unique one (6.8+) keys the memo.
    let reusable = mount_id(dir, Fields::MNT_ID);
    let unique = mount_id(dir, Fields::MNT_ID_UNIQUE);
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
    let mount = std::fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|text| find_mount(&text, reusable, &device, &canonical));
    let dio = ProbeOptions::new()
        .fields(Fields::DIOALIGN | Fields::DIO_READ_ALIGN)
        .probe_fd(scratch.as_fd())
        .ok();
    let dio_align = dio.as_ref().and_then(|m| m.dio_align());
    Ok(FsInfo {
        fs_type: fs_type
            .name()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{:#x}", fs_type.0)),
        magic: format!("{:#x}", fs_type.0),
        mount_fs_type: mount.as_ref().map(|m| m.fs_type.clone()),
        block_size: fs.f_bsize as u64,
        directory: path.display().to_string(),
        mount_point: mount.as_ref().map(|m| m.mount_point.clone()),
        mount_source: mount.as_ref().map(|m| m.source.clone()),
        mount_options: mount.as_ref().map(|m| m.mount_options.clone()),
        super_options: mount.as_ref().map(|m| m.super_options.clone()),
        device,
        mount_id: unique.or(reusable).or(mount.as_ref().map(|m| m.mount_id)),
        dio_mem_align: dio_align.filter(|d| d.supported()).map(|d| d.mem_align),
        dio_offset_align: dio_align.filter(|d| d.supported()).map(|d| d.offset_align),
        dio_read_offset_align: dio.as_ref().and_then(|m| m.dio_read_offset_align()),
        kernel_release: kernel_release(),
        scratch: dir.kind.as_str().to_owned(),
        cross_fs_peer: None,
    })
}

fn mount_id(dir: &ScratchDir, field: Fields) -> Option<u64> {
    let meta = ProbeOptions::new().fields(field).probe_fd(&dir.dir).ok()?;
    match meta.mount_id()? {
        MountId::Unique(id) if field == Fields::MNT_ID_UNIQUE => Some(id),
        MountId::Reusable(id) if field == Fields::MNT_ID => Some(id),
        _ => None,
    }
}

/// `uname -r`.
pub(crate) fn kernel_release() -> String {
    rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned()
}

/// What tells the mount a directory is on apart from every other mount,
/// as observed (see [`memo_key`] for how it is trusted).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct MountObservation {
    /// `STATX_MNT_ID_UNIQUE` (Linux 6.8+): never reused while the system runs.
    pub(crate) unique_mount_id: Option<u64>,
    /// `STATX_MNT_ID`: reused once the mount is gone.
    pub(crate) mount_id: Option<u64>,
    /// `st_dev`, as `major << 32 | minor`.
    pub(crate) device: u64,
    /// `fstatfs` `f_type`.
    pub(crate) magic: u64,
    /// `fstatvfs` `f_fsid` (for xfs it is the device number, so it does not
    /// change across `mkfs`; for ext4 and btrfs it comes from the UUID).
    pub(crate) fsid: u64,
    /// The mountinfo line with exactly `mount_id`.
    pub(crate) mount: Option<MountEntry>,
}

/// The memo key of one mount (see [`memo_key`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum MemoKey {
    /// A unique mount id names one mount for the life of the system.
    Unique { mount_id: u64, device: u64 },
    /// Without one (before Linux 6.8): everything observed about the mount,
    /// so that a reused mount id on a reused device with another
    /// filesystem on it, or a remount with other options, is a different
    /// key. The same type made again on the same device can still look
    /// the same (xfs' fsid is the device; `reflink=0` is not an option):
    /// the memo drops such entries when the filesystem is unmounted (an
    /// inotify `IN_UNMOUNT`), see `memo.rs`.
    Fingerprint {
        mount_id: u64,
        device: u64,
        magic: u64,
        fsid: u64,
        fs_type: String,
        source: String,
        mount_point: String,
        mount_options: String,
        super_options: String,
    },
}

impl MemoKey {
    /// The (reusable) mount id and device of a fingerprint: two fingerprints
    /// sharing them cannot both be mounted now, so the older one is stale.
    pub(crate) fn reused_slot(&self) -> Option<(u64, u64)> {
        match self {
            MemoKey::Unique { .. } => None,
            MemoKey::Fingerprint {
                mount_id, device, ..
            } => Some((*mount_id, *device)),
        }
    }
}

/// Decides whether a report may be memoized for this mount, and under
/// which key.
///
/// A unique mount id (Linux 6.8+) is trusted alone. A reusable one is not:
/// once a filesystem is unmounted its id goes to the next mount, and a loop
/// device is reused too, so (mount id, device) can name an ext4 now and an
/// xfs a second later. Then the key is the whole fingerprint (fs magic,
/// fsid, the mountinfo line of that mount id) and is only
/// [`Fingerprint`](MemoKey::Fingerprint): valid while the memo sees no
/// unmount. Without the mountinfo line, `None`: no memoization, every call
/// probes (slower, never wrong).
pub(crate) fn memo_key(obs: &MountObservation) -> Option<MemoKey> {
    if let Some(mount_id) = obs.unique_mount_id {
        return Some(MemoKey::Unique {
            mount_id,
            device: obs.device,
        });
    }
    let mount_id = obs.mount_id?;
    let mount = obs.mount.as_ref().filter(|m| m.mount_id == mount_id)?;
    Some(MemoKey::Fingerprint {
        mount_id,
        device: obs.device,
        magic: obs.magic,
        fsid: obs.fsid,
        fs_type: mount.fs_type.clone(),
        source: mount.source.clone(),
        mount_point: mount.mount_point.clone(),
        mount_options: mount.mount_options.clone(),
        super_options: mount.super_options.clone(),
    })
}

/// Observes the mount of the directory `dir` for [`memo_key`]: one `statx`
/// where the kernel has a unique mount id (and `trust_unique`), else also
/// `fstatfs`, `fstatvfs` and `/proc/self/mountinfo`. `trust_unique` is false only in tests, to force the path of
/// kernels before 6.8.
pub(crate) fn observe_mount(dir: &Path, trust_unique: bool) -> Result<MountObservation, CapsError> {
    use rustix::fs::{Mode, OFlags};
    let inspect = |op, errno| CapsError::Inspect {
        path: dir.to_owned(),
        op,
        errno,
    };
    // Every call goes through one descriptor, so all of them see the same
    // directory even if something is mounted over the path meanwhile.
    let fd = rustix::fs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| inspect("open", e))?;
    let statx_err = |e: sparsekit_probe::ProbeError| {
        inspect("statx", e.errno().unwrap_or(rustix::io::Errno::IO))
    };
    let fields = if trust_unique {
        Fields::INO | Fields::MNT_ID_UNIQUE | Fields::MNT_ID
    } else {
        Fields::INO | Fields::MNT_ID
    };
    let meta = ProbeOptions::new()
        .fields(fields)
        .probe_fd(&fd)
        .map_err(statx_err)?;
    let dev = meta.dev();
    let mut obs = MountObservation {
        device: u64::from(dev.major) << 32 | u64::from(dev.minor),
        ..MountObservation::default()
    };
    match meta.mount_id() {
        Some(MountId::Unique(id)) => {
            obs.unique_mount_id = Some(id);
            return Ok(obs);
        }
        Some(MountId::Reusable(id)) => obs.mount_id = Some(id),
        None => return Ok(obs),
    }
    let fs = rustix::fs::fstatfs(&fd).map_err(|e| inspect("fstatfs", e))?;
    obs.magic = fs.f_type as u64 & 0xffff_ffff;
    obs.fsid = rustix::fs::fstatvfs(&fd)
        .map_err(|e| inspect("fstatvfs", e))?
        .f_fsid;
    obs.mount = std::fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .filter_map(parse_mountinfo_line)
                .find(|e| Some(e.mount_id) == obs.mount_id)
        });
    Ok(obs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw,errors=remount-ro
28 22 0:26 / /dev/shm rw,nosuid,nodev shared:4 - tmpfs tmpfs rw,inode64
95 22 7:3 / /mnt/with\\040space rw,relatime shared:50 - xfs /dev/loop3 rw,attr2,inode64,logbufs=8
96 22 7:4 /sub /mnt/bind rw,relatime - btrfs /dev/loop4 rw,space_cache=v2,subvolid=5,subvol=/
";

    #[test]
    fn parses_lines_with_and_without_optional_fields() {
        let e = parse_mountinfo_line(SAMPLE.lines().nth(2).unwrap()).unwrap();
        assert_eq!(e.mount_id, 95);
        assert_eq!(e.device, "7:3");
        assert_eq!(e.mount_point, "/mnt/with space");
        assert_eq!(e.fs_type, "xfs");
        assert_eq!(e.source, "/dev/loop3");
        assert_eq!(e.mount_options, "rw,relatime");
        assert_eq!(e.super_options, "rw,attr2,inode64,logbufs=8");
        let e = parse_mountinfo_line(SAMPLE.lines().nth(3).unwrap()).unwrap();
        assert_eq!(e.fs_type, "btrfs");
        assert_eq!(e.mount_point, "/mnt/bind");
        assert_eq!(parse_mountinfo_line("garbage"), None);
    }

    #[test]
    fn finds_the_mount_by_id_or_by_longest_prefix() {
        let by_id = find_mount(SAMPLE, Some(28), "0:0", Path::new("/")).unwrap();
        assert_eq!(by_id.mount_point, "/dev/shm");
        let by_prefix = find_mount(SAMPLE, None, "259:2", Path::new("/home/me")).unwrap();
        assert_eq!(by_prefix.mount_point, "/");
        let spaced = find_mount(SAMPLE, Some(999), "7:3", Path::new("/mnt/with space/d")).unwrap();
        assert_eq!(spaced.mount_id, 95);
        assert_eq!(find_mount(SAMPLE, None, "1:1", Path::new("/x")), None);
    }

    /// The loop device of the bench on Linux 6.1, mounted as `fs`: the
    /// same device and the same (reused) mount id every time.
    fn loop_mount(fs: &str, magic: u64, fsid: u64, options: &str) -> MountObservation {
        MountObservation {
            unique_mount_id: None,
            mount_id: Some(120),
            device: 7 << 32 | 3,
            magic,
            fsid,
            mount: parse_mountinfo_line(&format!(
                "120 22 7:3 / /mnt/bench rw,relatime - {fs} /dev/loop3 {options}"
            )),
        }
    }

    #[test]
    fn a_reused_mount_id_and_device_with_another_filesystem_is_another_key() {
        const XFS: u64 = 0x5846_5342;
        const EXT4: u64 = 0xef53;
        let ext4 = loop_mount("ext4", EXT4, 0x1234_5678, "rw");
        let xfs = loop_mount("xfs", XFS, 7 << 8 | 3, "rw,attr2,inode64");
        let (k_ext4, k_xfs) = (memo_key(&ext4).unwrap(), memo_key(&xfs).unwrap());
        assert_ne!(k_ext4, k_xfs);
        // Both name the same slot: the newer one replaces the older.
        assert_eq!(k_ext4.reused_slot(), Some((120, 7 << 32 | 3)));
        assert_eq!(k_ext4.reused_slot(), k_xfs.reused_slot());
        // The type alone differs too, and the options alone (a remount).
        let mut as_ext4 = xfs.clone();
        as_ext4.mount.as_mut().unwrap().fs_type = "ext4".into();
        assert_ne!(memo_key(&as_ext4).unwrap(), k_xfs);
        let remount = loop_mount("xfs", XFS, 7 << 8 | 3, "ro,attr2,inode64");
        assert_ne!(memo_key(&remount).unwrap(), k_xfs);
        // The same mount observed twice is the same key.
        assert_eq!(memo_key(&xfs.clone()).unwrap(), k_xfs);
    }

    #[test]
    fn without_a_unique_id_an_incomplete_fingerprint_is_not_memoized() {
        let full = loop_mount("xfs", 0x5846_5342, 1, "rw");
        assert!(memo_key(&full).is_some());
        let no_line = MountObservation {
            mount: None,
            ..full.clone()
        };
        assert_eq!(memo_key(&no_line), None);
        // A mountinfo line of another mount id is not this mount's.
        let other_line = MountObservation {
            mount_id: Some(121),
            ..full.clone()
        };
        assert_eq!(memo_key(&other_line), None);
        let no_id = MountObservation {
            mount_id: None,
            ..full
        };
        assert_eq!(memo_key(&no_id), None);
    }

    #[test]
    fn a_unique_mount_id_alone_is_the_key() {
        let mut a = loop_mount("ext4", 0xef53, 1, "rw");
        a.unique_mount_id = Some(0x1_0000_0042);
        let b = MountObservation {
            mount: None,
            magic: 0,
            ..a.clone()
        };
        let key = MemoKey::Unique {
            mount_id: 0x1_0000_0042,
            device: 7 << 32 | 3,
        };
        assert_eq!(memo_key(&a), Some(key.clone()));
        assert_eq!(memo_key(&b), Some(key.clone()));
        assert_eq!(key.reused_slot(), None);
        a.unique_mount_id = Some(0x1_0000_0043);
        assert_ne!(memo_key(&a), Some(key));
    }

    #[test]
    fn observes_a_temporary_directory_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let fast = observe_mount(dir.path(), true).unwrap();
        if fast.unique_mount_id.is_some() {
            // One statx is all the fast path costs.
            assert_eq!(fast.mount, None);
        }
        let old = observe_mount(dir.path(), false).unwrap();
        assert_eq!(old.unique_mount_id, None);
        let expected = FsType::of(std::fs::File::open(dir.path()).unwrap()).unwrap();
        assert_eq!(old.magic, expected.0);
        assert_eq!(old.mount.as_ref().map(|m| m.mount_id), old.mount_id);
        assert_eq!(old.device, fast.device);
        let err = observe_mount(&dir.path().join("missing"), false).unwrap_err();
        assert_eq!(err.errno(), Some(rustix::io::Errno::NOENT));
        assert!(err.to_string().contains("missing: open: ENOENT"), "{err}");
    }

    #[test]
    fn identifies_a_temporary_directory() {
        let dir = tempfile::tempdir().unwrap();
        let scratch_dir = ScratchDir::open(dir.path(), false).unwrap();
        let scratch = scratch_dir.file().unwrap();
        let info = identify(&scratch_dir, &scratch).unwrap();
        let expected = FsType::of(std::fs::File::open(dir.path()).unwrap()).unwrap();
        assert_eq!(info.magic, format!("{:#x}", expected.0));
        assert!(info.block_size >= 512);
        assert!(info.mount_point.is_some(), "{info:?}");
        assert!(!info.kernel_release.is_empty());
        assert_eq!(info.directory, dir.path().display().to_string());
    }
}
