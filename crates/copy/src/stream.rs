//! Sources whose size does not describe their content — procfs says 0
//! bytes and returns text, sysfs says 4096 and returns a line — copied by
//! reading until end of file ([`Strategy::Stream`](crate::Strategy::Stream)).
//!
//! Neither the extent map (it maps `st_size` bytes) nor `copy_file_range`
//! (it returns 0 at offset 0 there) can copy them; `cp` reads them. The
//! destination is still staged, fsynced and renamed like any other.

use crate::buffer::Buffer;
use crate::error::CopyError;
use crate::interrupt::Interrupt;
use rustix::fd::BorrowedFd;
use rustix::fs::{FileType, Stat};
use rustix::io::{Errno, pread, pwrite};
use sparsekit_sys::fstype::FsType;
use std::path::Path;

/// Why a source is streamed, for the rule's tests and messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reason {
    /// A filesystem whose files are generated on read (`proc`, `sysfs`, …).
    PseudoFilesystem(&'static str),
    /// `st_size` is 0 but a read returned bytes.
    EmptyButReadable,
}

/// Filesystems whose regular files are generated when read, so `st_size`
/// (0, or a page) says nothing about the content: `statfs` magics from
/// `include/uapi/linux/magic.h`.
const PSEUDO: &[(u64, &str)] = &[
    (0x9FA0, "proc"),
    (0x6265_6572, "sysfs"),
    (0x6462_6720, "debugfs"),
    (0x7472_6163, "tracefs"),
    (0x6265_6570, "configfs"),
    (0x7363_6673, "securityfs"),
    (0x0027_e0eb, "cgroup"),
    (0x6367_7270, "cgroup2"),
    (0xCAFE_4A11, "bpf"),
    (0x6165_676C, "pstore"),
    (0x6573_5543, "fusectl"),
    (0x4249_4E4D, "binfmt_misc"),
    (0xF97C_FF8C, "selinuxfs"),
    (0x4341_5D53, "smackfs"),
    (0x5a3c_69f0, "apparmorfs"),
];

/// The rule, pure: a regular file on a pseudo filesystem, or one whose
/// size is 0 although a read returns something (`reads_bytes` is only
/// asked then, so an ordinary file costs one `fstatfs`). Block devices
/// have a real size.
pub(crate) fn reason(
    file_type: FileType,
    fs_magic: Option<u64>,
    st_size: i64,
    reads_bytes: impl FnOnce() -> bool,
) -> Option<Reason> {
    if file_type != FileType::RegularFile {
        return None;
    }
    if let Some(&(_, name)) = fs_magic.and_then(|m| PSEUDO.iter().find(|(p, _)| *p == m)) {
        return Some(Reason::PseudoFilesystem(name));
    }
    (st_size == 0 && reads_bytes()).then_some(Reason::EmptyButReadable)
}

/// Whether `fd` (with `st` its fstat) must be streamed.
// The stat field types differ between targets; the cast is a no-op on some.
#[allow(clippy::unnecessary_cast)]
pub(crate) fn needed(fd: BorrowedFd<'_>, st: &Stat) -> Option<Reason> {
    let magic = FsType::of(fd).ok().map(|t| t.0);
    reason(
        FileType::from_raw_mode(st.st_mode),
        magic,
        st.st_size as i64,
        || {
            let mut byte = [0u8; 1];
            matches!(pread(fd, &mut byte, 0), Ok(1))
        },
    )
}

/// Reads `src` from offset 0 until a read returns 0, writing each chunk to
/// `dst` at the same offset; returns the bytes copied. The interrupt is
/// checked between chunks.
pub(crate) fn copy(
    src: BorrowedFd<'_>,
    src_path: &Path,
    dst: BorrowedFd<'_>,
    dst_path: &Path,
    buf_size: usize,
    interrupt: Option<&Interrupt>,
) -> Result<u64, CopyError> {
    let mut buf = Buffer::new(buf_size);
    let mut pos = 0u64;
    loop {
        if interrupt.is_some_and(Interrupt::is_triggered) {
            return Err(CopyError::Interrupted {
                path: src_path.to_owned(),
            });
        }
        let n = match pread(src, buf.as_mut_slice(), pos) {
            Ok(0) => return Ok(pos),
            Ok(n) => n,
            Err(Errno::INTR) => continue,
            Err(errno) => {
                return Err(CopyError::Io {
                    path: src_path.to_owned(),
                    op: "pread",
                    offset: Some(pos),
                    errno,
                });
            }
        };
        let mut done = 0;
        while done < n {
            match pwrite(dst, &buf.as_slice()[done..n], pos + done as u64) {
                Ok(0) => return Err(write_err(dst_path, pos + done as u64, Errno::NOSPC)),
                Ok(w) => done += w,
                Err(Errno::INTR) => {}
                Err(errno) => return Err(write_err(dst_path, pos + done as u64, errno)),
            }
        }
        pos += n as u64;
    }
}

fn write_err(path: &Path, at: u64, errno: Errno) -> CopyError {
    CopyError::Io {
        path: path.to_owned(),
        op: "pwrite",
        offset: Some(at),
        errno,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXT4: Option<u64> = Some(0xEF53);

    #[test]
    fn pseudo_filesystems_are_streamed_whatever_the_size() {
        for (magic, name) in [(0x9FA0, "proc"), (0x6265_6572, "sysfs")] {
            for size in [0, 4096] {
                assert_eq!(
                    reason(FileType::RegularFile, Some(magic), size, || false),
                    Some(Reason::PseudoFilesystem(name))
                );
            }
        }
    }

    #[test]
    fn an_empty_file_is_streamed_only_when_a_read_returns_bytes() {
        assert_eq!(
            reason(FileType::RegularFile, EXT4, 0, || true),
            Some(Reason::EmptyButReadable)
        );
        assert_eq!(reason(FileType::RegularFile, EXT4, 0, || false), None);
        assert_eq!(
            reason(FileType::RegularFile, None, 0, || true),
            Some(Reason::EmptyButReadable)
        );
    }

    #[test]
    fn ordinary_files_and_devices_cost_no_read() {
        let never = || panic!("no read expected");
        assert_eq!(reason(FileType::RegularFile, EXT4, 10, never), None);
        assert_eq!(reason(FileType::BlockDevice, Some(0x9FA0), 0, never), None);
    }
}
