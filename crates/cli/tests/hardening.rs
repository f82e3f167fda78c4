//! Issue 11's command-line cases, end to end: SIZE values that wrapped to
//! 0, output to a full disk or a closed pipe, FIFOs and other special files,
//! dangling symbolic links, `copy SRC newdir/`, `--length 0`, and
//! `--timeout`. Every command that takes the input is run; each case first
//! reproduced the bug (a wrong byte, a panic with exit 101, a hang).

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const B: usize = 4096;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sparsekit"))
}

/// Runs with stdout and stderr captured, killing it after 20 s: a hang is
/// a failure, not a stuck test run.
fn run_with(mut cmd: Command, args: &[&str]) -> Output {
    cmd.args(args).stdin(Stdio::null());
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("sparsekit {args:?} hung (killed after 20 s)");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().unwrap()
}

fn sparsekit(args: &[&str]) -> Output {
    run_with(bin(), args)
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn pattern(len: usize) -> Vec<u8> {
    sparsekit_sys::pattern(1, len as u64)
}

/// A directory with `a.img` and `b.img` (64 KiB of pattern each).
fn images() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
    std::fs::write(&a, pattern(16 * B)).unwrap();
    std::fs::write(&b, pattern(16 * B)).unwrap();
    (dir, a, b)
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

// ---- 1. SIZE parsing ------------------------------------------------------

#[test]
fn sizes_that_wrapped_to_zero_or_were_rounded_are_usage_errors() {
    let (_d, a, _) = images();
    let before = std::fs::read(&a).unwrap();
    for offset in [
        "16383.99999999999999999P",
        "18446744073709551615.99999999999999999",
        "18446744073709551615",
        "1.5",
        "0.1K",
    ] {
        for cmd in ["punch", "zero", "collapse", "insert"] {
            let o = sparsekit(&[cmd, s(&a), "--offset", offset, "--length", "64K"]);
            assert_eq!(
                o.status.code(),
                Some(2),
                "{cmd} --offset {offset}: {}",
                err(&o)
            );
            assert!(err(&o).contains(offset), "{}", err(&o));
        }
    }
    let o = sparsekit(&["punch", s(&a), "--offset", "4K", "--length", "1.5"]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(
        err(&o).contains("not a whole number of bytes"),
        "{}",
        err(&o)
    );
    assert_eq!(std::fs::read(&a).unwrap(), before, "the file was changed");
    // A fraction that makes whole bytes is fine.
    let o = sparsekit(&["punch", s(&a), "--offset", "0.5K", "--length", "1.5K"]);
    assert!(o.status.success(), "{}", err(&o));
    let now = std::fs::read(&a).unwrap();
    assert!(now[512..2048].iter().all(|&b| b == 0));
    assert_eq!(now[..512], before[..512]);
    assert_eq!(now[2048..], before[2048..]);
}

#[test]
fn clone_and_dedupe_ranges_past_the_largest_offset_touch_nothing() {
    let (d, a, b) = images();
    let before = std::fs::read(&b).unwrap();
    for args in [
        vec![
            "clone",
            s(&a),
            s(&b),
            "--dst-offset",
            "16383.99999999999999999P",
            "--length",
            "64K",
        ],
        vec![
            "clone",
            s(&a),
            s(&b),
            "--dst-offset",
            "8191P",
            "--length",
            "2P",
        ],
        vec![
            "clone",
            s(&a),
            s(&b),
            "--src-offset",
            "9223372036854775807",
            "--length",
            "4K",
        ],
        vec![
            "dedupe",
            s(&a),
            s(&b),
            "--src-offset",
            "0",
            "--dst-offset",
            "8191P",
            "--length",
            "2P",
        ],
    ] {
        let o = sparsekit(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", err(&o));
    }
    let o = sparsekit(&[
        "clone",
        s(&a),
        s(&d.path().join("new.img")),
        "--dst-offset",
        "8191P",
        "--length",
        "2P",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(
        err(&o).contains("past the largest file offset"),
        "{}",
        err(&o)
    );
    assert_eq!(std::fs::read(&b).unwrap(), before);
    assert_eq!(names_in(d.path()), ["a.img", "b.img"]);
}

// ---- 4. --length 0 --------------------------------------------------------

#[test]
fn clone_and_dedupe_refuse_length_zero() {
    let (d, a, b) = images();
    let o = sparsekit(&["clone", s(&a), s(&d.path().join("c.img")), "--length", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(
        err(&o).contains("omit --length to clone to the end"),
        "{}",
        err(&o)
    );
    let o = sparsekit(&[
        "dedupe",
        s(&a),
        s(&b),
        "--src-offset",
        "0",
        "--dst-offset",
        "0",
        "--length",
        "0",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(err(&o).contains("--length 0 is refused"), "{}", err(&o));
    assert_eq!(names_in(d.path()), ["a.img", "b.img"]);
}

// ---- 2. stdout errors ------------------------------------------------------

/// Every command that succeeds here, with what it changes (`true`: the
/// report must say the operation completed).
fn succeeding_commands(dir: &Path, a: &Path) -> Vec<(Vec<String>, bool)> {
    let a = s(a).to_owned();
    let dst = s(&dir.join("copy.img")).to_owned();
    let range = |cmd: &str| {
        vec![
            cmd.to_owned(),
            a.clone(),
            "--offset".into(),
            "4K".into(),
            "--length".into(),
            "4K".into(),
        ]
    };
    let v = |args: &[&str]| args.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    vec![
        (v(&["map", &a]), false),
        (v(&["map", "--json", &a]), false),
        (v(&["stat", &a]), false),
        (v(&["stat", "--json", &a]), false),
        (v(&["caps", s(dir)]), false),
        (v(&["dig", "--dry-run", &a]), false),
        (range("punch"), true),
        (range("zero"), true),
        (range("collapse"), true),
        (range("insert"), true),
        (v(&["dig", &a]), true),
        (v(&["dig", "--json", &a]), true),
        (v(&["copy", "--no-progress", &a, &dst]), true),
        (v(&["copy", "--no-progress", "--json", &a, &dst]), true),
    ]
}

#[test]
fn a_full_stdout_is_exit_1_with_a_message_never_a_panic() {
    let (d, a, _) = images();
    for (args, changes) in succeeding_commands(d.path(), &a) {
        let mut cmd = bin();
        cmd.stdout(
            std::fs::File::options()
                .write(true)
                .open("/dev/full")
                .unwrap(),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = cmd.args(&args).stderr(Stdio::piped()).spawn().unwrap();
        let status = child.wait().unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut text).unwrap();
        assert_eq!(status.code(), Some(1), "{args:?}: {text}");
        assert!(!text.contains("panicked"), "{args:?}: {text}");
        assert!(text.contains("stdout: write: ENOSPC"), "{args:?}: {text}");
        assert_eq!(
            text.contains("the operation itself completed, only this report was lost"),
            changes,
            "{args:?}: {text}"
        );
    }
}

#[test]
fn a_closed_pipe_is_exit_0_never_a_panic() {
    let (d, a, _) = images();
    for (args, _) in succeeding_commands(d.path(), &a) {
        let (reader, writer) = rustix::pipe::pipe().unwrap();
        drop(reader);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = bin()
            .args(&args)
            .stdout(Stdio::from(writer))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", err(&o));
        assert!(!err(&o).contains("panicked"), "{args:?}: {}", err(&o));
    }
}

// ---- 3. FIFOs and other special files --------------------------------------

#[test]
fn fifos_are_refused_at_once_with_exit_2_and_nothing_created() {
    let (d, a, _) = images();
    let fifo = d.path().join("pipe");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    let (f, a) = (s(&fifo), s(&a));
    let out = s(&d.path().join("out.img")).to_owned();
    let range = ["--offset", "0", "--length", "4K"];
    let dd = ["--src-offset", "0", "--dst-offset", "0", "--length", "4K"];
    let cases: Vec<Vec<&str>> = vec![
        vec!["map", f],
        vec!["dig", f],
        vec!["dig", "--dry-run", f],
        [&["punch", f][..], &range].concat(),
        [&["zero", f][..], &range].concat(),
        [&["collapse", f][..], &range].concat(),
        [&["insert", f][..], &range].concat(),
        vec!["copy", f, &out],
        vec!["copy", a, f],
        vec!["clone", f, &out],
        vec!["clone", a, f, "--length", "4K"],
        [&["dedupe", f, a][..], &dd].concat(),
        [&["dedupe", a, f][..], &dd].concat(),
        vec!["caps", f],
    ];
    for args in cases {
        let start = Instant::now();
        let o = sparsekit(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", err(&o));
        assert!(err(&o).contains("(it is a fifo)"), "{args:?}: {}", err(&o));
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{args:?} was slow"
        );
    }
    // stat describes a fifo without opening it.
    assert!(sparsekit(&["stat", f]).status.success());
    assert_eq!(names_in(d.path()), ["a.img", "b.img", "pipe"]);
    // A character device: map and copy refuse it the same way.
    let o = sparsekit(&["map", "/dev/null"]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(
        err(&o).contains("(it is a character device)"),
        "{}",
        err(&o)
    );
    let o = sparsekit(&["copy", "/dev/zero", &out]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert_eq!(names_in(d.path()), ["a.img", "b.img", "pipe"]);
}

// ---- 4. Dangling symbolic links and `copy SRC newdir/` ---------------------

#[test]
fn dangling_symlinks_are_exit_1_everywhere_naming_the_target() {
    let (d, a, b) = images();
    let link = d.path().join("link.img");
    std::os::unix::fs::symlink("gone/x.img", &link).unwrap();
    let (l, a, b) = (s(&link), s(&a), s(&b));
    let range = ["--offset", "0", "--length", "4K"];
    let dd = ["--src-offset", "0", "--dst-offset", "0", "--length", "4K"];
    let cases: Vec<Vec<&str>> = vec![
        vec!["map", l],
        vec!["stat", l],
        vec!["dig", l],
        vec!["dig", "--dry-run", l],
        [&["punch", l][..], &range].concat(),
        [&["zero", l][..], &range].concat(),
        [&["collapse", l][..], &range].concat(),
        [&["insert", l][..], &range].concat(),
        vec!["copy", l, b],
        vec!["copy", a, l],
        vec!["clone", l, b],
        vec!["clone", a, l],
        [&["dedupe", l, b][..], &dd].concat(),
        [&["dedupe", a, l][..], &dd].concat(),
        vec!["caps", l],
    ];
    for args in cases {
        let o = sparsekit(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", err(&o));
        assert!(err(&o).contains("link.img"), "{args:?}: {}", err(&o));
        assert!(
            err(&o).contains("dangling symbolic link"),
            "{args:?}: {}",
            err(&o)
        );
    }
    // Nothing was created, neither the link's target nor its directory.
    assert_eq!(names_in(d.path()), ["a.img", "b.img", "link.img"]);
}

#[test]
fn copy_into_a_missing_directory_creates_nothing() {
    let (d, a, b) = images();
    let missing = format!("{}/newdir/", d.path().display());
    let o = sparsekit(&["copy", s(&a), &missing]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("ENOENT"), "{}", err(&o));
    let file_slash = format!("{}/", b.display());
    let o = sparsekit(&["copy", s(&a), &file_slash]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("ENOTDIR"), "{}", err(&o));
    assert_eq!(names_in(d.path()), ["a.img", "b.img"]);
    // An existing directory with a trailing slash still works (cp's rule).
    std::fs::create_dir(d.path().join("dir")).unwrap();
    let o = sparsekit(&[
        "copy",
        "--no-progress",
        s(&a),
        &format!("{}/dir/", d.path().display()),
    ]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(
        std::fs::read(d.path().join("dir/a.img")).unwrap(),
        std::fs::read(&a).unwrap()
    );
}

// ---- 5. --timeout -----------------------------------------------------------

/// Eight 1 MiB data extents, one every 2 MiB: eight writes for the copy,
/// whatever its request size.
fn big_source() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.img");
    let f = std::fs::File::create(&src).unwrap();
    let data = pattern(1 << 20);
    for i in 0..8u64 {
        f.write_all_at(&data, i * (2 << 20)).unwrap();
    }
    f.set_len(16 << 20).unwrap();
    (dir, src)
}

#[test]
fn a_slow_but_live_copy_never_times_out() {
    let (d, src) = big_source();
    let dst = d.path().join("dst.img");
    // 300 ms per 1 MiB write, 8 writes: 2.4 s in all, against a 1 s timeout.
    let mut cmd = bin();
    cmd.env("SPARSEKIT_TEST_FAULTS", "delay-ms=300");
    let start = Instant::now();
    let o = run_with(
        cmd,
        &[
            "copy",
            "--no-progress",
            "--reflink",
            "never",
            "--strategy",
            "read-write",
            "--timeout",
            "1s",
            s(&src),
            s(&dst),
        ],
    );
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        start.elapsed() > Duration::from_secs(1),
        "the copy was not slow"
    );
    assert_eq!(std::fs::read(&dst).unwrap(), std::fs::read(&src).unwrap());
}

#[test]
fn a_stalled_copy_exits_3_and_leaves_nothing() {
    let (d, src) = big_source();
    let dst = d.path().join("dst.img");
    // A 6 s stall on the first write, against a 1 s timeout.
    let mut cmd = bin();
    cmd.env("SPARSEKIT_TEST_FAULTS", "delay-ms=6000");
    let start = Instant::now();
    let o = run_with(
        cmd,
        &[
            "copy",
            "--no-progress",
            "--reflink",
            "never",
            "--strategy",
            "read-write",
            "--timeout",
            "1s",
            s(&src),
            s(&dst),
        ],
    );
    let elapsed = start.elapsed();
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    assert!(err(&o).contains("no progress for 1s"), "{}", err(&o));
    assert!(err(&o).contains("src.img"), "{}", err(&o));
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(5),
        "exit 3 after {elapsed:?}"
    );
    assert_eq!(names_in(d.path()), ["src.img"], "something was left");
}

#[test]
fn every_command_that_reads_a_file_takes_timeout() {
    let (d, a, b) = images();
    let (a, b) = (s(&a), s(&b));
    let copy = s(&d.path().join("c.img")).to_owned();
    let range = ["--offset", "4K", "--length", "4K", "--timeout", "10s"];
    let cases: Vec<Vec<&str>> = vec![
        vec!["map", "--timeout", "10s", a],
        vec!["stat", "--timeout", "10s", a],
        vec!["dig", "--dry-run", "--timeout", "10s", a],
        vec!["dig", "--timeout", "500ms", a],
        [&["punch", a][..], &range].concat(),
        [&["zero", a][..], &range].concat(),
        [&["collapse", a][..], &range].concat(),
        [&["insert", a][..], &range].concat(),
        vec!["copy", "--no-progress", "--timeout", "2m", a, &copy],
        vec!["caps", "--timeout", "1m", s(d.path())],
    ];
    for args in cases {
        let o = sparsekit(&args);
        assert!(o.status.success(), "{args:?}: {}", err(&o));
    }
    // clone and dedupe parse it too (they fail after it on filesystems
    // without reflink, but never with a usage error about --timeout).
    for args in [
        vec!["clone", a, b, "--timeout", "10s"],
        vec![
            "dedupe",
            a,
            b,
            "--src-offset",
            "0",
            "--dst-offset",
            "0",
            "--length",
            "4K",
            "--timeout",
            "10s",
        ],
    ] {
        let o = sparsekit(&args);
        assert_ne!(o.status.code(), Some(2), "{args:?}: {}", err(&o));
    }
    for bad in ["0", "-1s", "10x"] {
        let o = sparsekit(&["map", "--timeout", bad, a]);
        assert_eq!(o.status.code(), Some(2), "--timeout {bad}: {}", err(&o));
    }
}

#[test]
fn a_full_stderr_never_turns_an_exit_code_into_a_panic() {
    let (d, a, _) = images();
    let full = || {
        std::fs::File::options()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    let code = |args: &[&str]| {
        bin()
            .args(args)
            .stdout(Stdio::null())
            .stderr(full())
            .status()
            .unwrap()
            .code()
    };
    assert_eq!(code(&["map", s(&d.path().join("missing"))]), Some(1));
    assert_eq!(
        code(&["punch", s(&a), "--offset", "1.5", "--length", "4K"]),
        Some(2)
    );
    // `copy --progress` writes progress (and fallback notes) to stderr.
    let dst = d.path().join("c.img");
    assert_eq!(code(&["copy", "--progress", s(&a), s(&dst)]), Some(0));
    assert_eq!(std::fs::read(&dst).unwrap(), std::fs::read(&a).unwrap());
}

#[test]
fn a_stalled_in_place_copy_exits_3_and_does_not_look_complete() {
    let (d, src) = big_source();
    let dst = d.path().join("dst.img");
    std::fs::write(&dst, pattern(8 << 20)).unwrap();
    let mut cmd = bin();
    cmd.env("SPARSEKIT_TEST_FAULTS", "delay-ms=6000");
    let o = run_with(
        cmd,
        &[
            "copy",
            "--no-progress",
            "--in-place",
            "--reflink",
            "never",
            "--strategy",
            "read-write",
            "--timeout",
            "1s",
            s(&src),
            s(&dst),
        ],
    );
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    assert!(err(&o).contains("written in place"), "{}", err(&o));
    // Its first MiB (where image headers live) is zeroed until a copy
    // finishes, or the file is truncated.
    let now = std::fs::read(&dst).unwrap();
    assert!(
        now.len() < 1 << 20 || now[..1 << 20].iter().all(|&b| b == 0),
        "the destination looks complete"
    );
}

#[test]
fn a_stdout_nobody_reads_yet_is_not_a_stall() {
    // 3000 data extents: a table far larger than a pipe's buffer, so map
    // blocks writing until the reader starts, 1.5 s later, 5x the timeout.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("many.img");
    let f = std::fs::File::create(&path).unwrap();
    for i in 0..3000u64 {
        f.write_all_at(&[1; B], i * 2 * B as u64).unwrap();
    }
    let child = bin()
        .args(["map", "--method", "seek", "--timeout", "300ms", s(&path)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("many.img: 6000 extents") || text.contains("many.img: 5999 extents"),
        "{}",
        text.lines().last().unwrap_or("")
    );
}
