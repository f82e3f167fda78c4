//! The journal of [`ShiftOptions`]: a collapse or insert crashed (simulated
//! by `mover::crash`) at every segment boundary and at every step of the
//! journal protocol, with torn headers and unsynced saved segments, or
//! failing mid-move (`file::faults`), or stopped by its flag, resumes to
//! exactly the model's bytes, with holes kept holes.

use super::*;
use crate::journal::{Open, ShiftJournal, checksum, region_len};
use crate::model::{Effect, Fill, Model, Op};
use crate::mover::crash::{self, Point};
use crate::{Operation, Pending, PunchError, Report, Resumed, ShiftOptions, ShiftStrategy};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

const SEGMENT: u64 = 4 * B;
const CHUNK: u64 = 2 * B;

/// A named scratch file (the journal lives beside it) and its model.
struct Scratch {
    _dir: tempfile::TempDir,
    path: PathBuf,
    file: File,
    model: Model,
}

/// Data, holes and an unaligned end across 11 segments: data 0..6B,
/// 9B..15B, 22B..41B + 100, holes between.
fn scratch() -> Scratch {
    // On tmpfs where there is one: these tests make thousands of fsyncs,
    // and what they check (the order of events and what the journal holds)
    // does not depend on the filesystem; the bench runs the real thing.
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .expect("tempdir");
    let path = dir.path().join("disk.img");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .expect("create");
    let mut model = Model::new();
    for (i, range) in [0..6 * B, 9 * B..15 * B, 22 * B..41 * B + 100]
        .into_iter()
        .enumerate()
    {
        let op = Op::Write {
            offset: range.start,
            length: range.end - range.start,
            fill: Fill::Pattern(i as u8 + 1),
        };
        apply(&file, &mut model, &op);
    }
    Scratch {
        _dir: dir,
        path,
        file,
        model,
    }
}

fn apply(file: &File, model: &mut Model, op: &Op) {
    if let Op::Write {
        offset,
        length,
        fill,
    } = *op
    {
        file.write_all_at(&crate::model::fill_bytes(fill, offset, length), offset)
            .expect("pwrite");
    }
    model.apply(op, B, Effect::Unchanged);
}

fn journal(path: &Path) -> ShiftJournal {
    ShiftJournal::beside(path).expect("a file name")
}

fn options(path: &Path) -> ShiftOptions<'static> {
    ShiftOptions::new(ShiftStrategy::MoveData)
        .journal(journal(path))
        .sizes(CHUNK, Some(SEGMENT))
}

/// The four shapes: shorter than a segment (the source is saved in the
/// journal) and at least a segment (redone from the file), both ways.
fn cases() -> Vec<Op> {
    vec![
        Op::Collapse {
            offset: 2 * B,
            length: B,
        },
        Op::Collapse {
            offset: 3 * B,
            length: 5 * B,
        },
        Op::Insert {
            offset: 5 * B,
            length: 2 * B,
        },
        Op::Insert {
            offset: B,
            length: 6 * B,
        },
    ]
}

fn run(opts: &ShiftOptions<'_>, file: &File, op: &Op) -> Result<Report<ShiftStrategy>, PunchError> {
    match *op {
        Op::Collapse { offset, length } => opts.collapse(file, offset, length),
        Op::Insert { offset, length } => opts.insert(file, offset, length),
        _ => unreachable!("only shifts"),
    }
}

/// The file holds the model's bytes, no more blocks than the model allows
/// (holes stayed holes), and the journal is gone.
fn check_final(s: &Scratch, expected: &Model, what: &str) {
    let got = contents(&s.file);
    assert_eq!(got.len(), expected.bytes().len(), "{what}: size");
    if let Some(i) = got.iter().zip(expected.bytes()).position(|(a, b)| a != b) {
        panic!(
            "{what}: byte {i} is {:#04x}, the model's {:#04x}",
            got[i],
            expected.bytes()[i]
        );
    }
    assert!(
        allocated(&s.file) <= expected.allocation_bound(B),
        "{what}: {} bytes allocated, the model allows {}",
        allocated(&s.file),
        expected.allocation_bound(B)
    );
    assert!(
        !journal(&s.path).path().exists(),
        "{what}: the journal is left"
    );
}

fn resume_to_the_end(s: &Scratch, what: &str) {
    match options(&s.path).resume(&s.file) {
        Ok(Resumed::Finished(r)) => assert_eq!(r.strategy, ShiftStrategy::MoveData),
        other => panic!("{what}: resume gave {other:?}"),
    }
    // Resuming again finds nothing to do.
    assert_eq!(
        options(&s.path).resume(&s.file).unwrap(),
        Resumed::Nothing,
        "{what}"
    );
}

