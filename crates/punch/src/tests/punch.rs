use super::*;
use crate::file::faults;
use crate::{PunchError, PunchStrategy, Strategy, ZeroStrategy, punch_hole, zero_range};
use rustix::io::Errno;

#[test]
fn punch_frees_whole_blocks_and_zeroes_the_edges() {
    let f = tmp();
    write_pattern(&f, 0..64 * 1024);
    f.sync_all().unwrap();
    let before = contents(&f);
    let r = punch_hole(&f, 1000, 20000, PunchStrategy::Auto).unwrap();
    assert_eq!(r.strategy, PunchStrategy::PunchHole);
    assert!(r.fallbacks.is_empty());
    assert_eq!(r.size_after, 64 * 1024);
    assert_eq!(r.whole_blocks(), B..5 * B);
    assert_eq!(r.freed(), 4 * B);
    assert_eq!(r.bytes_written, 0);
    let after = contents(&f);
    assert!(after[1000..21000].iter().all(|&b| b == 0));
    assert_eq!(after[..1000], before[..1000]);
    assert_eq!(after[21000..], before[21000..]);
    assert!(is_hole(&f, B..5 * B));
}

#[test]
fn punch_past_the_end_keeps_the_size() {
    let f = tmp();
    write_pattern(&f, 0..3 * B);
    let r = punch_hole(&f, 2 * B, 10 * B, PunchStrategy::PunchHole).unwrap();
    assert_eq!(r.size_after, 3 * B);
    assert!(contents(&f)[2 * B as usize..].iter().all(|&b| b == 0));
    // Entirely past the end: nothing to change, still fine.
    let r = punch_hole(&f, 100 * B, B, PunchStrategy::Auto).unwrap();
    assert_eq!(r.size_after, 3 * B);
}

#[test]
fn punch_forced_zero_range_reads_zeros_but_frees_nothing() {
    let f = tmp();
    write_pattern(&f, 0..16 * B);
    f.sync_all().unwrap();
    let r = punch_hole(&f, B, 4 * B, PunchStrategy::ZeroRange).unwrap();
    assert_eq!(r.strategy, PunchStrategy::ZeroRange);
    assert_eq!(r.freed(), 0);
    assert!(
        contents(&f)[B as usize..5 * B as usize]
            .iter()
            .all(|&b| b == 0)
    );
}

#[test]
fn punch_forced_write_zeros_skips_holes() {
    let f = tmp();
    write_pattern(&f, 0..2 * B);
    write_pattern(&f, 256 * B..258 * B);
    let before = allocated(&f);
    let r = punch_hole(&f, B, 256 * B, PunchStrategy::WriteZeros).unwrap();
    assert_eq!(r.strategy, PunchStrategy::WriteZeros);
    // Only the two data blocks inside the range were written.
    assert_eq!(r.bytes_written, 2 * B);
    assert!(allocated(&f) <= before);
    let after = contents(&f);
    assert!(after[B as usize..257 * B as usize].iter().all(|&b| b == 0));
    assert_ne!(after[0], 0);
    assert_ne!(after[257 * B as usize], 0);
    assert!(is_hole(&f, 2 * B..256 * B));
}

#[test]
fn punch_write_zeros_stops_at_the_end_of_the_file() {
    let f = tmp();
    write_pattern(&f, 0..B + 10);
    let r = punch_hole(&f, B, 8 * B, PunchStrategy::WriteZeros).unwrap();
    assert_eq!(r.bytes_written, 10);
    assert_eq!(r.size_after, B + 10);
}

