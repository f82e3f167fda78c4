//! `sparsekit clone` and `sparsekit dedupe` end to end on /tmp: exit codes,
//! messages, and no file left behind. /tmp is ext4 on the project's
//! machines (no reflink); on a developer's xfs or btrfs /tmp the clone
//! cases assert success instead. Real sharing is proved in the bench.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

fn sparsekit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sparsekit"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn fs_name(dir: &Path) -> String {
    let f = File::open(dir).unwrap();
    sparsekit_sys::fstype::FsType::of(&f).unwrap().to_string()
}

fn write(path: &Path, byte: u8, len: usize) {
    File::create(path)
        .unwrap()
        .write_all(&vec![byte; len])
        .unwrap();
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn clone_where_unsupported_exits_1_naming_fs_and_errno_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("a.img"), dir.path().join("b.img"));
    write(&src, 1, 65536);
    let fs = fs_name(dir.path());
    let out = sparsekit(&["clone", s(&src), s(&dst)]);
    match fs.as_str() {
        "ext4" | "tmpfs" => {
            assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
            let expected = format!("reflink not supported on {fs} (EOPNOTSUPP)");
            assert!(stderr(&out).contains(&expected), "{}", stderr(&out));
            assert!(stderr(&out).contains("b.img"), "{}", stderr(&out));
            assert!(!dst.exists(), "no empty file may be left behind");
            // A range clone into a new file: same.
            let out = sparsekit(&["clone", s(&src), s(&dst), "--length", "4K"]);
            assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
            assert!(!dst.exists());
        }
        "xfs" | "btrfs" => {
            assert!(out.status.success(), "{}", stderr(&out));
            assert_eq!(std::fs::read(&dst).unwrap(), std::fs::read(&src).unwrap());
        }
        other => panic!("unexpected /tmp filesystem {other}"),
    }
}

#[test]
fn dedupe_where_unsupported_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    write(&a, 1, 8192);
    write(&b, 1, 8192);
    let fs = fs_name(dir.path());
    let out = sparsekit(&[
        "dedupe",
        s(&a),
        s(&b),
        "--src-offset",
        "0",
        "--dst-offset",
        "0",
        "--length",
        "8K",
    ]);
    if matches!(fs.as_str(), "ext4" | "tmpfs") {
        assert_eq!(out.status.code(), Some(1));
        let expected = format!("dedupe not supported on {fs} (EOPNOTSUPP)");
        assert!(stderr(&out).contains(&expected), "{}", stderr(&out));
    } else {
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("deduped 8.0 KiB"));
    }
    assert_eq!(std::fs::read(&b).unwrap(), vec![1; 8192]);
}

#[test]
fn bad_requests_exit_2_and_touch_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("a.img"), dir.path().join("b.img"));
    write(&src, 1, 16384);
    let cases: &[(&[&str], &str)] = &[
        (
            &["--src-offset", "100"],
            "source offset 100 is not a multiple",
        ),
        (&["--length", "1000"], "length 1000 is not a multiple"),
        (
            &["--src-offset", "16K", "--length", "4K"],
            "past the end of the file (size 16384)",
        ),
    ];
    for (extra, message) in cases {
        let mut args = vec!["clone", s(&src), s(&dst)];
        args.extend_from_slice(extra);
        let out = sparsekit(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
        assert!(!dst.exists(), "{args:?} left {dst:?}");
    }
    // Same file, overlapping ranges, a directory destination.
    let out = sparsekit(&["clone", s(&src), s(&src)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("same file"), "{}", stderr(&out));
    let out = sparsekit(&[
        "clone",
        s(&src),
        s(&src),
        "--dst-offset",
        "4K",
        "--length",
        "8K",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("overlap"), "{}", stderr(&out));
    let out = sparsekit(&["clone", s(&src), s(dir.path())]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("directory"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&src).unwrap(), vec![1; 16384]);
    // Dedupe needs all three range options: clap says so, exit 2.
    let out = sparsekit(&["dedupe", s(&src), s(&src)]);
    assert_eq!(out.status.code(), Some(2));
    // Unparseable size.
    let out = sparsekit(&["clone", s(&src), s(&dst), "--length", "12X"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_missing_source_exits_1_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.img");
    let dst = dir.path().join("b.img");
    let out = sparsekit(&["clone", s(&missing), s(&dst)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("missing.img: open: ENOENT"),
        "{}",
        stderr(&out)
    );
    assert!(!dst.exists());
}
