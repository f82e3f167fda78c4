//! Shared helpers for the hermetic tests (tempfiles on /tmp, no root).
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

/// Whether the filesystem of `dir` can reflink: decided by its type, so
/// each test asserts the right outcome on ext4/tmpfs (the project's /tmp)
/// and on a developer's xfs/btrfs /tmp alike.
pub(crate) fn reflink_capable(dir: &Path) -> bool {
    let f = File::open(dir).unwrap();
    let fs = sparsekit_clone::FsType::of(&f).unwrap();
    match fs.name() {
        Some("xfs" | "btrfs" | "bcachefs" | "zfs") => true,
        Some("ext4" | "tmpfs" | "f2fs" | "vfat") => false,
        other => panic!("unexpected filesystem for tests: {other:?} ({fs})"),
    }
}

/// A file of `len` bytes of `byte`, closed.
pub(crate) fn write_file(path: &Path, byte: u8, len: usize) {
    let mut f = File::create(path).unwrap();
    f.write_all(&vec![byte; len]).unwrap();
}

pub(crate) fn open_rw(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap()
}