/// How a simulated crash's leftovers are damaged before resuming.
#[derive(Clone, Copy, Debug)]
enum Damage {
    None,
    /// The newest header was torn (never became durable).
    TornHeader,
    /// The newest header's saved segment was not durable.
    UnsyncedSave,
}

fn damage(s: &Scratch, how: Damage) {
    let j = journal(&s.path);
    let open = Open::existing(&j, Operation::Collapse, rustix::fs::OFlags::RDONLY)
        .unwrap()
        .unwrap();
    let h = open.latest().unwrap().expect("a header");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(j.path())
        .unwrap();
    let flip = |at: u64| {
        let mut b = [0u8];
        std::fs::File::open(j.path())
            .unwrap()
            .read_exact_at(&mut b, at)
            .unwrap();
        f.write_all_at(&[b[0] ^ 0x5a], at).unwrap();
    };
    match how {
        Damage::None => {}
        Damage::TornHeader => flip((h.seq % 2) * 4096 + 40),
        Damage::UnsyncedSave if h.data_len > 0 => {
            flip(2 * 4096 + (h.seq % 2) * region_len(h.segment) + h.extents * 16 + h.data_len / 2)
        }
        Damage::UnsyncedSave => {}
    }
}

#[test]
fn a_crash_at_every_point_resumes_to_the_models_bytes() {
    let _reset = crash::Reset;
    let points = [
        (Point::JournalCreated, Damage::None),
        (Point::BeforeJournalSync, Damage::None),
        (Point::BeforeJournalSync, Damage::TornHeader),
        (Point::BeforeJournalSync, Damage::UnsyncedSave),
        (Point::AfterJournalSync, Damage::None),
        (Point::AfterJournalSync, Damage::TornHeader),
        (Point::AfterSegment, Damage::None),
        (Point::BeforeJournalRemove, Damage::None),
    ];
    let mut crashes = 0;
    for op in cases() {
        for (point, how) in points {
            for skip in 0.. {
                let mut s = scratch();
                let mut expected = s.model.clone();
                expected.apply(&op, B, Effect::Unchanged);
                let what = format!("{op:?} crashed at {point:?} #{skip}, {how:?}");
                crash::arm(point, skip);
                let result = run(&options(&s.path), &s.file, &op);
                if !crash::fired() {
                    result.unwrap_or_else(|e| panic!("{what}: {e}"));
                    check_final(&s, &expected, &what);
                    assert!(skip > 0, "{what}: the point was never reached");
                    break;
                }
                crashes += 1;
                assert!(crash::is_crash(&result.unwrap_err()), "{what}");
                assert!(journal(&s.path).path().exists(), "{what}: no journal");
                // Nothing else may change the file meanwhile.
                let refused = run(
                    &options(&s.path),
                    &s.file,
                    &Op::Collapse {
                        offset: 0,
                        length: B,
                    },
                );
                assert!(
                    matches!(refused, Err(PunchError::JournalPending { .. })),
                    "{what}: {refused:?}"
                );
                damage(&s, how);
                resume_to_the_end(&s, &what);
                check_final(&s, &expected, &what);
                s.model = expected;
            }
        }
    }
    // 11 segments and more for each of the 4 shapes at 6 points.
    assert!(crashes > 4 * 6 * 11, "only {crashes} crashes");
}

#[test]
fn a_failure_mid_move_resumes_to_the_models_bytes() {
    let _reset = faults();
    for op in cases() {
        for fallocates in [false, true] {
            for ok in 0.. {
                let s = scratch();
                let mut expected = s.model.clone();
                expected.apply(&op, B, Effect::Unchanged);
                let what = format!("{op:?}, fallocate {fallocates}, {ok} calls ok");
                if fallocates {
                    crate::file::faults::fail_fallocates_after(Some(ok), rustix::io::Errno::IO);
                } else {
                    crate::file::faults::fail_writes_after(Some(ok));
                }
                let result = run(&options(&s.path), &s.file, &op);
                crate::file::faults::fail_writes_after(None);
                crate::file::faults::fail_fallocates_after(None, rustix::io::Errno::IO);
                let e = match result {
                    Ok(_) => {
                        check_final(&s, &expected, &what);
                        break;
                    }
                    Err(e) => e,
                };
                if !e.changed_file() {
                    // Nothing moved: nothing is left to resume.
                    assert_eq!(contents(&s.file), s.model.bytes(), "{what}: {e}");
                    assert!(!journal(&s.path).path().exists(), "{what}: {e}");
                    continue;
                }
                let message = e.to_string();
                assert!(
                    message.contains(&journal(&s.path).path().display().to_string()),
                    "{what}: {message}"
                );
                resume_to_the_end(&s, &what);
                check_final(&s, &expected, &what);
            }
        }
    }
}

