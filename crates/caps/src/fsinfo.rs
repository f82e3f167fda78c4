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
fn unescape(field: &str) -> String {
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

/// The memo key of the filesystem `path` is on: the unique mount id where
/// the kernel has one, else the reusable one, plus the device.
pub(crate) fn memo_key(path: &Path) -> Result<(u64, u64), CapsError> {
    let meta = ProbeOptions::new()
        .fields(Fields::INO | Fields::MNT_ID_UNIQUE | Fields::MNT_ID)
        .probe_path(path)
        .map_err(|e| CapsError::Inspect {
            path: path.to_owned(),
            op: "statx",
            errno: e.errno().unwrap_or(rustix::io::Errno::IO),
        })?;
    let dev = meta.dev();
    let dev = u64::from(dev.major) << 32 | u64::from(dev.minor);
    Ok((meta.mount_id().map(|m| m.get()).unwrap_or(u64::MAX), dev))
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
