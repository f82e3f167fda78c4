//! `sparsekit compare` and `copy --verify` end to end on /tmp: output and
//! exit codes (0 equal, 1 different, 2 usage, 3 timeout).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

mod harness;
use harness::{bin, err, out, s, sparsekit};

/// Two equal 32 MiB images with 2 MiB of data at 0 and 16 MiB.
fn pair() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
    for p in [&a, &b] {
        let f = File::create(p).unwrap();
        for off in [0u64, 16 << 20] {
            let data: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8 + 1).collect();
            f.write_all_at(&data, off).unwrap();
        }
        f.set_len(32 << 20).unwrap();
        f.sync_all().unwrap();
    }
    (dir, a, b)
}

#[test]
fn equal_files_exit_0() {
    let (_d, a, b) = pair();
    let o = sparsekit(&["compare", s(&a), s(&b)], None);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(out(&o).contains("are equal (32.0 MiB;"), "{}", out(&o));
}

#[test]
fn different_files_exit_1_with_the_first_offset() {
    let (_d, a, b) = pair();
    let f = File::options().write(true).open(&b).unwrap();
    f.write_all_at(&[0], (16 << 20) + 99).unwrap();
    f.write_all_at(&[5], 8 << 20).unwrap(); // into a hole: the first one
    let o = sparsekit(&["compare", s(&a), s(&b)], None);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(
        out(&o).contains("differ: first at offset 8388608\n"),
        "{}",
        out(&o)
    );
    let o = sparsekit(&["compare", "--json", s(&a), s(&b)], None);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(v["equal"], false);
    assert_eq!(v["first_difference"], 8 << 20);
    assert_eq!(
        v["differences"],
        serde_json::json!([
            {"offset": 8 << 20, "length": 1},
            {"offset": (16 << 20) + 99, "length": 1},
        ])
    );
    let o = sparsekit(&["compare", "--limit", "1", s(&a), s(&b)], None);
    assert!(out(&o).contains("more differing ranges"), "{}", out(&o));
}

#[test]
fn different_sizes_exit_1_and_say_so() {
    let (_d, a, b) = pair();
    File::options()
        .write(true)
        .open(&b)
        .unwrap()
        .set_len(40 << 20)
        .unwrap();
    let o = sparsekit(&["compare", s(&a), s(&b)], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        out(&o).contains("differ in size: 33554432 and 41943040 bytes"),
        "{}",
        out(&o)
    );
}

