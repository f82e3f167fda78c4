use super::*;
use crate::file::faults;
use crate::shift::{collapse_chunked, insert_chunked};
use crate::{PunchError, ShiftStrategy, collapse_range, insert_range, punch_hole};
use rustix::fd::AsFd;
use rustix::fs::{SealFlags, fcntl_add_seals};
use rustix::io::Errno;

const MIB: u64 = 1 << 20;

/// 5 MiB - 100: data, a 1.5 MiB hole, data up to an unaligned end.
fn layered(f: &File) -> Vec<u8> {
    write_pattern(f, 0..3 * MIB / 2);
    write_pattern(f, 3 * MIB..5 * MIB - 100);
    contents(f)
}

fn collapsed(old: &[u8], offset: u64, length: u64) -> Vec<u8> {
    let mut v = old.to_vec();
    v.drain(offset as usize..(offset + length) as usize);
    v
}

fn inserted(old: &[u8], offset: u64, length: u64) -> Vec<u8> {
    let mut v = old.to_vec();
    let at = offset as usize;
    v.splice(at..at, std::iter::repeat_n(0, length as usize));
    v
}

#[test]
fn collapse_native_on_tmp() {
    let f = tmp();
    let old = layered(&f);
    let r = collapse_range(&f, 2 * B, 4 * B, ShiftStrategy::Auto).unwrap();
    assert_eq!(r.strategy, ShiftStrategy::Native);
    assert_eq!(r.size_after, 5 * MIB - 100 - 4 * B);
    assert_eq!(r.bytes_written, 0);
    assert_eq!(contents(&f), collapsed(&old, 2 * B, 4 * B));
}

#[test]
fn collapse_by_moving_data_keeps_holes_holes() {
    let f = tmp();
    let old = layered(&f);
    let before = allocated(&f);
    let r = collapse_range(&f, 2 * B, 4 * B, ShiftStrategy::MoveData).unwrap();
    assert_eq!(r.strategy, ShiftStrategy::MoveData);
    assert_eq!(contents(&f), collapsed(&old, 2 * B, 4 * B));
    // The hole moved down with the rest and was not filled.
    assert!(is_hole(&f, 3 * MIB / 2 - 4 * B..3 * MIB - 4 * B));
    // Only data was written: the old data minus the collapsed blocks and
    // the two blocks before the range that stayed put.
    assert_eq!(r.bytes_written, 3 * MIB / 2 - 6 * B + 2 * MIB - 100);
    assert!(
        r.allocated_after <= before,
        "{} > {before}",
        r.allocated_after
    );
}

#[test]
fn insert_native_on_tmp() {
    let f = tmp();
    let old = layered(&f);
    let r = insert_range(&f, 4 * B, 3 * B, ShiftStrategy::Auto).unwrap();
    assert_eq!(r.strategy, ShiftStrategy::Native);
    assert_eq!(contents(&f), inserted(&old, 4 * B, 3 * B));
    assert!(is_hole(&f, 4 * B..7 * B));
}

#[test]
fn insert_by_moving_data_keeps_holes_holes() {
    let f = tmp();
    let old = layered(&f);
    let before = allocated(&f);
    let r = insert_range(&f, 4 * B, 3 * B, ShiftStrategy::MoveData).unwrap();
    assert_eq!(r.strategy, ShiftStrategy::MoveData);
    assert_eq!(r.size_after, old.len() as u64 + 3 * B);
    assert_eq!(contents(&f), inserted(&old, 4 * B, 3 * B));
    assert!(is_hole(&f, 4 * B..7 * B));
    assert!(is_hole(&f, 3 * MIB / 2 + 3 * B..3 * MIB + 3 * B));
    assert!(
        r.allocated_after <= before + B,
        "{} > {before}",
        r.allocated_after
    );
}

#[test]
fn moves_shorter_than_a_chunk_never_overwrite_unread_data() {
    // A shift of one block with 16-block chunks: every chunk overlaps its
    // own destination.
    let f = tmp();
    write_pattern(&f, 0..200 * B + 7);
    let old = contents(&f);
    collapse_chunked(f.as_fd(), 3 * B, B, ShiftStrategy::MoveData, 16 * B).unwrap();
    assert_eq!(contents(&f), collapsed(&old, 3 * B, B));
    let old = contents(&f);
    insert_chunked(f.as_fd(), 5 * B, B, ShiftStrategy::MoveData, 16 * B).unwrap();
    assert_eq!(contents(&f), inserted(&old, 5 * B, B));
}

