//! Copies of files of the largest possible size (`i64::MAX` bytes) with a
//! few bytes of data (issue 11): every byte arrives, the copy costs what
//! its data costs, and an interrupt stops it.
//!
//! ext4 (the usual `$TMPDIR`) refuses such a size with EFBIG; the files
//! then live on tmpfs in /dev/shm, whose SEEK_DATA misbehaves in the last
//! page below 2^63 — the case the extent map must not trust.

mod common;

use common::others_in;
use sparsekit_copy::{
    CachePolicy, CopyError, CopyOptions, DataStrategy, Interrupt, ReflinkMode, SparseMode,
};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const HUGE: u64 = i64::MAX as u64;

/// A directory whose filesystem takes a file of [`HUGE`] bytes: `$TMPDIR`,
/// else /dev/shm. `None` (the test skips, saying why) only when both
/// refuse it with EFBIG.
fn huge_dir() -> Option<tempfile::TempDir> {
    for parent in [std::env::temp_dir(), PathBuf::from("/dev/shm")] {
        let Ok(dir) = tempfile::tempdir_in(&parent) else {
            continue;
        };
        let probe = File::create(dir.path().join("probe")).unwrap();
        match probe.set_len(HUGE) {
            Ok(()) => {
                std::fs::remove_file(dir.path().join("probe")).unwrap();
                return Some(dir);
            }
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::FBIG.raw_os_error()) => {}
            Err(e) => panic!("set_len({HUGE}) in {}: {e}", parent.display()),
        }
    }
    eprintln!("skipped: no filesystem here takes a file of {HUGE} bytes (EFBIG)");
    None
}

/// A file of [`HUGE`] bytes holding `data` at each offset, nothing else.
fn huge_source(dir: &Path, data: &[(u64, &[u8])]) -> PathBuf {
    let path = dir.join("src");
    let f = File::create(&path).unwrap();
    f.set_len(HUGE).unwrap();
    for &(off, bytes) in data {
        f.write_all_at(bytes, off).unwrap();
    }
    path
}

fn read_at(path: &Path, off: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0xee; len];
    File::open(path)
        .unwrap()
        .read_exact_at(&mut buf, off)
        .unwrap();
    buf
}

/// Options that reach every loop the copy has: the read/write pipeline
/// and copy_file_range, each cache policy that snapshots residency.
fn variants() -> Vec<(&'static str, CopyOptions)> {
    let base = || CopyOptions::new().reflink(ReflinkMode::Never);
    vec![
        ("auto", base()),
        ("drop", base().cache(CachePolicy::Drop)),
        ("keep", base().cache(CachePolicy::Keep)),
        (
            "dontcache-or-direct",
            base().cache(CachePolicy::Auto).readers(1),
        ),
        (
            "copy_file_range",
            CopyOptions::new()
                .data_strategy(DataStrategy::CopyFileRange)
                .cache(CachePolicy::Drop),
        ),
    ]
}

fn copies_every_byte_quickly(data: &[(u64, &[u8])]) {
    let Some(dir) = huge_dir() else { return };
    let src = huge_source(dir.path(), data);
    for (name, opts) in variants() {
        let dst = dir.path().join(format!("dst-{name}"));
        let started = Instant::now();
        let report = opts
            .copy(&src, &dst)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let took = started.elapsed();
        // Seconds, not the years a walk over 2^63 bytes would take; generous
        // for a debug build on a loaded machine.
        assert!(took < Duration::from_secs(30), "{name}: took {took:?}");
        assert_eq!(std::fs::metadata(&dst).unwrap().len(), HUGE, "{name}");
        for &(off, bytes) in data {
            assert_eq!(read_at(&dst, off, bytes.len()), bytes, "{name} at {off}");
        }
        // The bytes next to the data read as zeros, as in the source.
        assert_eq!(read_at(&dst, HUGE - 4096, 8), vec![0; 8], "{name}");
        assert!(
            std::fs::metadata(&dst).unwrap().blocks() * 512 <= 16 << 20,
            "{name}: the holes were filled"
        );
        let data_len: u64 = data.iter().map(|d| d.1.len() as u64).sum();
        assert!(report.bytes_copied >= data_len, "{name}: {report:?}");
        assert!(report.bytes_copied <= 8 << 20, "{name}: {report:?}");
        std::fs::remove_file(&dst).unwrap();
    }
}

/// Regression (issue 11): on tmpfs the extent map called the last 4 bytes
/// a hole (a copy dropped them), and `--reflink never` never finished: the
/// residency snapshot made one cachestat call per GiB of apparent size.
#[test]
fn a_file_of_the_largest_size_with_data_at_its_very_end() {
    copies_every_byte_quickly(&[(HUGE - 4, b"tail")]);
}

#[test]
fn a_file_of_the_largest_size_with_data_at_offset_0_only() {
    copies_every_byte_quickly(&[(0, &[0x5a; 4096])]);
}

#[test]
fn a_file_of_the_largest_size_with_data_at_both_ends() {
    copies_every_byte_quickly(&[(0, b"head"), (HUGE - 3, b"end")]);
}

/// `--sparse never` must write 2^63 zeros, which cannot finish: an
/// interrupt must still stop it, leaving no destination.
#[test]
fn writing_the_holes_of_the_largest_file_stops_on_interrupt() {
    let Some(dir) = huge_dir() else { return };
    let src = huge_source(dir.path(), &[(HUGE - 4, b"tail")]);
    let dst = dir.path().join("dst");
    let stop = Interrupt::new();
    let trigger = stop.clone();
    let timer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        trigger.trigger();
    });
    let started = Instant::now();
    let e = CopyOptions::new()
        .reflink(ReflinkMode::Never)
        .sparse(SparseMode::Never)
        .interrupt(stop)
        .copy(&src, &dst)
        .unwrap_err();
    timer.join().unwrap();
    assert!(matches!(e, CopyError::Interrupted { .. }), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(!dst.exists());
    assert_eq!(others_in(dir.path(), &[&src]), Vec::<PathBuf>::new());
}

/// An interrupt that comes before any data moved (while the copy looks
/// at the source's page cache) stops it too.
#[test]
fn an_interrupt_before_the_data_stops_a_copy_of_the_largest_file() {
    let Some(dir) = huge_dir() else { return };
    let src = huge_source(dir.path(), &[(0, b"head"), (HUGE - 4, b"tail")]);
    let dst = dir.path().join("dst");
    let stop = Interrupt::new();
    stop.trigger();
    for (name, opts) in variants() {
        let e = opts.interrupt(stop.clone()).copy(&src, &dst).unwrap_err();
        assert!(matches!(e, CopyError::Interrupted { .. }), "{name}: {e:?}");
        assert!(!dst.exists(), "{name}");
    }
}
