use super::*;
use crate::file::Target;
use crate::punch::{Failure, run_chain};
use crate::{
    DigOptions, Operation, PunchError, PunchStrategy, RangeProblem, ShiftStrategy, ZeroStrategy,
    collapse_range, dig_holes, insert_range, punch_hole, zero_range,
};
use rustix::fd::AsFd;
use rustix::fs::{SealFlags, fcntl_add_seals};
use rustix::io::Errno;
use std::fs::OpenOptions;

const MAX: u64 = i64::MAX as u64;

/// Runs all four range operations with Auto.
fn all_ops(f: &File, offset: u64, length: u64) -> Vec<(Operation, PunchError)> {
    vec![
        (
            Operation::Punch,
            punch_hole(f, offset, length, PunchStrategy::Auto).err(),
        ),
        (
            Operation::Zero,
            zero_range(f, offset, length, ZeroStrategy::Auto).err(),
        ),
        (
            Operation::Collapse,
            collapse_range(f, offset, length, ShiftStrategy::Auto).err(),
        ),
        (
            Operation::Insert,
            insert_range(f, offset, length, ShiftStrategy::Auto).err(),
        ),
    ]
    .into_iter()
    .map(|(op, e)| {
        (
            op,
            e.unwrap_or_else(|| panic!("{op} accepted {offset}+{length}")),
        )
    })
    .collect()
}

fn expect_problem(f: &File, offset: u64, length: u64, problem: RangeProblem) {
    let old = contents(f);
    for (op, err) in all_ops(f, offset, length) {
        match &err {
            PunchError::InvalidRange {
                op: got_op,
                offset: o,
                length: l,
                problem: p,
            } => {
                assert_eq!(
                    (*got_op, *o, *l, *p),
                    (op, offset, length, problem),
                    "{err}"
                );
            }
            other => panic!("{op}: expected {problem:?}, got {other}"),
        }
        assert!(err.is_bad_input() && !err.changed_file());
    }
    assert_eq!(contents(f), old);
}

#[test]
fn bad_ranges_are_refused_by_every_operation() {
    let f = tmp();
    write_pattern(&f, 0..8 * B);
    expect_problem(&f, 0, 0, RangeProblem::Empty);
    // -1 as an off_t.
    expect_problem(&f, u64::MAX, B, RangeProblem::NegativeOffset);
    expect_problem(&f, 0, u64::MAX - 4095, RangeProblem::NegativeLength);
    expect_problem(&f, MAX - B + 1, 2 * B, RangeProblem::Overflow);
}

#[test]
fn bad_range_messages_name_the_numbers() {
    let f = tmp();
    let err = punch_hole(&f, u64::MAX, 1, PunchStrategy::Auto).unwrap_err();
    assert_eq!(
        err.to_string(),
        "punch: invalid range (offset 18446744073709551615, length 1): the offset is negative as an off_t (above 2^63 - 1)"
    );
}

#[test]
fn collapse_and_insert_name_the_alignment_and_never_round() {
    let f = tmp();
    write_pattern(&f, 0..16 * B);
    let old = contents(&f);
    for (offset, length) in [(1, B), (B, B + 1), (B / 2, B / 2)] {
        for err in [
            collapse_range(&f, offset, length, ShiftStrategy::Auto).unwrap_err(),
            insert_range(&f, offset, length, ShiftStrategy::MoveData).unwrap_err(),
        ] {
            assert!(
                matches!(
                    err,
                    PunchError::InvalidRange {
                        problem: RangeProblem::Unaligned { alignment: B },
                        ..
                    }
                ),
                "{err}"
            );
            assert!(
                err.to_string()
                    .contains("multiples of the filesystem block size, 4096 bytes"),
                "{err}"
            );
        }
    }
    assert_eq!(contents(&f), old);
}

