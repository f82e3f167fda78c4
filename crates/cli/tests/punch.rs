//! `sparsekit punch|zero|collapse|insert|dig` end to end on /tmp: what they
//! print, what they change, and the exit codes of their errors.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const B: usize = 4096;

fn sparsekit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sparsekit"))
        .args(args)
        .output()
        .unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn pattern(len: usize) -> Vec<u8> {
    sparsekit_sys::pattern(1, len as u64)
}

/// A file of `len` pattern bytes in a fresh directory.
fn image(len: usize) -> (tempfile::TempDir, PathBuf, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    let data = pattern(len);
    std::fs::write(&path, &data).unwrap();
    (dir, path, data)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn punch_prints_what_it_did_and_the_strategy() {
    let (_d, path, data) = image(16 * B);
    let o = sparsekit(&["punch", s(&path), "--offset", "4K", "--length", "8K"]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        out(&o).contains("disk.img: punched 8.0 KiB at offset 4096 with punch_hole; "),
        "{}",
        out(&o)
    );
    let now = std::fs::read(&path).unwrap();
    assert!(now[B..3 * B].iter().all(|&b| b == 0));
    assert_eq!(now[..B], data[..B]);
    assert_eq!(now[3 * B..], data[3 * B..]);
}

#[test]
fn every_strategy_can_be_forced_from_the_command_line() {
    for (cmd, strategy, name) in [
        ("punch", "punch-hole", "punch_hole"),
        ("punch", "zero-range", "zero_range"),
        ("punch", "write-zeros", "write_zeros"),
        ("zero", "zero-range", "zero_range"),
        ("zero", "punch-and-allocate", "punch_and_allocate"),
        ("zero", "write-zeros", "write_zeros"),
        ("collapse", "native", "native"),
        ("collapse", "move-data", "move_data"),
        ("insert", "native", "native"),
        ("insert", "move-data", "move_data"),
    ] {
        let (_d, path, _) = image(16 * B);
        let o = sparsekit(&[
            cmd,
            s(&path),
            "--offset",
            "4096",
            "--length",
            "4096",
            "--strategy",
            strategy,
            "--json",
        ]);
        assert!(o.status.success(), "{cmd} {strategy}: {}", err(&o));
        let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
        assert_eq!(v["strategy"], name, "{cmd}");
        assert_eq!(v["operation"], cmd);
        let size = std::fs::metadata(&path).unwrap().len();
        let want = match cmd {
            "collapse" => 15 * B,
            "insert" => 17 * B,
            _ => 16 * B,
        } as u64;
        assert_eq!(v["size_after"], want, "{cmd}");
        assert_eq!(size, want, "{cmd}");
    }
}

#[test]
fn collapse_and_insert_move_the_rest_of_the_file() {
    let (_d, path, data) = image(16 * B);
    let o = sparsekit(&["collapse", s(&path), "--offset", "4K", "--length", "4K"]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).contains("size 65536 -> 61440 bytes"), "{}", out(&o));
    let mut want = data.clone();
    want.drain(B..2 * B);
    assert_eq!(std::fs::read(&path).unwrap(), want);

    let o = sparsekit(&["insert", s(&path), "--offset", "8K", "--length", "8K"]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        out(&o).contains("inserted a 8.0 KiB hole at offset 8192"),
        "{}",
        out(&o)
    );
    want.splice(2 * B..2 * B, std::iter::repeat_n(0, 2 * B));
    assert_eq!(std::fs::read(&path).unwrap(), want);
}

