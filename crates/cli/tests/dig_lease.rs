//! `sparsekit dig` and other writers (issue 11): the write lease, the
//! refusal, `--force`, and a break while dig runs.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const B: u64 = 4096;

fn sparsekit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sparsekit"))
        .args(args)
        .output()
        .unwrap()
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

/// `blocks` blocks alternating data and zeros (`blocks / 2` zero runs).
fn striped(blocks: u64) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    let f = File::create(&path).unwrap();
    let mut buf = vec![0u8; (blocks * B) as usize];
    for (i, block) in buf.chunks_mut(B as usize).enumerate() {
        if i % 2 == 0 {
            block.fill((i % 251) as u8 | 1);
        }
    }
    f.write_all_at(&buf, 0).unwrap();
    f.sync_all().unwrap();
    (dir, path)
}

fn allocated(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().blocks() * 512
}

#[test]
fn dig_refuses_while_another_process_has_the_file_open_and_changes_nothing() {
    let (_d, path) = striped(64);
    let data = std::fs::read(&path).unwrap();
    let before = allocated(&path);
    let holder = File::options().write(true).open(&path).unwrap();
    let o = sparsekit(&["dig", s(&path)]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    let e = err(&o);
    assert!(e.contains("disk.img: dig: refused"), "{e}");
    assert!(e.contains("EAGAIN"), "{e}");
    assert!(e.contains("--force"), "{e}");
    assert!(out(&o).is_empty());
    assert_eq!(allocated(&path), before);
    assert_eq!(std::fs::read(&path).unwrap(), data);
    // A dry run needs no lease.
    let o = sparsekit(&["dig", s(&path), "--dry-run", "--json"]);
    assert!(o.status.success(), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(v["writers"], "not_needed");
    assert_eq!(v["holes_punched"], 32);
    drop(holder);
}

#[test]
fn dig_force_digs_unprotected_and_says_so() {
    let (_d, path) = striped(64);
    let data = std::fs::read(&path).unwrap();
    let holder = File::open(&path).unwrap();
    let o = sparsekit(&["dig", s(&path), "--force", "--json"]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        err(&o).contains("warning: --force: digging without a write lease (EAGAIN"),
        "{}",
        err(&o)
    );
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(v["writers"], "not_excluded");
    assert_eq!(v["lease_errno"], "EAGAIN");
    assert_eq!(v["holes_punched"], 32);
    assert_eq!(std::fs::read(&path).unwrap(), data);
    drop(holder);

    let (_d, path) = striped(8);
    let o = sparsekit(&["dig", s(&path), "--force"]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        out(&o).contains("UNPROTECTED") || out(&o).contains("kept out by a write lease"),
        "{}",
        out(&o)
    );
}

#[test]
fn dig_holds_a_write_lease_when_nobody_else_has_the_file_open() {
    let (_d, path) = striped(16);
    let o = sparsekit(&["dig", s(&path), "--json"]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(err(&o).is_empty(), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(v["writers"], "excluded");
    assert_eq!(v["lease_errno"], serde_json::Value::Null);
    let o = sparsekit(&["dig", s(&path)]);
    assert!(
        out(&o).contains("other writers kept out by a write lease"),
        "{}",
        out(&o)
    );
}

fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill {sig} {pid}");
}

/// Whether /proc/locks shows a lease held by `pid`.
fn holds_lease(pid: u32) -> bool {
    std::fs::read_to_string("/proc/locks")
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains("LEASE") && l.split_whitespace().any(|w| w == pid.to_string()))
}

#[test]
fn another_process_opening_the_file_stops_dig_and_its_writes_survive() {
    // Enough zero runs that dig is still punching when it is stopped.
    let (_d, path) = striped(8192);
    let mut dig = Command::new(env!("CARGO_BIN_EXE_sparsekit"))
        .args(["dig", s(&path)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = dig.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !holds_lease(pid) {
        assert!(
            dig.try_wait().unwrap().is_none(),
            "dig ended before its lease was seen"
        );
        assert!(Instant::now() < deadline, "dig never took a lease");
    }
    // Freeze dig mid-way, so the open below lands between two punches.
    signal(pid, "-STOP");
    let writer = {
        let path = path.clone();
        std::thread::spawn(move || {
            // Blocks in open() until dig releases the file.
            let t = Instant::now();
            let w = File::options().write(true).open(&path).unwrap();
            let waited = t.elapsed();
            // Write into every zero block, punched or not.
            for i in (1..8192).step_by(2) {
                w.write_all_at(&[0xee; B as usize], i * B).unwrap();
            }
            w.sync_all().unwrap();
            waited
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    signal(pid, "-CONT");
    let o = dig.wait_with_output().unwrap();
    let waited = writer.join().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    let e = err(&o);
    assert!(
        e.contains("disk.img: dig: another process opened the file for writing"),
        "{e}"
    );
    assert!(e.contains("stopped before offset"), "{e}");
    assert!(
        e.contains("nothing the other process writes is lost"),
        "{e}"
    );
    assert!(e.contains("run dig again"), "{e}");
    assert!(waited < Duration::from_secs(30), "{waited:?}");
    let f = File::open(&path).unwrap();
    let mut block = vec![0u8; B as usize];
    for i in 0..8192u64 {
        f.read_exact_at(&mut block, i * B).unwrap();
        let want = if i % 2 == 1 {
            0xee
        } else {
            (i % 251) as u8 | 1
        };
        assert!(block.iter().all(|&b| b == want), "block {i} lost");
    }
    drop(f);
    // Nothing lost; a second dig (nobody else has it open) finishes.
    let o = sparsekit(&["dig", s(&path)]);
    assert!(o.status.success(), "{}", err(&o));
}