#[test]
fn punch_an_errno_other_than_unsupported_stops_the_chain() {
    let _reset = faults();
    let f = tmp();
    write_pattern(&f, 0..4 * B);
    let before = contents(&f);
    faults::fail_fallocates_after(Some(0), Errno::NOSPC);
    let err = punch_hole(&f, 0, 2 * B, PunchStrategy::Auto).unwrap_err();
    assert!(
        matches!(
            err,
            PunchError::Io {
                errno: Errno::NOSPC,
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.changed_file());
    assert!(
        err.to_string()
            .contains("fallocate(PUNCH_HOLE|KEEP_SIZE) at offset 0: ENOSPC"),
        "{err}"
    );
    assert_eq!(contents(&f), before);
}

#[test]
fn punch_auto_falls_back_to_zero_range_then_write_zeros() {
    let _reset = faults();
    let f = tmp();
    write_pattern(&f, 0..4 * B);
    // Every fallocate "unsupported": PUNCH_HOLE and ZERO_RANGE are left
    // behind and the zeros are written.
    faults::fail_fallocates_after(Some(0), Errno::OPNOTSUPP);
    let r = punch_hole(&f, 0, 2 * B, PunchStrategy::Auto).unwrap();
    assert_eq!(r.strategy, PunchStrategy::WriteZeros);
    let from: Vec<_> = r
        .fallbacks
        .iter()
        .map(|fb| (fb.strategy, fb.errno))
        .collect();
    assert_eq!(
        from,
        vec![
            (PunchStrategy::PunchHole, Errno::OPNOTSUPP),
            (PunchStrategy::ZeroRange, Errno::OPNOTSUPP)
        ]
    );
    assert_eq!(r.bytes_written, 2 * B);
    assert!(contents(&f)[..2 * B as usize].iter().all(|&b| b == 0));
    assert_eq!(
        r.fallbacks[0].to_string(),
        "punch_hole: EOPNOTSUPP (Operation not supported)"
    );
}

#[test]
fn punch_forced_unsupported_changes_nothing() {
    let _reset = faults();
    let f = tmp();
    write_pattern(&f, 0..4 * B);
    let before = contents(&f);
    faults::fail_fallocates_after(Some(0), Errno::OPNOTSUPP);
    let err = punch_hole(&f, 0, 2 * B, PunchStrategy::PunchHole).unwrap_err();
    assert!(
        matches!(
            err,
            PunchError::Unsupported {
                strategy: "punch_hole",
                errno: Errno::OPNOTSUPP,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(contents(&f), before);
}

#[test]
fn zero_range_keeps_the_range_allocated() {
    let f = tmp();
    write_pattern(&f, 0..16 * B);
    f.sync_all().unwrap();
    let before = allocated(&f);
    let r = zero_range(&f, B + 5, 4 * B, ZeroStrategy::Auto).unwrap();
    assert_eq!(r.strategy, ZeroStrategy::ZeroRange);
    assert_eq!(r.allocated_after, before);
    let after = contents(&f);
    assert!(
        after[(B + 5) as usize..(5 * B + 5) as usize]
            .iter()
            .all(|&b| b == 0)
    );
    assert_ne!(after[(B + 4) as usize], 0);
    assert_ne!(after[(5 * B + 5) as usize], 0);
}

#[test]
fn zero_range_allocates_a_hole_and_never_past_the_end() {
    for strategy in ZeroStrategy::CHAIN {
        let f = tmp();
        f.set_len(64 * B).unwrap();
        let r = zero_range(&f, 8 * B, 100 * B, *strategy).unwrap();
        assert_eq!(r.strategy, *strategy);
        assert_eq!(r.size_after, 64 * B, "{strategy}");
        // The 56 blocks inside the file are allocated, none past the end.
        assert!(
            r.allocated_after >= 56 * B,
            "{strategy}: {}",
            r.allocated_after
        );
        assert!(
            r.allocated_after <= 60 * B,
            "{strategy}: {}",
            r.allocated_after
        );
        assert!(contents(&f).iter().all(|&b| b == 0));
    }
}

#[test]
fn zero_range_auto_on_tmpfs_punches_and_allocates() {
    let f = memfd();
    write_pattern(&f, 0..8 * B);
    let r = zero_range(&f, B, 2 * B, ZeroStrategy::Auto).unwrap();
    assert_eq!(r.strategy, ZeroStrategy::PunchAndAllocate);
    assert_eq!(r.fallbacks.len(), 1);
    assert_eq!(r.fallbacks[0].strategy, ZeroStrategy::ZeroRange);
    assert_eq!(r.fallbacks[0].errno, Errno::OPNOTSUPP);
    assert_eq!(r.allocated_after, 8 * B);
    assert!(
        contents(&f)[B as usize..3 * B as usize]
            .iter()
            .all(|&b| b == 0)
    );
}

#[test]
fn auto_never_claims_a_native_call_it_did_not_make() {
    // tmpfs has no ZERO_RANGE: a zero entirely past the end must not report it.
    let f = memfd();
    write_pattern(&f, 0..B);
    let r = zero_range(&f, 10 * B, B, ZeroStrategy::Auto).unwrap();
    assert_eq!(r.strategy, ZeroStrategy::WriteZeros);
    assert_eq!(r.bytes_written, 0);
    assert!(r.fallbacks.is_empty());
}

#[test]
fn zero_range_entirely_past_the_end_does_nothing() {
    let f = tmp();
    write_pattern(&f, 0..B);
    let r = zero_range(&f, 10 * B, B, ZeroStrategy::WriteZeros).unwrap();
    assert_eq!(r.bytes_written, 0);
    assert_eq!(r.size_after, B);
}

#[test]
fn zero_range_punch_then_failed_allocation_is_partial() {
    let _reset = faults();
    let f = tmp();
    write_pattern(&f, 0..8 * B);
    // The first allocation and the punch pass, the second allocation fails.
    faults::fail_fallocates_after(Some(2), Errno::NOSPC);
    let err = zero_range(&f, B, 2 * B, ZeroStrategy::PunchAndAllocate).unwrap_err();
    assert!(err.changed_file());
    assert_eq!(err.errno(), Some(Errno::NOSPC));
    let msg = err.to_string();
    assert!(msg.contains("bytes 4096..12288 read as zeros"), "{msg}");
    assert!(msg.contains("not allocated again"), "{msg}");
    assert!(
        contents(&f)[B as usize..3 * B as usize]
            .iter()
            .all(|&b| b == 0)
    );
}

#[test]
fn zero_range_unsupported_allocation_falls_back_to_writing_zeros() {
    let _reset = faults();
    let f = memfd();
    write_pattern(&f, 0..8 * B);
    // ZERO_RANGE really is unsupported on tmpfs (call 1, real), the first
    // allocation and the punch pass (2, 3), the second allocation "fails"
    // as unsupported (4): the range reads as zeros, WriteZeros allocates it.
    faults::fail_fallocates_after(Some(3), Errno::OPNOTSUPP);
    let r = zero_range(&f, B, 2 * B, ZeroStrategy::Auto).unwrap();
    assert_eq!(r.strategy, ZeroStrategy::WriteZeros);
    assert_eq!(r.fallbacks.len(), 2);
    assert_eq!(r.bytes_written, 2 * B);
    assert_eq!(r.allocated_after, 8 * B);
}

#[test]
fn punch_and_allocate_where_allocation_is_unsupported_changes_nothing() {
    let _reset = faults();
    let f = tmp();
    write_pattern(&f, 0..8 * B);
    let old = contents(&f);
    // The first call, the trial allocation, is "unsupported".
    faults::fail_fallocates_after(Some(0), Errno::OPNOTSUPP);
    let err = zero_range(&f, B, 2 * B, ZeroStrategy::PunchAndAllocate).unwrap_err();
    assert!(
        matches!(
            err,
            PunchError::Unsupported {
                strategy: "punch_and_allocate",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(contents(&f), old);
}

#[test]
fn write_zeros_failing_midway_is_partial_and_rerunnable() {
    let _reset = faults();
    let f = tmp();
    write_pattern(&f, 0..3 << 20);
    faults::fail_writes_after(Some(1));
    let err = zero_range(&f, 0, 3 << 20, ZeroStrategy::WriteZeros).unwrap_err();
    let msg = err.to_string();
    assert!(err.changed_file(), "{msg}");
    assert!(msg.contains("1048576 bytes written"), "{msg}");
    assert!(msg.contains("pwrite at offset 1048576: EIO"), "{msg}");
    faults::fail_writes_after(None);
    zero_range(&f, 0, 3 << 20, ZeroStrategy::WriteZeros).unwrap();
    assert!(contents(&f).iter().all(|&b| b == 0));
}
