//! `sparsekit compare` and `copy --verify` end to end on /tmp: output and
//! exit codes (0 equal, 1 different, 2 usage, 3 timeout).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn sparsekit(args: &[&str], faults: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sparsekit"));
    cmd.args(args);
    if let Some(f) = faults {
        cmd.env("SPARSEKIT_TEST_FAULTS", f);
    }
    cmd.output().unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

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