#[test]
fn a_stop_flag_stops_at_a_segment_boundary_and_resuming_finishes() {
    let _reset = crash::Reset;
    for op in cases() {
        for after in [0, 1, 5] {
            let s = scratch();
            let mut expected = s.model.clone();
            expected.apply(&op, B, Effect::Unchanged);
            let flag = Arc::new(AtomicBool::new(false));
            crash::stop_after_segments(Arc::clone(&flag), after);
            let e = run(&options(&s.path).stop_flag(flag), &s.file, &op).unwrap_err();
            let PunchError::Stopped { changed, state, .. } = &e else {
                panic!("{op:?}: {e}");
            };
            assert!(changed, "{op:?}: {e}");
            assert!(
                state.contains(&journal(&s.path).path().display().to_string()),
                "{op:?}: {e}"
            );
            // A stop leaves no half-moved segment: the newest header names
            // a segment that is moved and synced.
            let j = journal(&s.path);
            let h = Open::existing(&j, Operation::Collapse, rustix::fs::OFlags::RDONLY)
                .unwrap()
                .unwrap()
                .latest()
                .unwrap()
                .unwrap();
            assert!(h.seq >= after + 2, "{op:?}: header {}", h.seq);
            resume_to_the_end(&s, &format!("{op:?} stopped after {after}"));
            check_final(&s, &expected, &format!("{op:?}"));
        }
    }
}

#[test]
fn a_stop_before_anything_moved_leaves_the_file_and_no_journal() {
    for op in cases() {
        let s = scratch();
        let flag = Arc::new(AtomicBool::new(true));
        let e = run(&options(&s.path).stop_flag(flag), &s.file, &op).unwrap_err();
        assert!(
            matches!(e, PunchError::Stopped { changed: false, .. }),
            "{e}"
        );
        // The message says so (it ended in an empty state before).
        assert!(e.to_string().ends_with("nothing was changed"), "{e}");
        assert!(!e.changed_file());
        assert_eq!(contents(&s.file), s.model.bytes());
        assert!(!journal(&s.path).path().exists());
    }
}

#[test]
fn without_a_journal_nothing_is_written_beside_the_file() {
    for op in cases() {
        let s = scratch();
        let mut expected = s.model.clone();
        expected.apply(&op, B, Effect::Unchanged);
        let opts = ShiftOptions::new(ShiftStrategy::MoveData).sizes(CHUNK, Some(SEGMENT));
        run(&opts, &s.file, &op).unwrap();
        check_final(&s, &expected, &format!("{op:?}"));
        let names: Vec<_> = std::fs::read_dir(s.path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["disk.img"]);
    }
}

#[test]
fn resume_refuses_another_file_and_a_changed_size() {
    let _reset = crash::Reset;
    let s = scratch();
    crash::arm(Point::AfterSegment, 2);
    let op = Op::Collapse {
        offset: 2 * B,
        length: B,
    };
    run(&options(&s.path), &s.file, &op).unwrap_err();
    assert!(crash::fired());
    let before = contents(&s.file);

    // Another file under the same name.
    let other = scratch();
    std::fs::copy(journal(&s.path).path(), journal(&other.path).path()).unwrap();
    let e = options(&other.path).resume(&other.file).unwrap_err();
    assert!(
        matches!(e, PunchError::JournalMismatch { .. }) && e.to_string().contains("inode"),
        "{e}"
    );
    assert_eq!(contents(&other.file), other.model.bytes());

    // The file grew since.
    s.file.set_len(before.len() as u64 + B).unwrap();
    let e = options(&s.path).resume(&s.file).unwrap_err();
    assert!(
        matches!(e, PunchError::JournalMismatch { .. }) && e.to_string().contains("size"),
        "{e}"
    );
    s.file.set_len(before.len() as u64).unwrap();
    assert_eq!(contents(&s.file), before);
    resume_to_the_end(&s, "after the refusals");
}

#[test]
fn a_collapse_killed_inside_its_truncate_resumes() {
    // btrfs leaves a size between the old and the new one when SIGKILL
    // interrupts the truncate (seen in the bench on btrfs-zstd).
    let _reset = crash::Reset;
    let s = scratch();
    let op = Op::Collapse {
        offset: 2 * B,
        length: 3 * B,
    };
    let mut expected = s.model.clone();
    expected.apply(&op, B, Effect::Unchanged);
    crash::arm(Point::BeforeJournalRemove, 0);
    run(&options(&s.path), &s.file, &op).unwrap_err();
    assert!(crash::fired());
    let size_before = s.model.bytes().len() as u64;
    let final_size = size_before - 3 * B;
    // Between the two, as the interrupted truncate left it.
    s.file.set_len(final_size + B + 100).unwrap();
    resume_to_the_end(&s, "a part-way truncate");
    check_final(&s, &expected, "a part-way truncate");

    // Before the last header, the same size is another writer's doing.
    let s = scratch();
    crash::arm(Point::AfterSegment, 0);
    run(&options(&s.path), &s.file, &op).unwrap_err();
    assert!(crash::fired());
    s.file.set_len(final_size + B + 100).unwrap();
    let e = options(&s.path).resume(&s.file).unwrap_err();
    assert!(
        matches!(e, PunchError::JournalMismatch { .. }) && e.to_string().contains("size"),
        "{e}"
    );
}

