//! `sparsekit collapse|insert --strategy move-data` interrupted by signals
//! and SIGKILL, `sparsekit resume`, and the refusal of other in-place
//! commands while a journal is pending.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sparsekit"))
}

fn sparsekit(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// 24 MiB of data with a 4 MiB hole in the middle, in a fresh directory.
fn image() -> (tempfile::TempDir, PathBuf, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    let mut data: Vec<u8> = (0..24 * MIB)
        .map(|i| ((i / 4093) as u8).wrapping_mul(31) | 1)
        .collect();
    data[12 * MIB..16 * MIB].fill(0);
    std::fs::write(&path, &data).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    rustix::fs::fallocate(
        &f,
        rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
        12 * MIB as u64,
        4 * MIB as u64,
    )
    .unwrap();
    (dir, path, data)
}

fn journal(path: &Path) -> PathBuf {
    path.with_file_name(".disk.img.sparsekit-shift")
}

fn collapsed(data: &[u8], offset: usize, length: usize) -> Vec<u8> {
    let mut v = data.to_vec();
    v.drain(offset..offset + length);
    v
}

fn inserted(data: &[u8], offset: usize, length: usize) -> Vec<u8> {
    let mut v = data.to_vec();
    v.splice(offset..offset, std::iter::repeat_n(0, length));
    v
}

/// Starts `args`, waits until its journal exists (so it is moving data and
/// its signal handlers are in place) and `delay` more, then sends `signal`.
fn interrupt(
    path: &Path,
    args: &[&str],
    signal: rustix::process::Signal,
    delay: Duration,
) -> Option<Output> {
    let child: Child = bin()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = rustix::process::Pid::from_child(&child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !journal(path).exists() {
        if Instant::now() > deadline {
            let o = child.wait_with_output().unwrap();
            panic!("no journal appeared: {}", err(&o));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    std::thread::sleep(delay);
    rustix::process::kill_process(pid, signal).unwrap();
    let o = child.wait_with_output().unwrap();
    // Finished before the signal landed: the caller tries again.
    (!o.status.success()).then_some(o)
}

#[test]
fn sigint_sigterm_and_sighup_stop_at_a_boundary_and_resume_finishes() {
    use rustix::process::Signal;
    for (signal, op) in [
        (Signal::INT, "collapse"),
        (Signal::TERM, "insert"),
        (Signal::HUP, "collapse"),
    ] {
        let mut stopped_midway = false;
        for attempt in 0..8 {
            stopped_midway |= stop_and_resume(signal, op, Duration::from_millis(attempt * 15));
            if stopped_midway {
                break;
            }
        }
        assert!(stopped_midway, "{signal:?} never landed mid-way");
    }
}

/// One attempt: whether the signal stopped the operation mid-way (else it
/// came before anything moved, or after the end, and that is checked too).
fn stop_and_resume(signal: rustix::process::Signal, op: &str, delay: Duration) -> bool {
    {
        let (_d, path, data) = image();
        let (offset, length) = (8 * MIB, 64 * 1024);
        let expected = if op == "collapse" {
            collapsed(&data, offset, length)
        } else {
            inserted(&data, offset, length)
        };
        let args = [
            op,
            s(&path),
            "--offset",
            "8M",
            "--length",
            "64K",
            "--strategy",
            "move-data",
        ];
        let Some(o) = interrupt(&path, &args, signal, delay) else {
            assert_eq!(std::fs::read(&path).unwrap(), expected);
            return false;
        };
        assert_eq!(o.status.code(), Some(130), "{signal:?}: {}", err(&o));
        let message = err(&o);
        if message.contains("nothing was changed") {
            assert_eq!(std::fs::read(&path).unwrap(), data);
            assert!(!journal(&path).exists());
            return false;
        }
        assert!(
            message.contains("stopped at a segment boundary")
                && message.contains(".disk.img.sparsekit-shift")
                && message.contains(&format!("run `sparsekit resume {}`", s(&path))),
            "{message}"
        );
        assert!(journal(&path).exists());

        // Every other in-place command refuses, naming the journal and resume.
        for other in [
            vec!["punch", s(&path), "--offset", "0", "--length", "4K"],
            vec!["zero", s(&path), "--offset", "0", "--length", "4K"],
            vec!["dig", s(&path)],
            vec!["collapse", s(&path), "--offset", "4K", "--length", "4K"],
            vec!["insert", s(&path), "--offset", "8M", "--length", "128K"],
        ] {
            let before = std::fs::read(&path).unwrap();
            let r = sparsekit(&other);
            assert_eq!(r.status.code(), Some(1), "{other:?}: {}", err(&r));
            assert!(
                err(&r).contains(".disk.img.sparsekit-shift")
                    && err(&r).contains("sparsekit resume"),
                "{other:?}: {}",
                err(&r)
            );
            assert_eq!(
                std::fs::read(&path).unwrap(),
                before,
                "{other:?} changed it"
            );
        }

        let r = sparsekit(&["resume", s(&path)]);
        assert!(r.status.success(), "{}", err(&r));
        assert!(out(&r).contains("resumed and finished"), "{}", out(&r));
        assert_eq!(std::fs::read(&path).unwrap(), expected, "{signal:?} {op}");
        assert!(!journal(&path).exists());
        let r = sparsekit(&["resume", s(&path), "--json"]);
        assert!(r.status.success());
        assert!(out(&r).contains(r#""resumed":"nothing""#), "{}", out(&r));
        true
    }
}

#[test]
fn after_sigkill_the_same_command_again_finishes() {
    let (_d, path, data) = image();
    let expected = inserted(&data, 4 * MIB, 16 * MIB);
    let args = [
        "insert",
        s(&path),
        "--offset",
        "4M",
        "--length",
        "16M",
        "--strategy",
        "move-data",
    ];
    let kill = rustix::process::Signal::KILL;
    if let Some(o) = interrupt(&path, &args, kill, Duration::from_millis(30)) {
        assert_eq!(o.status.signal(), Some(9));
        assert!(journal(&path).exists());
        let r = sparsekit(&args);
        assert!(r.status.success(), "{}", err(&r));
        assert!(
            err(&r).contains("resuming the unfinished insert"),
            "{}",
            err(&r)
        );
    }
    assert_eq!(std::fs::read(&path).unwrap(), expected);
    assert!(!journal(&path).exists());
}

#[test]
fn resume_without_a_journal_changes_nothing() {
    let (_d, path, data) = image();
    let r = sparsekit(&["resume", s(&path)]);
    assert!(r.status.success(), "{}", err(&r));
    assert!(
        out(&r).contains("no interrupted collapse or insert"),
        "{}",
        out(&r)
    );
    assert_eq!(std::fs::read(&path).unwrap(), data);
}

#[test]
fn a_journal_that_never_got_a_record_blocks_until_resume_discards_it() {
    let (_d, path, data) = image();
    std::fs::write(journal(&path), b"").unwrap();
    let r = sparsekit(&["punch", s(&path), "--offset", "0", "--length", "4K"]);
    assert_eq!(r.status.code(), Some(1));
    assert!(err(&r).contains("never started"), "{}", err(&r));
    let r = sparsekit(&["resume", s(&path)]);
    assert!(r.status.success(), "{}", err(&r));
    assert!(out(&r).contains("the file is unchanged"), "{}", out(&r));
    assert!(!journal(&path).exists());
    assert_eq!(std::fs::read(&path).unwrap(), data);
}

#[test]
fn help_says_how_to_finish() {
    for op in ["collapse", "insert"] {
        let o = sparsekit(&[op, "--help"]);
        assert!(o.status.success());
        assert!(out(&o).contains("sparsekit resume FILE"), "{}", out(&o));
    }
    let o = sparsekit(&["--help"]);
    assert!(out(&o).contains("resume"), "{}", out(&o));
}

/// Quiet by default like every command: on tmpfs (no native collapse) the
/// fallback to moving the data is in `--json` as the shared
/// `{"strategy","errno"}` record and on stderr only under `-v`.
#[test]
fn the_native_fallback_only_under_verbose_and_in_json() {
    let dir = tempfile::tempdir_in("/dev/shm").expect("/dev/shm (tmpfs) for this test");
    let fs = {
        let f = std::fs::File::open(dir.path()).unwrap();
        sparsekit_sys::fstype::FsType::of(&f).unwrap().to_string()
    };
    assert_eq!(fs, "tmpfs", "/dev/shm is not tmpfs here");
    let path = dir.path().join("f.img");
    let data: Vec<u8> = (0..8 * MIB).map(|i| (i / 4096) as u8 | 1).collect();
    let run = |verbose: bool, json: bool| {
        std::fs::write(&path, &data).unwrap();
        let mut args = vec![];
        if verbose {
            args.push("-v");
        }
        args.extend(["collapse", s(&path), "--offset", "1M", "--length", "1M"]);
        if json {
            args.push("--json");
        }
        let o = sparsekit(&args);
        assert!(o.status.success(), "{}", err(&o));
        assert_eq!(
            std::fs::read(&path).unwrap(),
            collapsed(&data, MIB, MIB),
            "content"
        );
        o
    };

    let json = run(false, true);
    assert_eq!(err(&json), "", "--json: stderr");
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(doc["strategy"], "move_data", "{doc}");
    assert_eq!(
        doc["fallbacks"],
        serde_json::json!([{"strategy": "native", "errno": "EOPNOTSUPP"}]),
        "{doc}"
    );

    let quiet = run(false, false);
    assert_eq!(err(&quiet), "", "stderr without -v");
    assert!(out(&quiet).contains("with move_data"), "{}", out(&quiet));

    let loud = run(true, false);
    let e = err(&loud);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.starts_with("sparsekit: ") && e.contains("native") && e.trim_end().ends_with("fell back"),
        "{e}"
    );
}
