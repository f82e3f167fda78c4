//! The write lease that keeps other writers out of dig (issue 11: a writer
//! running beside `dig` lost 278 blocks).

use super::*;
use crate::{Breaker, Broken, DigOptions, Exclusion, PunchError, WriteLease, dig_holes_excluding};
use rustix::io::Errno;
use std::cell::Cell;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A named file (other openers need a path), opened read-write.
fn named() -> (tempfile::TempDir, PathBuf, File) {
    let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let path = dir.path().join("image");
    let f = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    (dir, path, f)
}

/// `runs` data blocks each followed by a zero block: dig punches `runs`
/// holes, one at a time, in order.
fn striped(f: &File, runs: u64) -> Vec<Range<u64>> {
    let mut zeros = Vec::new();
    for i in 0..runs {
        write_pattern(f, 2 * i * B..(2 * i + 1) * B);
        f.write_all_at(&vec![0; B as usize], (2 * i + 1) * B)
            .unwrap();
        zeros.push((2 * i + 1) * B..(2 * i + 2) * B);
    }
    f.sync_all().unwrap();
    zeros
}

fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    File::options()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
}

/// Waits (at most 10 s) until the lease reports the break a blocked opener
/// started.
fn wait_for_break(lease: &WriteLease<'_>) -> Broken {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Err(broken) = lease.check() {
            return broken;
        }
        assert!(
            Instant::now() < deadline,
            "the opener never broke the lease"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_write_lease_is_refused_while_another_descriptor_is_open() {
    let (_dir, path, f) = named();
    for other in [
        File::open(&path).unwrap(),
        File::options().write(true).open(&path).unwrap(),
    ] {
        let err = WriteLease::acquire(&f).unwrap_err();
        assert_eq!(err.errno, Errno::AGAIN);
        assert!(err.to_string().contains("EAGAIN"), "{err}");
        assert!(err.to_string().contains("has the file open"), "{err}");
        drop(other);
    }
    let lease = WriteLease::acquire(&f).unwrap();
    lease.check().unwrap();
    // Held: a non-blocking open is turned away (and starts a break) …
    let e = open_nonblocking(&path).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(Errno::WOULDBLOCK.raw_os_error()));
    assert_eq!(lease.check().unwrap_err().by, Breaker::Reader);
    // … and dropping the guard lets openers in at once.
    drop(lease);
    open_nonblocking(&path).unwrap();
}

#[test]
fn acquire_within_waits_out_a_passing_opener_but_not_a_lingering_one() {
    let (_dir, path, f) = named();
    let passing = File::open(&path).unwrap();
    let closer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        drop(passing);
    });
    let t = Instant::now();
    let lease = WriteLease::acquire_within(&f, Duration::from_secs(5)).unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(25),
        "{:?}",
        t.elapsed()
    );
    closer.join().unwrap();
    drop(lease);

    let _lingering = File::open(&path).unwrap();
    let t = Instant::now();
    let err = WriteLease::acquire_within(&f, Duration::from_millis(100)).unwrap_err();
    assert_eq!(err.errno, Errno::AGAIN);
    assert!(
        t.elapsed() >= Duration::from_millis(50),
        "{:?}",
        t.elapsed()
    );
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[test]
fn release_lets_a_blocked_writer_in() {
    let (_dir, path, f) = named();
    let lease = WriteLease::acquire(&f).unwrap();
    let opener = std::thread::spawn(move || {
        let t = Instant::now();
        File::options().write(true).open(&path).unwrap();
        t.elapsed()
    });
    let broken = wait_for_break(&lease);
    assert_eq!(broken.by, Breaker::Writer);
    assert!(broken.to_string().contains("for writing"), "{broken}");
    std::thread::sleep(Duration::from_millis(100));
    lease.release().unwrap();
    let waited = opener.join().unwrap();
    // It waited for the release, not for lease-break-time (45 s by default).
    assert!(waited >= Duration::from_millis(100), "{waited:?}");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
}

/// Delegates to the real lease, but on the `at`-th check (1-based) first
/// starts a writer thread that opens the file (blocking) and overwrites
/// every zero block with data, and waits until the lease reports the break:
/// a writer arriving exactly between two punches.
struct BreakAt<'a> {
    lease: &'a WriteLease<'a>,
    at: u64,
    calls: Cell<u64>,
    start: Box<dyn Fn() + 'a>,
}