#[test]
fn allocation_differences_exit_1_only_with_allocation() {
    let (_d, a, b) = pair();
    let f = File::options().write(true).open(&b).unwrap();
    f.write_all_at(&vec![0u8; 1 << 20], 4 << 20).unwrap();
    f.sync_all().unwrap();
    let o = sparsekit(&["compare", s(&a), s(&b)], None);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let o = sparsekit(&["compare", "--allocation", "--json", s(&a), s(&b)], None);
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(v["content_equal"], true);
    if v["b"]["allocated"].as_u64() > v["a"]["allocated"].as_u64() {
        assert_eq!(o.status.code(), Some(1), "{v}");
        assert_eq!(v["allocation"]["only_b"], 1 << 20, "{v}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let (d, a, _b) = pair();
    for args in [
        vec!["compare", s(&a)],
        vec!["compare", "--limit", "-1", s(&a), s(&a)],
        vec!["compare", "--timeout", "0", s(&a), s(&a)],
        vec!["compare", s(&a), s(d.path())],
    ] {
        let o = sparsekit(&args, None);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", err(&o));
    }
    let o = sparsekit(&["compare", s(&a), s(d.path())], None);
    assert!(
        err(&o).contains("cannot compare a directory"),
        "{}",
        err(&o)
    );
}

#[test]
fn a_missing_file_exits_1_naming_it_and_the_errno() {
    let (d, a, _b) = pair();
    let missing = d.path().join("missing.img");
    let o = sparsekit(&["compare", s(&a), s(&missing)], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("missing.img: open: ENOENT"), "{}", err(&o));
}

#[test]
fn a_read_error_exits_1_with_the_offset() {
    let (_d, a, b) = pair();
    let o = sparsekit(&["compare", s(&a), s(&b)], Some("read=EIO@16777216"));
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("at offset 16777216: EIO"), "{}", err(&o));
}

#[test]
fn timeout_exits_3_promptly() {
    let (_d, a, b) = pair();
    let t = Instant::now();
    let o = sparsekit(
        &["compare", "--timeout", "300ms", s(&a), s(&b)],
        Some("read-delay-ms=2000"),
    );
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    assert!(
        err(&o).contains("no progress for 300ms (--timeout)"),
        "{}",
        err(&o)
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[test]
fn copy_verify_success_and_mismatch() {
    let (d, a, _b) = pair();
    let dst = d.path().join("copy.img");
    let o = sparsekit(&["copy", "--verify", "--json", s(&a), s(&dst)], None);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(v["verified"]["equal"], true, "{v}");
    assert_eq!(v["verified"]["bytes_read"], 2 << 20, "{v}");
    let o = sparsekit(&["copy", "--verify", s(&a), s(&dst)], None);
    assert!(
        out(&o).contains("verified: 2.0 MiB read back"),
        "{}",
        out(&o)
    );

    let dst2 = d.path().join("copy2.img");
    let o = sparsekit(
        &["copy", "--verify", s(&a), s(&dst2)],
        Some("corrupt=16777300"),
    );
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(
        err(&o).contains("differs from") && err(&o).contains("at offset 16777300"),
        "{}",
        err(&o)
    );
    assert!(err(&o).contains("nothing was created"), "{}", err(&o));
    assert!(!dst2.exists());
}

/// Quiet by default like every command: compare's cache fallbacks (forced:
/// O_DIRECT and RWF_DONTCACHE refused on both sides) are in `--json` as the
/// shared `{"strategy","errno"}` record and on stderr only under `-v`.
#[test]
fn cache_fallbacks_only_under_verbose_and_in_json() {
    let (_d, a, b) = pair();
    let faults = Some("no-cache=direct,no-cache=dontcache");
    let json = sparsekit(&["compare", s(&a), s(&b), "--json"], faults);
    assert_eq!(json.status.code(), Some(0), "{}", err(&json));
    assert_eq!(err(&json), "", "--json: stderr");
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let fallbacks = doc["fallbacks"].as_array().unwrap();
    for want in [
        "cache direct (a)",
        "cache dontcache (a)",
        "cache direct (b)",
        "cache dontcache (b)",
    ] {
        assert!(
            fallbacks
                .iter()
                .any(|f| f == &serde_json::json!({"strategy": want, "errno": "EOPNOTSUPP"})),
            "{want}: {doc}"
        );
    }

    let quiet = sparsekit(&["compare", s(&a), s(&b)], faults);
    assert_eq!(quiet.status.code(), Some(0));
    assert_eq!(err(&quiet), "", "stderr without -v");
    assert!(out(&quiet).contains("are equal"), "{}", out(&quiet));

    let loud = sparsekit(&["-v", "compare", s(&a), s(&b)], faults);
    assert_eq!(loud.status.code(), Some(0));
    let e = err(&loud);
    assert_eq!(e.lines().count(), fallbacks.len(), "{e}");
    assert!(
        e.lines().all(|l| l.starts_with("sparsekit: ")
            && l.contains(": EOPNOTSUPP")
            && l.ends_with(", fell back")),
        "{e}"
    );
}

/// `--readers` changes how many requests are in flight, never the answer:
/// with differences spread over many requests (in data, in holes, next to
/// each other), 1, 3 and 16 readers find the same first offset and the
/// same ranges in file order, also when the limit stops them early.
#[test]
fn readers_change_the_speed_never_the_answer() {
    let (_d, a, b) = pair();
    let f = File::options().write(true).open(&b).unwrap();
    // Every 1.5 MiB: into holes and into both data extents, 23 requests.
    let pokes: Vec<u64> = (0..22).map(|i| i * (3 << 19) + 777).collect();
    for &off in &pokes {
        f.write_all_at(&[0xee], off).unwrap();
    }
    f.sync_all().unwrap();
    let want: Vec<serde_json::Value> = pokes
        .iter()
        .map(|&off| serde_json::json!({"offset": off, "length": 1}))
        .collect();
    for readers in ["1", "3", "16"] {
        let o = sparsekit(
            &[
                "compare",
                "--readers",
                readers,
                "--json",
                "--limit",
                "100",
                s(&a),
                s(&b),
            ],
            None,
        );
        assert_eq!(o.status.code(), Some(1), "{readers}: {}", err(&o));
        let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
        assert_eq!(v["first_difference"], 777, "{readers}: {v}");
        assert_eq!(v["differences"], serde_json::json!(want), "{readers}");
        assert_eq!(v["differences_truncated"], false, "{readers}");

        let o = sparsekit(
            &[
                "compare",
                "--readers",
                readers,
                "--json",
                "--limit",
                "5",
                s(&a),
                s(&b),
            ],
            None,
        );
        let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
        assert_eq!(v["differences"], serde_json::json!(want[..5]), "{readers}");
        assert_eq!(v["differences_truncated"], true, "{readers}");

        let o = sparsekit(&["compare", "--readers", readers, s(&a), s(&b)], None);
        assert_eq!(o.status.code(), Some(1));
        assert!(
            out(&o).contains("differ: first at offset 777\n"),
            "{readers}: {}",
            out(&o)
        );
    }
}

#[test]
fn readers_outside_1_to_16_are_usage_errors() {
    let (_d, a, b) = pair();
    for bad in ["0", "17", "-1", "four"] {
        let arg = format!("--readers={bad}");
        let o = sparsekit(&["compare", &arg, s(&a), s(&b)], None);
        assert_eq!(o.status.code(), Some(2), "--readers {bad}: {}", err(&o));
        assert!(
            err(&o).contains("--readers"),
            "--readers {bad}: {}",
            err(&o)
        );
        assert_eq!(out(&o), "");
    }
}

/// The file shrinks while it is compared (after the comparison has read
/// its first request): no answer, exit 1 naming the file that changed.
/// The fault hook slows every read by 300 ms, so the test sees the first
/// bytes read (the child's `rchar`) well before the read that finds the
/// file shorter.
#[test]
fn a_file_that_changes_during_the_comparison_is_exit_1_naming_it() {
    let (_d, a, b) = pair();
    let mut child = bin()
        .args(["compare", "--readers", "1", s(&a), s(&b)])
        .env("SPARSEKIT_TEST_FAULTS", "read-delay-ms=300")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let io = format!("/proc/{}/io", child.id());
    let rchar = || -> u64 {
        std::fs::read_to_string(&io)
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("rchar: ").map(|n| n.parse().unwrap()))
            })
            .unwrap_or(0)
    };
    let t = Instant::now();
    while rchar() < 1 << 20 {
        assert!(t.elapsed() < Duration::from_secs(30), "no read seen");
        assert!(child.try_wait().unwrap().is_none(), "ended before a read");
        std::thread::sleep(Duration::from_millis(2));
    }
    // The second request (B at 16 MiB) is at least 600 ms away.
    File::options()
        .write(true)
        .open(&b)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(
        err(&o).contains(&format!("{}: changed during the comparison", s(&b))),
        "{}",
        err(&o)
    );
    assert_eq!(out(&o), "");
}
