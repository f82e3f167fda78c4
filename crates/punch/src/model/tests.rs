use super::*;
use crate::{PunchStrategy, ShiftStrategy, ZeroStrategy};
use rustix::fs::{MemfdFlags, memfd_create};
use std::fs::File;

const B: u64 = 4096;

fn write(offset: u64, length: u64) -> Op {
    Op::Write {
        offset,
        length,
        fill: Fill::Pattern(9),
    }
}

#[test]
fn model_collapse_and_insert_shift_bytes_and_allocation() {
    let mut m = Model::new();
    m.apply(&write(0, 3 * B), B, Effect::Unchanged);
    let third = m.bytes()[2 * B as usize];
    m.apply(
        &Op::Insert {
            offset: B,
            length: B,
        },
        B,
        Effect::Unchanged,
    );
    assert_eq!(m.len(), 4 * B);
    assert!(
        m.bytes()[B as usize..2 * B as usize]
            .iter()
            .all(|&b| b == 0)
    );
    assert_eq!(m.bytes()[3 * B as usize], third);
    // The inserted block is a hole: 3 of 4 blocks may be allocated.
    assert_eq!(m.allocation_bound(B), 3 * B);
    m.apply(
        &Op::Collapse {
            offset: 0,
            length: 2 * B,
        },
        B,
        Effect::Unchanged,
    );
    assert_eq!(m.len(), 2 * B);
    assert_eq!(m.bytes()[B as usize], third);
}

#[test]
fn model_punch_frees_only_whole_blocks() {
    let mut m = Model::new();
    m.apply(&write(0, 4 * B), B, Effect::Unchanged);
    m.apply(
        &Op::Punch {
            offset: 100,
            length: 2 * B,
        },
        B,
        Effect::Freed,
    );
    // Blocks 0 and 2 are partly punched and stay; block 1 is freed.
    assert_eq!(m.allocation_bound(B), 3 * B);
    assert!(
        m.bytes()[100..(100 + 2 * B) as usize]
            .iter()
            .all(|&b| b == 0)
    );
    assert_ne!(m.bytes()[99], 0);
}

#[test]
fn model_checks_mirror_the_library() {
    let mut m = Model::new();
    m.apply(&write(0, 2 * B), B, Effect::Unchanged);
    assert_eq!(
        m.check(
            &Op::Collapse {
                offset: B,
                length: B
            },
            B
        ),
        Err(RangeProblem::ReachesEof { size: 2 * B })
    );
    assert_eq!(
        m.check(
            &Op::Insert {
                offset: 2 * B,
                length: B
            },
            B
        ),
        Err(RangeProblem::AtOrPastEof { size: 2 * B })
    );
    assert_eq!(
        m.check(
            &Op::Insert {
                offset: 1,
                length: B
            },
            B
        ),
        Err(RangeProblem::Unaligned { alignment: B })
    );
    assert_eq!(
        m.check(
            &Op::Punch {
                offset: 0,
                length: 0
            },
            B
        ),
        Err(RangeProblem::Empty)
    );
    assert_eq!(
        m.check(
            &Op::Collapse {
                offset: 0,
                length: B
            },
            B
        ),
        Ok(())
    );
}

fn memfd() -> std::io::Result<File> {
    Ok(File::from(memfd_create(
        "sparsekit-punch-model",
        MemfdFlags::CLOEXEC,
    )?))
}

fn assert_passed(verdict: Verdict, must_use: &[&str]) {
    match verdict {
        Verdict::Passed { ops, used, .. } => {
            assert!(ops > 0);
            for u in must_use {
                assert!(used.contains(*u), "{u} not used; used: {used:?}");
            }
        }
        other => panic!("expected a pass, got {other:?}"),
    }
}

fn check(config: &Config, must_use: &[&str]) {
    let dir = std::env::temp_dir();
    match run(&dir, config) {
        Ok(v) => assert_passed(v, must_use),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn model_auto_on_tmp() {
    // /tmp is ext4 on the project machines: every native strategy exists.
    check(
        &Config::default(),
        &["punch=punch_hole", "collapse=native", "insert=native"],
    );
}

#[test]
fn model_native_forced_on_tmp() {
    check(
        &Config::forced(
            PunchStrategy::PunchHole,
            ZeroStrategy::ZeroRange,
            ShiftStrategy::Native,
        ),
        &["zero=zero_range"],
    );
}

#[test]
fn model_fallbacks_forced_on_tmp() {
    check(
        &Config::forced(
            PunchStrategy::WriteZeros,
            ZeroStrategy::WriteZeros,
            ShiftStrategy::MoveData,
        ),
        &[
            "punch=write_zeros",
            "zero=write_zeros",
            "collapse=move_data",
            "insert=move_data",
        ],
    );
}

#[test]
fn model_middle_fallbacks_forced_on_tmp() {
    check(
        &Config::forced(
            PunchStrategy::ZeroRange,
            ZeroStrategy::PunchAndAllocate,
            ShiftStrategy::MoveData,
        ),
        &["punch=zero_range", "zero=punch_and_allocate"],
    );
}

#[test]
fn model_dig_reading_everything_on_tmp() {
    let config = Config {
        dig_method: sparsekit_extents::Method::AllData,
        cases: 32,
        ..Config::default()
    };
    check(&config, &["dig=all_data"]);
}

#[test]
fn model_auto_on_memfd_takes_the_fallbacks() {
    // memfd is tmpfs: no ZERO_RANGE, no COLLAPSE_RANGE/INSERT_RANGE, so
    // Auto must move on and still agree with the model.
    match run_with(&memfd, &Config::default()) {
        Ok(v) => assert_passed(
            v,
            &[
                "punch=punch_hole",
                "zero=punch_and_allocate",
                "collapse=move_data",
                "insert=move_data",
            ],
        ),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn model_reports_unsupported_forced_strategies_as_such() {
    let config = Config::forced(
        PunchStrategy::Auto,
        ZeroStrategy::Auto,
        ShiftStrategy::Native,
    );
    match run_with(&memfd, &config) {
        Ok(Verdict::Unsupported { op, strategy, .. }) => {
            assert_eq!(op, crate::Operation::Collapse);
            assert_eq!(strategy, "native");
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

#[test]
fn the_comparison_catches_every_kind_of_difference() {
    use std::os::unix::fs::FileExt;
    let config = Config {
        alloc_slack_blocks: 0,
        ..Config::default()
    };
    let file = tempfile::tempfile_in(std::env::temp_dir()).unwrap();
    file.write_all_at(b"x", 0).unwrap();
    let err = super::runner::compare(&file, &Model::new(), B, &config).unwrap_err();
    assert!(err.contains("size differs"), "{err}");

    let mut model = Model::new();
    model.apply(&write(0, 1), B, Effect::Unchanged);
    let err = super::runner::compare(&file, &model, B, &config).unwrap_err();
    assert!(err.contains("content differs at offset 0"), "{err}");

    // Explicit zeros on disk where the model has a hole: same content, but
    // more allocated than the model allows.
    let file = tempfile::tempfile_in(std::env::temp_dir()).unwrap();
    file.write_all_at(&vec![0; 2 * B as usize], 0).unwrap();
    let mut model = Model::new();
    model.apply(&Op::Truncate { size: 2 * B }, B, Effect::Unchanged);
    let err = super::runner::compare(&file, &model, B, &config).unwrap_err();
    assert!(
        err.contains("allocated, more than the model allows"),
        "{err}"
    );
}