#[test]
fn collapse_may_not_reach_the_end_and_insert_must_start_inside() {
    let f = tmp();
    write_pattern(&f, 0..8 * B);
    for strategy in [ShiftStrategy::Native, ShiftStrategy::MoveData] {
        let err = collapse_range(&f, 4 * B, 4 * B, strategy).unwrap_err();
        assert!(
            matches!(err, PunchError::InvalidRange { problem: RangeProblem::ReachesEof { size } , .. } if size == 8 * B),
            "{err}"
        );
        assert!(err.to_string().contains("truncate to cut the end"), "{err}");
        let err = insert_range(&f, 8 * B, B, strategy).unwrap_err();
        assert!(
            matches!(
                err,
                PunchError::InvalidRange {
                    problem: RangeProblem::AtOrPastEof { .. },
                    ..
                }
            ),
            "{err}"
        );
        // The new size would overflow off_t although offset + length does not.
        let err = insert_range(&f, 0, (MAX - 4 * B) / B * B, strategy).unwrap_err();
        assert!(
            matches!(
                err,
                PunchError::InvalidRange {
                    problem: RangeProblem::Overflow,
                    ..
                }
            ),
            "{err}"
        );
    }
    assert_eq!(f.metadata().unwrap().len(), 8 * B);
}

#[test]
fn directories_and_devices_are_not_regular_files() {
    let dir = File::open(std::env::temp_dir()).unwrap();
    let err = punch_hole(&dir, 0, B, PunchStrategy::Auto).unwrap_err();
    assert!(
        matches!(
            err,
            PunchError::NotRegular {
                kind: "directory",
                ..
            }
        ),
        "{err}"
    );
    let null = OpenOptions::new().write(true).open("/dev/null").unwrap();
    for (_, err) in all_ops(&null, 0, B) {
        assert!(
            matches!(
                err,
                PunchError::NotRegular {
                    kind: "character device",
                    ..
                }
            ),
            "{err}"
        );
    }
    let err = dig_holes(&null, &DigOptions::new()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "dig: not a regular file (it is a character device)"
    );
}

#[test]
fn read_only_descriptors_are_refused_before_anything_happens() {
    let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, pattern(0, 8 * B)).unwrap();
    let ro = File::open(&path).unwrap();
    for (op, err) in all_ops(&ro, 0, B) {
        assert!(
            matches!(err, PunchError::ReadOnly { op: o } if o == op),
            "{err}"
        );
    }
    let err = dig_holes(&ro, &DigOptions::new()).unwrap_err();
    assert!(matches!(err, PunchError::ReadOnly { .. }), "{err}");
    // A dry run only reads.
    dig_holes(&ro, &DigOptions::new().dry_run(true)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), pattern(0, 8 * B));
}

#[test]
fn append_mode_refuses_only_the_strategies_that_write_in_place() {
    let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, pattern(0, 8 * B)).unwrap();
    let f = OpenOptions::new().append(true).open(&path).unwrap();
    let err = punch_hole(&f, 0, B, PunchStrategy::WriteZeros).unwrap_err();
    assert!(matches!(err, PunchError::AppendOnly { .. }), "{err}");
    let err = zero_range(&f, 0, B, ZeroStrategy::WriteZeros).unwrap_err();
    assert!(matches!(err, PunchError::AppendOnly { .. }), "{err}");
    let err = collapse_range(&f, 0, B, ShiftStrategy::MoveData).unwrap_err();
    assert!(matches!(err, PunchError::AppendOnly { .. }), "{err}");
    let err = insert_range(&f, 0, B, ShiftStrategy::MoveData).unwrap_err();
    assert!(matches!(err, PunchError::AppendOnly { .. }), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), pattern(0, 8 * B));
    // fallocate does not care about O_APPEND.
    punch_hole(&f, 0, B, PunchStrategy::PunchHole).unwrap();
}

#[test]
fn write_only_descriptors_are_refused_where_the_file_must_be_read() {
    let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, pattern(0, 8 * B)).unwrap();
    let wo = OpenOptions::new().write(true).open(&path).unwrap();
    for err in [
        collapse_range(&wo, 0, B, ShiftStrategy::MoveData).unwrap_err(),
        insert_range(&wo, 0, B, ShiftStrategy::MoveData).unwrap_err(),
        dig_holes(&wo, &DigOptions::new()).unwrap_err(),
    ] {
        assert!(matches!(err, PunchError::WriteOnly { .. }), "{err}");
        assert!(err.is_bad_input());
    }
    assert_eq!(std::fs::read(&path).unwrap(), pattern(0, 8 * B));
    // The kernel's own operations need no reading.
    punch_hole(&wo, 0, B, PunchStrategy::PunchHole).unwrap();
    collapse_range(&wo, 0, B, ShiftStrategy::Native).unwrap();
}