#[test]
fn insert_larger_than_the_rest_of_the_file() {
    let f = tmp();
    write_pattern(&f, 0..3 * B);
    let old = contents(&f);
    let r = insert_range(&f, B, 64 * B, ShiftStrategy::MoveData).unwrap();
    assert_eq!(r.size_after, 67 * B);
    assert_eq!(contents(&f), inserted(&old, B, 64 * B));
    assert!(is_hole(&f, B..65 * B));
}

#[test]
fn auto_on_tmpfs_moves_data_and_says_why() {
    let f = memfd();
    write_pattern(&f, 0..16 * B);
    punch_hole(&f, 8 * B, 4 * B, crate::PunchStrategy::Auto).unwrap();
    let old = contents(&f);
    let r = collapse_range(&f, B, 2 * B, ShiftStrategy::Auto).unwrap();
    assert_eq!(r.strategy, ShiftStrategy::MoveData);
    assert_eq!(r.fallbacks.len(), 1);
    assert_eq!(r.fallbacks[0].strategy, ShiftStrategy::Native);
    assert_eq!(r.fallbacks[0].errno, Errno::OPNOTSUPP);
    let old = collapsed(&old, B, 2 * B);
    assert_eq!(contents(&f), old);
    assert!(is_hole(&f, 6 * B..10 * B));
    let r = insert_range(&f, 2 * B, B, ShiftStrategy::Auto).unwrap();
    assert_eq!(r.strategy, ShiftStrategy::MoveData);
    assert_eq!(r.fallbacks[0].errno, Errno::OPNOTSUPP);
    assert_eq!(contents(&f), inserted(&old, 2 * B, B));
}

#[test]
fn forced_native_on_tmpfs_is_unsupported_and_changes_nothing() {
    let f = memfd();
    write_pattern(&f, 0..8 * B);
    let old = contents(&f);
    for err in [
        collapse_range(&f, B, B, ShiftStrategy::Native).unwrap_err(),
        insert_range(&f, B, B, ShiftStrategy::Native).unwrap_err(),
    ] {
        assert!(
            matches!(
                err,
                PunchError::Unsupported {
                    strategy: "native",
                    errno: Errno::OPNOTSUPP,
                    ..
                }
            ),
            "{err}"
        );
    }
    assert_eq!(contents(&f), old);
}

/// Pulls "collapsing offset X length Y" out of a Partial message.
fn resume_point(msg: &str) -> (u64, u64) {
    let rest = msg.split("collapsing offset ").nth(1).expect(msg);
    let mut words = rest.split_whitespace();
    let offset = words.next().unwrap().parse().unwrap();
    assert_eq!(words.next(), Some("length"));
    let length = words.next().unwrap().parse().unwrap();
    (offset, length)
}

#[test]
fn an_interrupted_collapse_resumes_where_the_message_says() {
    let _reset = faults();
    let f = tmp();
    write_pattern(&f, 0..40 * B);
    punch_hole(&f, 20 * B, 6 * B, crate::PunchStrategy::Auto).unwrap();
    let old = contents(&f);
    // Two-block chunks; the fifth write fails.
    faults::fail_writes_after(Some(4));
    let err =
        collapse_chunked(f.as_fd(), 4 * B, 3 * B, ShiftStrategy::MoveData, 2 * B).unwrap_err();
    assert!(err.changed_file());
    assert_eq!(contents(&f).len(), old.len(), "the size is kept");
    let (offset, length) = resume_point(&err.to_string());
    assert_eq!((offset, length), (12 * B, 3 * B), "{err}");
    faults::fail_writes_after(None);
    collapse_range(&f, offset, length, ShiftStrategy::MoveData).unwrap();
    assert_eq!(contents(&f), collapsed(&old, 4 * B, 3 * B));
}

