//! Sources whose size does not describe their content (issue 11): procfs
//! files say 0 bytes and return text, sysfs attributes say 4096 and return
//! a line. They are copied by reading to the end, staged and synced like
//! any copy, and reported as [`Strategy::Stream`].

mod common;

use common::others_in;
use sparsekit_copy::{
    CopyError, CopyOptions, DataStrategy, DestinationKind, Interrupt, ReflinkMode, Staging,
    Strategy,
};
use std::path::{Path, PathBuf};

fn copy_and_read(src: &Path, opts: CopyOptions) -> (Vec<u8>, sparsekit_copy::CopyReport) {
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("copy");
    let report = opts
        .copy(src, &dst)
        .unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    assert_eq!(others_in(dir.path(), &[&dst]), Vec::<PathBuf>::new());
    (std::fs::read(&dst).unwrap(), report)
}

/// Regression (issue 11): `copy /proc/self/status X` wrote an empty X and
/// succeeded, because st_size says 0.
#[test]
fn a_procfs_file_is_copied_by_reading_it() {
    let src = Path::new("/proc/self/status");
    assert_eq!(std::fs::metadata(src).unwrap().len(), 0);
    let (got, report) = copy_and_read(src, CopyOptions::new());
    assert_eq!(report.strategy, Strategy::Stream, "{report:?}");
    assert!(report.synced);
    assert_eq!(report.size, got.len() as u64);
    assert_eq!(report.bytes_copied, got.len() as u64);
    // Some of it changes from read to read (memory, threads); the lines
    // that name the process do not.
    let text = String::from_utf8(got).unwrap();
    let plain = std::fs::read_to_string(src).unwrap();
    for key in ["Name:", "Pid:", "Uid:", "Gid:"] {
        let line = |t: &str| t.lines().find(|l| l.starts_with(key)).map(str::to_owned);
        assert!(line(&text).is_some(), "{key} missing from {text}");
        assert_eq!(line(&text), line(&plain), "{key}");
    }
}

#[test]
fn stable_procfs_files_equal_a_plain_read() {
    for src in ["/proc/version", "/proc/self/cmdline"] {
        let src = Path::new(src);
        let (got, report) = copy_and_read(src, CopyOptions::new());
        assert_eq!(got, std::fs::read(src).unwrap(), "{}", src.display());
        assert!(!got.is_empty());
        assert_eq!(report.strategy, Strategy::Stream);
    }
}

/// sysfs attributes claim 4096 bytes and return fewer: the extent path
/// would have failed ("source changed") or padded with zeros.
#[test]
fn a_sysfs_attribute_equals_a_plain_read() {
    let src = Path::new("/sys/devices/system/cpu/online");
    let Ok(plain) = std::fs::read(src) else {
        eprintln!("skipped: {} is not readable here (no sysfs)", src.display());
        return;
    };
    let (got, report) = copy_and_read(src, CopyOptions::new());
    assert_eq!(got, plain);
    assert_eq!(report.strategy, Strategy::Stream);
    assert_eq!(report.destination, DestinationKind::NewFile);
}

/// A regular file of size 0 that returns bytes (as a FUSE or network
/// filesystem may serve) is recognised by the read, not the filesystem:
/// here an ordinary empty file stays an ordinary (empty) copy.
#[test]
fn an_empty_regular_file_is_not_streamed() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("empty");
    std::fs::write(&src, b"").unwrap();
    let (got, report) = copy_and_read(&src, CopyOptions::new().reflink(ReflinkMode::Never));
    assert!(got.is_empty());
    assert_ne!(report.strategy, Strategy::Stream);
}

#[test]
fn a_procfs_file_replaces_an_existing_destination_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("old");
    std::fs::write(&dst, vec![b'x'; 1 << 20]).unwrap();
    let src = Path::new("/proc/version");
    let report = CopyOptions::new()
        .staging(Staging::InPlace)
        .copy(src, &dst)
        .unwrap();
    assert_eq!(report.strategy, Strategy::Stream);
    assert_eq!(std::fs::read(&dst).unwrap(), std::fs::read(src).unwrap());
}

#[test]
fn options_that_cannot_apply_to_a_procfs_file_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("copy");
    let src = Path::new("/proc/version");
    let e = CopyOptions::new()
        .reflink(ReflinkMode::Always)
        .copy(src, &dst)
        .unwrap_err();
    assert!(matches!(e, CopyError::ReflinkUnsupported { .. }), "{e:?}");
    let e = CopyOptions::new()
        .data_strategy(DataStrategy::CopyFileRange)
        .copy(src, &dst)
        .unwrap_err();
    assert!(matches!(e, CopyError::StrategyUnsupported { .. }), "{e:?}");
    assert!(!dst.exists());
    assert_eq!(others_in(dir.path(), &[]), Vec::<PathBuf>::new());
}

#[test]
fn an_interrupted_stream_leaves_no_destination() {
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("copy");
    let stop = Interrupt::new();
    stop.trigger();
    let e = CopyOptions::new()
        .interrupt(stop)
        .copy("/proc/version", &dst)
        .unwrap_err();
    assert!(matches!(e, CopyError::Interrupted { .. }), "{e:?}");
    assert!(!dst.exists());
    assert_eq!(others_in(dir.path(), &[]), Vec::<PathBuf>::new());
}