impl Exclusion for BreakAt<'_> {
    fn check(&self) -> Result<(), Broken> {
        self.calls.set(self.calls.get() + 1);
        if self.calls.get() == self.at {
            (self.start)();
            wait_for_break(self.lease);
        }
        self.lease.check()
    }
}

#[test]
fn a_writer_opening_the_file_stops_dig_before_its_next_punch_and_loses_nothing() {
    const RUNS: u64 = 16;
    const BREAK_AT: u64 = 6;
    let (_dir, path, f) = named();
    let zeros = striped(&f, RUNS);
    let writer = std::sync::Mutex::new(None);
    let lease = WriteLease::acquire(&f).unwrap();
    let guard = BreakAt {
        lease: &lease,
        at: BREAK_AT,
        calls: Cell::new(0),
        start: Box::new(|| {
            let (path, zeros) = (path.clone(), zeros.clone());
            *writer.lock().unwrap() = Some(std::thread::spawn(move || {
                // Blocks until dig releases the lease.
                let w = File::options().write(true).open(&path).unwrap();
                for z in &zeros {
                    w.write_all_at(&pattern(z.start, B), z.start).unwrap();
                }
                w.sync_all().unwrap();
            }));
        }),
    };
    let err = dig_holes_excluding(&f, &DigOptions::new().chunk_size(B), &guard).unwrap_err();
    drop(guard);
    drop(lease);
    writer.lock().unwrap().take().unwrap().join().unwrap();

    let PunchError::LeaseBroken {
        offset,
        broken,
        changed,
        ref state,
        ..
    } = err
    else {
        panic!("expected LeaseBroken, got {err:?}");
    };
    assert_eq!(broken.by, Breaker::Writer);
    // The 6th punch was not made: it stopped before the 6th zero run.
    assert_eq!(offset, zeros[BREAK_AT as usize - 1].start);
    assert!(changed && err.changed_file());
    assert!(
        state.contains(&format!("dug {} bytes", (BREAK_AT - 1) * B)),
        "{state}"
    );
    assert!(err.to_string().contains("run dig again"), "{err}");
    // Every block the writer wrote reads back: nothing was lost.
    for z in &zeros {
        let mut got = vec![0; B as usize];
        f.read_exact_at(&mut got, z.start).unwrap();
        assert_eq!(got, pattern(z.start, B), "block at {} lost", z.start);
    }
    for i in 0..RUNS {
        let mut got = vec![0; B as usize];
        f.read_exact_at(&mut got, 2 * i * B).unwrap();
        assert_eq!(got, pattern(2 * i * B, B));
    }
}

#[test]
fn a_lease_broken_before_the_first_punch_punches_nothing() {
    let (_dir, path, f) = named();
    striped(&f, 4);
    let before = allocated(&f);
    let holes_before = holes(&f);
    let lease = WriteLease::acquire(&f).unwrap();
    assert!(open_nonblocking(&path).is_err());
    let err = DigOptions::new().dig_excluding(&f, &lease).unwrap_err();
    assert!(
        matches!(
            err,
            PunchError::LeaseBroken {
                changed: false,
                offset,
                ..
            } if offset == B
        ),
        "{err:?}"
    );
    assert!(!err.changed_file());
    assert_eq!(allocated(&f), before);
    assert_eq!(holes(&f), holes_before);
}

#[test]
fn an_unbroken_lease_lets_dig_finish() {
    let (_dir, _path, f) = named();
    let zeros = striped(&f, 4);
    let lease = WriteLease::acquire(&f).unwrap();
    let dug = DigOptions::new().dig_excluding(&f, &lease).unwrap();
    lease.check().unwrap();
    drop(lease);
    assert_eq!(dug.holes_punched, 4);
    for z in zeros {
        assert!(is_hole(&f, z), "{:?}", holes(&f));
    }
}

#[test]
fn a_lease_that_cannot_be_checked_reads_as_broken_with_its_errno() {
    let broken = Broken {
        by: Breaker::Unknown(Errno::BADF),
        held_for: Duration::from_millis(1500),
    };
    assert_eq!(
        broken.to_string(),
        "the write lease could not be checked (EBADF (Bad file descriptor)) 1.5 s after the write lease was taken (lease broken)"
    );
}