#[test]
fn a_journal_without_a_complete_header_is_discarded() {
    let s = scratch();
    let j = journal(&s.path);
    // Created, but the first header never reached the disk.
    std::fs::write(j.path(), vec![0u8; 100]).unwrap();
    assert_eq!(j.pending().unwrap(), Some(Pending::Unstarted));
    assert_eq!(
        options(&s.path).resume(&s.file).unwrap(),
        Resumed::Discarded
    );
    assert!(!j.path().exists());
    assert_eq!(contents(&s.file), s.model.bytes());
    assert_eq!(j.pending().unwrap(), None);
}

#[test]
fn pending_names_the_recorded_operation() {
    let _reset = crash::Reset;
    let s = scratch();
    crash::arm(Point::AfterSegment, 0);
    run(
        &options(&s.path),
        &s.file,
        &Op::Insert {
            offset: 5 * B,
            length: 2 * B,
        },
    )
    .unwrap_err();
    assert!(crash::fired());
    let pending = journal(&s.path).pending().unwrap().unwrap();
    assert_eq!(
        pending,
        Pending::Shift {
            op: Operation::Insert,
            offset: 5 * B,
            length: 2 * B,
            size_before: 41 * B + 100,
        }
    );
    assert_eq!(
        pending.to_string(),
        "an unfinished insert (offset 20480, length 8192)"
    );
}

#[test]
fn the_journal_is_named_beside_the_file() {
    let j = ShiftJournal::beside(Path::new("/images/disk.img")).unwrap();
    assert_eq!(j.path(), Path::new("/images/.disk.img.sparsekit-shift"));
    let j = ShiftJournal::beside(Path::new("disk.img")).unwrap();
    assert_eq!(j.path(), Path::new(".disk.img.sparsekit-shift"));
    assert!(ShiftJournal::beside(Path::new("/")).is_none());
}

#[test]
fn the_checksum_sees_every_flipped_bit_and_every_boundary() {
    let data = pattern(0, 1000);
    let sum = checksum(&[&data]);
    for i in [0, 1, 31, 32, 500, 999] {
        for bit in 0..8 {
            let mut d = data.clone();
            d[i] ^= 1 << bit;
            assert_ne!(checksum(&[&d]), sum, "byte {i} bit {bit}");
        }
    }
    assert_ne!(
        checksum(&[&data[..10], &data[10..]]),
        checksum(&[&data[..11], &data[11..]])
    );
    assert_ne!(checksum(&[&data[..999]]), sum);
}

/// An exclusion broken from its `after`-th check on (another process
/// opened the file), as a write lease reports it.
struct BrokenAfter {
    after: u64,
    checks: std::cell::Cell<u64>,
}

impl crate::Exclusion for BrokenAfter {
    fn check(&self) -> Result<(), crate::Broken> {
        self.checks.set(self.checks.get() + 1);
        if self.checks.get() > self.after {
            return Err(crate::Broken {
                by: crate::Breaker::Writer,
                held_for: std::time::Duration::ZERO,
            });
        }
        Ok(())
    }
}

#[test]
fn a_broken_exclusion_stops_the_move_at_a_segment_boundary_and_resuming_finishes() {
    for op in cases() {
        for after in [1, 2, 4] {
            let s = scratch();
            let mut expected = s.model.clone();
            expected.apply(&op, B, Effect::Unchanged);
            let guard = BrokenAfter {
                after,
                checks: Default::default(),
            };
            let e = run(&options(&s.path).exclusion(&guard), &s.file, &op).unwrap_err();
            let PunchError::LeaseBroken { changed, .. } = &e else {
                panic!("{op:?} broken after {after}: {e}");
            };
            // The first check comes before anything changes.
            assert_eq!(*changed, after > 1, "{op:?} broken after {after}: {e}");
            assert_eq!(
                guard.checks.get(),
                after + 1,
                "{op:?}: checked once more after the break"
            );
            if *changed {
                resume_to_the_end(&s, &format!("{op:?} broken after {after}"));
                check_final(&s, &expected, &format!("{op:?} broken after {after}"));
            } else {
                // Broken before the first segment: the file is as it was.
                check_final(&s, &s.model, &format!("{op:?} broken after {after}"));
            }
        }
    }
}
