//! Error paths: refused requests touch nothing; failed or interrupted copies
//! leave the source untouched and no destination that looks complete.

mod common;

use common::*;
use rustix::io::Errno;
use sparsekit_copy::fault::{self, Faults};
use sparsekit_copy::{
    CachePolicy, CopyError, CopyOptions, DataStrategy, Interrupt, Progress, ReflinkMode,
    SparseMode, Staging,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

struct Setup {
    dir: tempfile::TempDir,
    src: PathBuf,
    dst: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let src = dir.path().join("disk.img");
    let dst = dir.path().join("copy.img");
    make_file(
        &src,
        &vec![
            (3 << 20, Seg::Data(1)),
            (2 << 20, Seg::Hole),
            (1 << 20, Seg::Data(2)),
        ],
    );
    Setup { dir, src, dst }
}

/// After a failure: the source is byte-for-byte as before, and the
/// directory holds nothing but the source (and `keep`).
fn assert_clean(s: &Setup, before: &(Vec<u8>, u64, i64, i64), keep: &[&Path]) {
    assert_eq!(&snapshot(&s.src), before, "source changed");
    let mut expected: Vec<&Path> = vec![&s.src];
    expected.extend_from_slice(keep);
    assert_eq!(
        others_in(s.dir.path(), &expected),
        Vec::<PathBuf>::new(),
        "leftovers"
    );
}

#[test]
fn the_same_file_is_refused_in_every_spelling() {
    let s = setup();
    let before = snapshot(&s.src);
    let link = s.dir.path().join("hard.img");
    std::fs::hard_link(&s.src, &link).unwrap();
    let sym = s.dir.path().join("sym.img");
    std::os::unix::fs::symlink(&s.src, &sym).unwrap();
    let dotted = s.dir.path().join(".").join("disk.img");
    for dst in [&s.src, &link, &sym, &dotted] {
        for staging in [Staging::Auto, Staging::InPlace] {
            let e = CopyOptions::new()
                .staging(staging)
                .copy(&s.src, dst)
                .unwrap_err();
            assert!(matches!(e, CopyError::SameFile { .. }), "{dst:?}: {e:?}");
            assert!(e.is_usage_error());
            assert!(e.to_string().contains("same file"), "{e}");
        }
    }
    assert_clean(&s, &before, &[&link, &sym]);
}

#[test]
fn directories_and_fifos_are_not_copyable() {
    let s = setup();
    let before = snapshot(&s.src);
    let e = CopyOptions::new().copy(s.dir.path(), &s.dst).unwrap_err();
    assert!(
        matches!(
            e,
            CopyError::NotCopyable {
                is_source: true,
                kind: "directory",
                ..
            }
        ),
        "{e:?}"
    );
    let sub = s.dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let e = CopyOptions::new().copy(&s.src, &sub).unwrap_err();
    assert!(
        matches!(
            e,
            CopyError::NotCopyable {
                is_source: false,
                kind: "directory",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.is_usage_error());
    assert_clean(&s, &before, &[&sub]);
}

#[test]
fn a_missing_source_names_the_path_and_errno() {
    let s = setup();
    let e = CopyOptions::new()
        .copy(s.dir.path().join("nope"), &s.dst)
        .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("nope") && msg.contains("ENOENT"), "{msg}");
    assert!(!s.dst.exists());
}

#[test]
fn contradicting_options_touch_nothing() {
    let s = setup();
    let before = snapshot(&s.src);
    let bad = [
        CopyOptions::new()
            .data_strategy(DataStrategy::CopyFileRange)
            .reflink(ReflinkMode::Never),
        CopyOptions::new()
            .data_strategy(DataStrategy::CopyFileRange)
            .sparse(SparseMode::Always),
        CopyOptions::new()
            .data_strategy(DataStrategy::CopyFileRange)
            .cache(CachePolicy::Direct),
        CopyOptions::new()
            .reflink(ReflinkMode::Always)
            .sparse(SparseMode::Never),
    ];
    for opts in bad {
        let e = opts.copy(&s.src, &s.dst).unwrap_err();
        assert!(matches!(e, CopyError::InvalidOptions(_)), "{e:?}");
        assert!(e.is_usage_error());
    }
    assert_clean(&s, &before, &[]);
}

/// ENOSPC in the middle of the data, for every staging: a clear error with
/// path, offset and errno; nothing complete-looking left.
#[test]
fn enospc_mid_copy_leaves_no_destination() {
    for staging in [Staging::Auto, Staging::Named, Staging::InPlace] {
        for data in [DataStrategy::ReadWrite, DataStrategy::CopyFileRange] {
            let s = setup();
            let before = snapshot(&s.src);
            let _faults = fault::inject(Faults::new().write_at(2 << 20, Errno::NOSPC));
            let opts = CopyOptions::new()
                .staging(staging)
                .data_strategy(data)
                .cache(CachePolicy::Keep);
            let e = opts.copy(&s.src, &s.dst).unwrap_err();
            assert_eq!(e.errno(), Some(Errno::NOSPC), "{e:?}");
            let msg = e.to_string();
            assert!(
                msg.contains("copy.img") && msg.contains("ENOSPC") && msg.contains("at offset"),
                "{msg}"
            );
            assert!(!s.dst.exists(), "{staging}/{data}: destination left behind");
            assert_clean(&s, &before, &[]);
        }
    }
}

#[test]
fn a_failed_copy_keeps_the_old_destination_intact() {
    let s = setup();
    let before = snapshot(&s.src);
    write_file(&s.dst, b"the old image, which must survive");
    let _faults = fault::inject(Faults::new().write_at(5 << 20, Errno::IO));
    let old = snapshot(&s.dst);
    let e = CopyOptions::new().copy(&s.src, &s.dst).unwrap_err();
    assert_eq!(e.errno(), Some(Errno::IO));
    assert_eq!(snapshot(&s.dst), old);
    assert_clean(&s, &before, &[&s.dst]);
}

#[test]
fn a_failed_in_place_copy_empties_the_destination() {
    let s = setup();
    let before = snapshot(&s.src);
    make_file(&s.dst, &vec![(8 << 20, Seg::Data(9))]);
    let _faults = fault::inject(Faults::new().write_at(2 << 20, Errno::NOSPC));
    let e = CopyOptions::new()
        .staging(Staging::InPlace)
        .copy(&s.src, &s.dst)
        .unwrap_err();
    assert_eq!(e.errno(), Some(Errno::NOSPC));
    assert_eq!(
        std::fs::metadata(&s.dst).unwrap().len(),
        0,
        "an in-place failure truncates"
    );
    assert_clean(&s, &before, &[&s.dst]);
}

#[test]
fn the_header_is_written_last_in_place() {
    // A failure in the header pass (after the body) still leaves no valid
    // header: the first MiB was invalidated before the body was written.
    let s = setup();
    make_file(&s.dst, &vec![(8 << 20, Seg::Data(9))]);
    let _faults = fault::inject(Faults::new().write_at(4096, Errno::IO));
    let e = CopyOptions::new()
        .staging(Staging::InPlace)
        .copy(&s.src, &s.dst)
        .unwrap_err();
    assert_eq!(e.errno(), Some(Errno::IO));
    assert_eq!(std::fs::metadata(&s.dst).unwrap().len(), 0);
}

#[test]
fn a_read_error_names_the_source() {
    let s = setup();
    let _faults = fault::inject(Faults::new().read_at(1 << 20, Errno::IO));
    let before = snapshot(&s.src);
    let e = CopyOptions::new().copy(&s.src, &s.dst).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("disk.img") && msg.contains("EIO") && msg.contains("offset"),
        "{msg}"
    );
    assert_clean(&s, &before, &[]);
}

#[test]
fn a_failed_fsync_leaves_no_destination() {
    for staging in [Staging::Auto, Staging::Named] {
        let s = setup();
        let before = snapshot(&s.src);
        let _faults = fault::inject(Faults::new().sync(Errno::IO));
        let e = CopyOptions::new()
            .staging(staging)
            .copy(&s.src, &s.dst)
            .unwrap_err();
        assert!(matches!(e, CopyError::Io { op: "fsync", .. }), "{e:?}");
        assert!(!s.dst.exists());
        assert_clean(&s, &before, &[]);
    }
}

/// With the interrupt triggered from the progress callback once `when`
/// holds, every staging mode fails `Interrupted` and leaves nothing.
fn interrupted_when(opts: CopyOptions, when: fn(&Progress) -> bool) {
    for staging in [Staging::Auto, Staging::Named, Staging::InPlace] {
        let s = setup();
        let before = snapshot(&s.src);
        let stop = Interrupt::new();
        let trigger = stop.clone();
        let e = opts
            .clone()
            .staging(staging)
            .interrupt(stop)
            .progress(move |p| {
                if when(p) {
                    trigger.trigger();
                }
            })
            .copy(&s.src, &s.dst)
            .unwrap_err();
        assert!(
            matches!(e, CopyError::Interrupted { .. }),
            "{staging}: {e:?}"
        );
        assert!(!s.dst.exists(), "{staging}");
        assert_clean(&s, &before, &[]);
    }
}

#[test]
fn an_interrupt_stops_the_copy_and_cleans_up() {
    interrupted_when(CopyOptions::new().buffer_size(256 << 10), |_| true);
}

/// A signal after the last data was written (here: at 100 % progress,
/// before the fsync) still stops the copy: nothing is published.
#[test]
fn an_interrupt_after_the_last_write_publishes_nothing() {
    interrupted_when(CopyOptions::new(), |p| p.data_done == p.data_total);
}

#[test]
fn sigint_interrupts_through_register_signals() {
    let s = setup();
    let before = snapshot(&s.src);
    let stop = Interrupt::new();
    let _registration = stop
        .register_signals(&[signal_hook::consts::SIGINT])
        .unwrap();
    let _faults = fault::inject(Faults::new().delay(Duration::from_millis(5)));
    let e = CopyOptions::new()
        .buffer_size(256 << 10)
        .interrupt(stop.clone())
        .progress(|p| {
            if p.data_done > 0 {
                signal_hook::low_level::raise(signal_hook::consts::SIGINT).unwrap();
            }
        })
        .copy(&s.src, &s.dst)
        .unwrap_err();
    assert!(stop.is_triggered());
    assert!(matches!(e, CopyError::Interrupted { .. }), "{e:?}");
    assert!(!s.dst.exists());
    assert_clean(&s, &before, &[]);
}

#[test]
fn a_source_that_changes_during_the_copy_fails_it() {
    let s = setup();
    let src = s.src.clone();
    let e = CopyOptions::new()
        .buffer_size(256 << 10)
        .readers(1)
        .progress(move |p| {
            if p.data_done == 256 << 10 {
                let f = std::fs::OpenOptions::new().append(true).open(&src).unwrap();
                std::io::Write::write_all(&mut &f, b"appended").unwrap();
            }
        })
        .copy(&s.src, &s.dst)
        .unwrap_err();
    assert!(matches!(e, CopyError::SourceChanged { .. }), "{e:?}");
    assert!(!s.dst.exists());
}

#[test]
fn reflink_always_fails_clearly_where_there_is_none() {
    let s = setup();
    let before = snapshot(&s.src);
    let probe_dst = tempfile::tempfile_in(s.dir.path()).unwrap();
    let supported =
        rustix::fs::ioctl_ficlone(&probe_dst, std::fs::File::open(&s.src).unwrap()).is_ok();
    drop(probe_dst);
    let r = CopyOptions::new()
        .reflink(ReflinkMode::Always)
        .copy(&s.src, &s.dst);
    if supported {
        assert_eq!(r.unwrap().strategy, sparsekit_copy::Strategy::Reflink);
        return;
    }
    let e = r.unwrap_err();
    assert!(matches!(e, CopyError::ReflinkUnsupported { .. }), "{e:?}");
    assert!(e.to_string().contains("EOPNOTSUPP"), "{e}");
    assert!(!s.dst.exists());
    assert_clean(&s, &before, &[]);
    // Auto falls back and says so.
    let r = CopyOptions::new().copy(&s.src, &s.dst).unwrap();
    assert!(r.fallbacks.iter().any(|f| f.strategy == "reflink"), "{r:?}");
}

#[test]
fn copy_file_range_across_filesystems_falls_back_or_fails_when_forced() {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        return;
    }
    let s = setup();
    let far = tempfile::tempdir_in(shm).unwrap();
    let dst = far.path().join("copy.img");
    // What the kernel says for one byte across these two filesystems.
    let probe = {
        let out = tempfile::tempfile_in(far.path()).unwrap();
        let inp = std::fs::File::open(&s.src).unwrap();
        rustix::fs::copy_file_range(&inp, Some(&mut 0), &out, Some(&mut 0), 1)
    };
    let forced = CopyOptions::new()
        .data_strategy(DataStrategy::CopyFileRange)
        .cache(CachePolicy::Keep)
        .copy(&s.src, &dst);
    match probe {
        Ok(_) => assert!(forced.is_ok(), "{forced:?}"),
        Err(errno) => {
            let e = forced.unwrap_err();
            assert!(matches!(e, CopyError::StrategyUnsupported { .. }), "{e:?}");
            assert_eq!(e.errno(), Some(errno));
            assert!(!dst.exists());
            let r = CopyOptions::new()
                .cache(CachePolicy::Keep)
                .copy(&s.src, &dst)
                .unwrap();
            assert!(
                r.fallbacks
                    .iter()
                    .any(|f| f.strategy == "copy_file_range" && f.errno == errno),
                "{r:?}"
            );
            assert_eq!(r.strategy, sparsekit_copy::Strategy::ReadWrite);
            assert_same_content(&s.src, &dst);
        }
    }
}

#[test]
fn the_named_temporary_is_hidden_and_removed() {
    let s = setup();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (dir, seen2) = (s.dir.path().to_owned(), seen.clone());
    CopyOptions::new()
        .staging(Staging::Named)
        .buffer_size(1 << 20)
        .progress(move |_| {
            for p in std::fs::read_dir(&dir).unwrap() {
                seen2
                    .lock()
                    .unwrap()
                    .push(p.unwrap().file_name().into_string().unwrap());
            }
        })
        .copy(&s.src, &s.dst)
        .unwrap();
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter()
            .any(|n| n.starts_with(".copy.img.sparsekit-") && n.ends_with(".tmp")),
        "{seen:?}"
    );
    assert!(
        !seen.iter().any(|n| n == "copy.img"),
        "the final name appeared before the end: {seen:?}"
    );
    assert_eq!(
        others_in(s.dir.path(), &[&s.src, &s.dst]),
        Vec::<PathBuf>::new()
    );
}