#[test]
fn unaligned_collapse_exits_2_naming_the_alignment() {
    let (_d, path, data) = image(16 * B);
    let o = sparsekit(&["collapse", s(&path), "--offset", "100", "--length", "4K"]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(
        err(&o).contains("disk.img: collapse: invalid range (offset 100, length 4096)"),
        "{}",
        err(&o)
    );
    assert!(
        err(&o).contains("multiples of the filesystem block size, 4096 bytes"),
        "{}",
        err(&o)
    );
    assert_eq!(std::fs::read(&path).unwrap(), data);
}

#[test]
fn bad_ranges_exit_2_and_touch_nothing() {
    let (_d, path, data) = image(4 * B);
    for args in [
        vec!["punch", s(&path), "--offset", "0", "--length", "0"],
        vec!["zero", s(&path), "--offset", "8388607T", "--length", "2T"],
        vec!["collapse", s(&path), "--offset", "0", "--length", "16K"],
        vec!["insert", s(&path), "--offset", "16K", "--length", "4K"],
    ] {
        let o = sparsekit(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", err(&o));
        assert!(err(&o).contains("disk.img"), "{}", err(&o));
    }
    // Negative numbers never parse.
    let o = sparsekit(&["punch", s(&path), "--offset", "-1", "--length", "4K"]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert_eq!(std::fs::read(&path).unwrap(), data);
}

#[test]
fn wrong_kinds_of_file_exit_2_and_missing_files_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let o = sparsekit(&["punch", s(dir.path()), "--offset", "0", "--length", "4K"]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(
        err(&o).contains("not a regular file (it is a directory)"),
        "{}",
        err(&o)
    );
    let o = sparsekit(&["dig", "/dev/null"]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(
        err(&o).contains("/dev/null: dig: not a regular file (it is a character device)"),
        "{}",
        err(&o)
    );
    let missing = dir.path().join("nope.img");
    let o = sparsekit(&["zero", s(&missing), "--offset", "0", "--length", "4K"]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("nope.img: open: ENOENT"), "{}", err(&o));
}

/// 2 MiB of pattern with a 256 KiB run of explicit zeros.
fn image_with_zeros() -> (tempfile::TempDir, PathBuf, Vec<u8>) {
    let (d, path, _) = image(2 << 20);
    let f = File::options().write(true).open(&path).unwrap();
    f.write_all_at(&vec![0; 256 << 10], 1 << 20).unwrap();
    f.sync_all().unwrap();
    let data = std::fs::read(&path).unwrap();
    (d, path, data)
}

#[test]
fn dig_json_reports_and_content_is_unchanged() {
    let (_d, path, data) = image_with_zeros();
    let before = std::fs::metadata(&path).unwrap().blocks() * 512;
    let o = sparsekit(&["dig", s(&path), "--json"]);
    assert!(o.status.success(), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(v["dry_run"], false);
    assert_eq!(v["holes_punched"], 1);
    assert_eq!(v["zero_bytes"], 256 << 10);
    assert_eq!(v["bytes_scanned"], 2 << 20);
    // "direct" where the directory's filesystem takes O_DIRECT (observed
    // on a file of its own), else the page-cache path's "dropped".
    let probe = std::fs::File::create(path.with_extension("probe")).unwrap();
    let direct = rustix::fs::fcntl_setfl(&probe, rustix::fs::OFlags::DIRECT).is_ok();
    assert_eq!(v["cache"], if direct { "direct" } else { "dropped" });
    assert_eq!(v["method"], "seek");
    assert_eq!(
        v["fallbacks"],
        serde_json::json!([]),
        "SEEK worked: nothing left"
    );
    let after = std::fs::metadata(&path).unwrap().blocks() * 512;
    assert_eq!(v["bytes_deallocated"], before - after);
    assert!(before - after >= 256 << 10);
    assert_eq!(std::fs::read(&path).unwrap(), data);
}

#[test]
fn dig_dry_run_changes_nothing_and_says_so() {
    let (_d, path, data) = image_with_zeros();
    let before = std::fs::metadata(&path).unwrap().blocks();
    let o = sparsekit(&["dig", s(&path), "--dry-run", "--min-hole", "64K"]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        out(&o).contains(
            "would punch 1 hole (256.0 KiB of zeros) in 2.0 MiB of data; nothing changed"
        ),
        "{}",
        out(&o)
    );
    assert_eq!(std::fs::metadata(&path).unwrap().blocks(), before);
    assert_eq!(std::fs::read(&path).unwrap(), data);
}

#[test]
fn dig_min_hole_larger_than_the_run_punches_nothing() {
    let (_d, path, _) = image_with_zeros();
    let o = sparsekit(&["dig", s(&path), "--min-hole", "1M", "--method", "all-data"]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).contains("punched 0 holes"), "{}", out(&o));
    assert!(out(&o).contains("method all_data"), "{}", out(&o));
}