#[test]
fn sealed_files_fail_with_the_errno_and_stay_intact() {
    let f = memfd();
    write_pattern(&f, 0..8 * B);
    fcntl_add_seals(&f, SealFlags::WRITE).unwrap();
    for (op, err) in all_ops(&f, 0, B) {
        assert_eq!(err.errno(), Some(Errno::PERM), "{op}: {err}");
        assert!(!err.changed_file(), "{op}: {err}");
    }
    // dig punches only zeros: a sealed file of zeros refuses it.
    let z = memfd();
    z.write_all_at(&vec![0; 4 * B as usize], 0).unwrap();
    fcntl_add_seals(&z, SealFlags::WRITE).unwrap();
    let err = dig_holes(&z, &DigOptions::new()).unwrap_err();
    assert_eq!(err.errno(), Some(Errno::PERM), "{err}");
    assert_eq!(contents(&f), pattern(0, 8 * B));
}

#[test]
fn growing_a_sealed_file_is_refused_before_moving_anything() {
    let f = memfd();
    write_pattern(&f, 0..8 * B);
    fcntl_add_seals(&f, SealFlags::GROW).unwrap();
    let err = insert_range(&f, B, B, ShiftStrategy::Auto).unwrap_err();
    assert!(!err.changed_file(), "{err}");
    assert!(
        err.to_string().contains("ftruncate at offset 36864: EPERM"),
        "{err}"
    );
    assert_eq!(contents(&f), pattern(0, 8 * B));
}

#[test]
fn dig_refuses_the_scan_method() {
    let f = tmp();
    let err = dig_holes(&f, &DigOptions::new().method(Method::Scan)).unwrap_err();
    assert!(matches!(err, PunchError::InvalidOption { .. }), "{err}");
    assert!(err.is_bad_input());
}

#[test]
fn a_file_that_shrank_under_a_read_is_reported() {
    let f = tmp();
    write_pattern(&f, 0..B);
    let t = Target::open(f.as_fd(), Operation::Collapse, false).unwrap();
    let mut buf = vec![0; 2 * B as usize];
    let err = t.read_exact(&mut buf, 0).unwrap_err();
    assert!(
        matches!(err, PunchError::FileShrank { offset, .. } if offset == B),
        "{err}"
    );
}

#[test]
fn the_chain_walks_on_only_for_unsupported_errnos() {
    let f = tmp();
    let t = Target::open(f.as_fd(), Operation::Punch, false).unwrap();
    let fail = |errno| Failure::Errno {
        call: "fallocate(TEST)",
        offset: 7,
        errno,
    };
    for errno in [
        Errno::OPNOTSUPP,
        Errno::NOSYS,
        Errno::INVAL,
        Errno::NODEV,
        Errno::NOTTY,
    ] {
        let (used, fallbacks, _) = run_chain(&t, PunchStrategy::Auto, |s| match s {
            PunchStrategy::PunchHole => Err(fail(errno)),
            _ => Ok(5),
        })
        .unwrap();
        assert_eq!(used, PunchStrategy::ZeroRange);
        assert_eq!(fallbacks.len(), 1);
        assert_eq!(fallbacks[0].errno, errno);
    }
    let err = run_chain(&t, PunchStrategy::Auto, |_| Err(fail(Errno::IO))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "punch: fallocate(TEST) at offset 7: EIO (Input/output error)"
    );
    // Unsupported to the end of the chain: the last strategy is named.
    let err = run_chain(&t, PunchStrategy::Auto, |_| Err(fail(Errno::OPNOTSUPP))).unwrap_err();
    assert!(
        matches!(
            err,
            PunchError::Unsupported {
                strategy: "write_zeros",
                ..
            }
        ),
        "{err}"
    );
}