#[test]
fn a_collapse_stopped_at_the_truncate_says_so() {
    let f = memfd();
    write_pattern(&f, 0..8 * B);
    let old = contents(&f);
    fcntl_add_seals(&f, SealFlags::SHRINK).unwrap();
    let err = collapse_range(&f, B, B, ShiftStrategy::Auto).unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.errno(), Some(Errno::PERM), "{msg}");
    assert!(msg.contains("ftruncate at offset 28672: EPERM"), "{msg}");
    assert!(
        msg.contains("truncating it to 28672 finishes the collapse"),
        "{msg}"
    );
    assert_eq!(contents(&f)[..7 * B as usize], collapsed(&old, B, B)[..]);
}

#[test]
fn an_interrupted_insert_says_what_is_left() {
    let _reset = faults();
    let f = tmp();
    write_pattern(&f, 0..20 * B);
    let old = contents(&f);
    faults::fail_writes_after(Some(3));
    let err = insert_chunked(f.as_fd(), 2 * B, 4 * B, ShiftStrategy::MoveData, 2 * B).unwrap_err();
    let msg = err.to_string();
    assert!(err.changed_file(), "{msg}");
    // Three 2-block chunks moved from the end: source from 14 blocks on is done.
    let want = format!(
        "bytes from {} on hold their final content and bytes below it still hold the old content; moving bytes {}..{} up by {} and punching offset {} length {} finish the insert",
        18 * B,
        2 * B,
        14 * B,
        4 * B,
        2 * B,
        4 * B
    );
    assert!(msg.contains(&want), "{msg}");
    // Doing what it says gives the inserted file.
    faults::fail_writes_after(None);
    let mut buf = vec![0; 12 * B as usize];
    f.read_exact_at(&mut buf, 2 * B).unwrap();
    f.write_all_at(&buf, 6 * B).unwrap();
    punch_hole(&f, 2 * B, 4 * B, crate::PunchStrategy::Auto).unwrap();
    assert_eq!(contents(&f), inserted(&old, 2 * B, 4 * B));
}

#[test]
fn an_insert_stopped_at_the_final_punch_says_so() {
    let _reset = faults();
    let f = tmp();
    write_pattern(&f, 0..8 * B);
    let old = contents(&f);
    // No holes to move: the only fallocate is the final punch of the gap.
    faults::fail_fallocates_after(Some(0), Errno::IO);
    let err = insert_range(&f, 2 * B, B, ShiftStrategy::MoveData).unwrap_err();
    let msg = err.to_string();
    assert!(err.changed_file(), "{msg}");
    assert!(
        msg.contains("all data is in place at its new offset (the file is 36864 bytes); punching offset 8192 length 4096 finishes the insert"),
        "{msg}"
    );
    faults::fail_fallocates_after(None, Errno::IO);
    punch_hole(&f, 2 * B, B, crate::PunchStrategy::Auto).unwrap();
    assert_eq!(contents(&f), inserted(&old, 2 * B, B));
}

#[test]
fn an_insert_past_the_maximum_file_size_changes_nothing() {
    let f = tmp();
    write_pattern(&f, 0..2 * B);
    let old = contents(&f);
    // 2^62 bytes: beyond ext4's and xfs's maximum file size.
    for strategy in [ShiftStrategy::Native, ShiftStrategy::MoveData] {
        let err = insert_range(&f, 0, 1 << 62, strategy).unwrap_err();
        assert_eq!(err.errno(), Some(Errno::FBIG), "{strategy}: {err}");
        assert!(!err.changed_file());
        assert_eq!(contents(&f), old);
    }
}

/// A map that calls data a hole (btrfs before 6.2 right after a write)
/// must not make a shift punch that data away: holes are read before the
/// destination is punched. Without the read, both shifts lost every byte
/// they moved.
#[test]
fn a_map_that_hides_data_loses_nothing() {
    let f = tmp();
    let old = layered(&f);
    let _lie = crate::mover::lying_map::every_extent_a_hole();
    collapse_range(&f, 2 * B, 4 * B, ShiftStrategy::MoveData).unwrap();
    let mid = collapsed(&old, 2 * B, 4 * B);
    assert_eq!(contents(&f), mid);
    insert_range(&f, 4 * B, 3 * B, ShiftStrategy::MoveData).unwrap();
    assert_eq!(contents(&f), inserted(&mid, 4 * B, 3 * B));
    // A real hole read as zeros is still punched, not written.
    assert!(is_hole(&f, 3 * MIB / 2..3 * MIB - 4 * B));
}
