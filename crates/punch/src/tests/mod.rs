//! Unit tests with real files: on the temporary directory (ext4 on the
//! project machines) for the native strategies, on `memfd` (tmpfs) for the
//! fallbacks `Auto` takes there, and with injected faults (`file::faults`)
//! for the errors only a full disk or a dying device would give mid-way.

mod dig;
mod errors;
mod lease;
mod punch;
mod resume;
mod shift;

use rustix::fs::{MemfdFlags, memfd_create};
use sparsekit_extents::{ExtentKind, MapOptions, Method};
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::{FileExt, MetadataExt};

pub(crate) const B: u64 = 4096;

/// An empty file on the temporary directory.
pub(crate) fn tmp() -> File {
    tempfile::tempfile_in(std::env::temp_dir()).expect("temp file")
}

/// An empty tmpfs file that accepts seals.
pub(crate) fn memfd() -> File {
    File::from(
        memfd_create(
            "sparsekit-punch-test",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )
        .expect("memfd_create"),
    )
}

/// Non-zero bytes that differ from block to block.
pub(crate) fn pattern(offset: u64, len: u64) -> Vec<u8> {
    (offset..offset + len)
        .map(|i| ((i / 7) as u8).wrapping_mul(13) | 1)
        .collect()
}

pub(crate) fn write_pattern(f: &File, range: Range<u64>) {
    f.write_all_at(&pattern(range.start, range.end - range.start), range.start)
        .expect("pwrite");
}

pub(crate) fn contents(f: &File) -> Vec<u8> {
    let mut buf = vec![0; f.metadata().unwrap().len() as usize];
    f.read_exact_at(&mut buf, 0).expect("read back");
    buf
}

pub(crate) fn allocated(f: &File) -> u64 {
    f.metadata().unwrap().blocks() * 512
}

/// The hole extents SEEK_DATA/SEEK_HOLE reports.
pub(crate) fn holes(f: &File) -> Vec<Range<u64>> {
    MapOptions::new()
        .method(Method::Seek)
        .map(f)
        .expect("map")
        .map(|e| e.expect("extent"))
        .filter(|e| e.kind != ExtentKind::Data)
        .map(|e| e.range())
        .collect()
}

/// Whether `range` lies inside one of the holes.
pub(crate) fn is_hole(f: &File, range: Range<u64>) -> bool {
    holes(f)
        .iter()
        .any(|h| h.start <= range.start && range.end <= h.end)
}

/// Turns fault injection off at the end of a test, pass or fail.
pub(crate) fn faults() -> crate::file::faults::Reset {
    crate::file::faults::Reset
}
