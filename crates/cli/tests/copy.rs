//! `sparsekit copy` end to end on /tmp: output, exit codes, and what a
//! failed or interrupted copy leaves behind (nothing).

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod harness;
use harness::{bin, err, out, s, sparsekit};

/// A 64 MiB image with 6 MiB of data in three extents.
fn image() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let path = dir.path().join("disk.img");
    let f = File::create(&path).unwrap();
    for (i, off) in [0u64, 20 << 20, 60 << 20].into_iter().enumerate() {
        let data: Vec<u8> = (0..2 << 20)
            .map(|j| (j as u8).wrapping_mul(31) ^ i as u8 | 1)
            .collect();
        f.write_all_at(&data, off).unwrap();
    }
    f.set_len(64 << 20).unwrap();
    f.sync_all().unwrap();
    (dir, path)
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn copies_and_reports_in_words_and_json() {
    let (dir, src) = image();
    let dst = dir.path().join("copy.img");
    let o = sparsekit(&["copy", s(&src), s(&dst)], None);
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        out(&o).contains("copy.img: 6.0 MiB copied, 58.0 MiB of holes skipped (64.0 MiB) with "),
        "{}",
        out(&o)
    );
    assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
    assert!(std::fs::metadata(&dst).unwrap().blocks() <= std::fs::metadata(&src).unwrap().blocks());

    let dst2 = dir.path().join("copy2.img");
    let o = sparsekit(&["copy", "--json", "--no-sync", s(&src), s(&dst2)], None);
    assert!(o.status.success(), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(v["bytes_copied"], 6 << 20);
    assert_eq!(v["bytes_skipped_as_holes"], 58 << 20);
    assert_eq!(v["strategy"], "read_write");
    // The read/write path looks for zero blocks by default (there are none).
    assert_eq!(v["zero_detection"], true);
    assert_eq!(v["zero_bytes_detected"], 0);
    assert_eq!(v["synced"], false);
    for key in [
        "cache",
        "cache_source",
        "seconds",
        "bytes_left_in_page_cache",
        "zero_bytes_detected",
        "fallbacks",
    ] {
        assert!(v.get(key).is_some(), "{key} missing: {v}");
    }
}

#[test]
fn forced_options_reach_the_library() {
    let (dir, src) = image();
    let dst = dir.path().join("c.img");
    let o = sparsekit(
        &[
            "copy",
            "--json",
            "--cache",
            "keep",
            "--strategy",
            "copy-file-range",
            "--reflink",
            "auto",
            s(&src),
            s(&dst),
        ],
        None,
    );
    assert!(o.status.success(), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(v["strategy"], "copy_file_range");
    assert_eq!(v["cache"], "keep");
    let o = sparsekit(
        &[
            "copy",
            "--json",
            "--sparse",
            "never",
            "--reflink",
            "never",
            s(&src),
            s(&dst),
        ],
        None,
    );
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(v["zero_bytes_written"], 58 << 20, "{v}");
}

#[test]
fn a_directory_destination_receives_the_file() {
    let (dir, src) = image();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let o = sparsekit(&["copy", "--no-sync", s(&src), s(&sub)], None);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(
        std::fs::read(&src).unwrap(),
        std::fs::read(sub.join("disk.img")).unwrap()
    );
}

#[test]
fn usage_errors_exit_2_and_touch_nothing() {
    let (dir, src) = image();
    let link = dir.path().join("link.img");
    std::fs::hard_link(&src, &link).unwrap();
    let o = sparsekit(&["copy", s(&src), s(&link)], None);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(err(&o).contains("are the same file"), "{}", err(&o));
    let o = sparsekit(
        &[
            "copy",
            "--strategy",
            "copy-file-range",
            "--reflink",
            "never",
            s(&src),
            s(&dir.path().join("x")),
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    let o = sparsekit(&["copy", "--cache", "sometimes", s(&src), "x"], None);
    assert_eq!(o.status.code(), Some(2));
    // --destination-is-zero means nothing for a new file.
    let new = dir.path().join("new.img");
    let o = sparsekit(&["copy", "--destination-is-zero", s(&src), s(&new)], None);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(err(&o).contains("new or empty file"), "{}", err(&o));
    assert_eq!(entries(dir.path()), vec!["disk.img", "link.img"]);
}

#[test]
fn enospc_exits_1_naming_file_offset_and_errno_and_leaves_nothing() {
    let (dir, src) = image();
    let before = std::fs::read(&src).unwrap();
    for extra in [&[][..], &["--in-place"][..]] {
        let dst = dir.path().join("copy.img");
        let mut args = vec!["copy", s(&src), s(&dst)];
        args.extend_from_slice(extra);
        let o = sparsekit(&args, Some("write=ENOSPC@20971520"));
        assert_eq!(o.status.code(), Some(1), "{}", err(&o));
        let e = err(&o);
        assert!(
            e.contains("copy.img") && e.contains("offset 20971520") && e.contains("ENOSPC"),
            "{e}"
        );
        assert!(!dst.exists(), "{extra:?}: destination left behind");
        assert_eq!(entries(dir.path()), vec!["disk.img"]);
    }
    assert_eq!(std::fs::read(&src).unwrap(), before);
}

/// 24 data extents of 512 KiB, one every 2 MiB: with every destination
/// request slowed down, a copy with several jobs still to go when the
/// first progress line shows, whatever the request size.
fn many_extents() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let path = dir.path().join("disk.img");
    let f = File::create(&path).unwrap();
    for i in 0..24u64 {
        let data: Vec<u8> = (0..512 << 10).map(|j| (j as u8) ^ i as u8 | 1).collect();
        f.write_all_at(&data, i * (2 << 20)).unwrap();
    }
    f.set_len(48 << 20).unwrap();
    f.sync_all().unwrap();
    (dir, path)
}

#[test]
fn sigint_exits_130_and_leaves_nothing() {
    let (dir, src) = many_extents();
    let before = std::fs::read(&src).unwrap();
    for (signal, staging) in [("-INT", None), ("-TERM", Some("--in-place"))] {
        let dst = dir.path().join("copy.img");
        let mut cmd = bin();
        cmd.args(["copy", s(&src), s(&dst)]);
        if let Some(flag) = staging {
            cmd.arg(flag);
        }
        // Slow every request down, and signal once the first progress line
        // shows the copy under way (handlers installed, data moving).
        let mut child = cmd
            .args(["--progress"])
            .env("SPARSEKIT_TEST_FAULTS", "delay-ms=200")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut seen = String::new();
        while !seen.contains("%)") {
            let mut line = String::new();
            if std::io::BufRead::read_line(&mut stderr, &mut line).unwrap() == 0 {
                break;
            }
            seen += &line;
        }
        assert!(seen.contains("%)"), "no progress line: {seen}");
        assert!(
            !seen.contains("(100%)"),
            "the copy finished before the signal: {seen}"
        );
        let kill = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let start = Instant::now();
        std::io::Read::read_to_string(&mut stderr, &mut seen).unwrap();
        let status = child.wait().unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the copy did not stop promptly"
        );
        let o = Output {
            status,
            stdout: vec![],
            stderr: seen.into_bytes(),
        };
        assert_eq!(o.status.code(), Some(130), "{signal}: {}", err(&o));
        assert!(err(&o).contains("interrupted"), "{}", err(&o));
        assert!(!dst.exists(), "{signal}: destination left behind");
        assert_eq!(entries(dir.path()), vec!["disk.img"]);
    }
    assert_eq!(std::fs::read(&src).unwrap(), before);
}

#[test]
fn progress_goes_to_stderr_when_asked() {
    let (dir, src) = image();
    let o = sparsekit(
        &[
            "copy",
            "--progress",
            "--no-sync",
            s(&src),
            s(&dir.path().join("c")),
        ],
        None,
    );
    assert!(o.status.success());
    assert!(
        err(&o).contains("c: 6.0 MiB of 6.0 MiB (100%)"),
        "{}",
        err(&o)
    );
    let o = sparsekit(
        &["copy", "--no-sync", s(&src), s(&dir.path().join("d"))],
        None,
    );
    assert!(
        !err(&o).contains("(100%)"),
        "no progress without a terminal unless asked"
    );
}

#[test]
fn a_forced_cache_policy_the_filesystem_lacks_exits_1() {
    let shm = Path::new("/dev/shm");
    let Ok(far) = tempfile::tempdir_in(shm) else {
        return;
    };
    let probe = tempfile::tempfile_in(far.path()).unwrap();
    let supported = rustix::io::pwritev2(
        &probe,
        &[std::io::IoSlice::new(&[0u8; 512])],
        0,
        rustix::io::ReadWriteFlags::from_bits_retain(0x80),
    )
    .is_ok();
    if supported {
        return;
    }
    let (_dir, src) = image();
    let dst = far.path().join("c");
    let o = sparsekit(&["copy", "--cache", "dontcache", s(&src), s(&dst)], None);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(
        err(&o).contains("cache policy dontcache not supported here: EOPNOTSUPP"),
        "{}",
        err(&o)
    );
    assert!(!dst.exists());
}

/// Regression (issue 11): `copy /proc/self/status X` wrote an empty X.
#[test]
fn a_procfs_file_is_streamed_and_says_so() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let dst = dir.path().join("version");
    let o = sparsekit(&["copy", "--json", "/proc/version", s(&dst)], None);
    assert!(o.status.success(), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(v["strategy"], "stream");
    assert_eq!(v["snapshot"], false);
    assert_eq!(v["synced"], true);
    let plain = std::fs::read("/proc/version").unwrap();
    assert_eq!(v["bytes_copied"], plain.len());
    assert_eq!(std::fs::read(&dst).unwrap(), plain);
    let status = dir.path().join("status");
    let o = sparsekit(&["copy", "/proc/self/status", s(&status)], None);
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).contains("with stream"), "{}", out(&o));
    assert!(
        std::fs::read_to_string(&status)
            .unwrap()
            .starts_with("Name:")
    );
}

/// Where FICLONE fails (/tmp here is ext4 or tmpfs, or probed), `--snapshot`
/// exits 1 naming FICLONE's errno and creates nothing.
#[test]
fn snapshot_without_reflink_exits_1_and_creates_nothing() {
    let (dir, src) = image();
    let probe = dir.path().join("probe");
    std::fs::write(&probe, [1u8; 4096]).unwrap();
    let clone = File::create(dir.path().join("probe2")).unwrap();
    let reflinks = rustix::fs::ioctl_ficlone(&clone, File::open(&probe).unwrap()).is_ok();
    drop(clone);
    std::fs::remove_file(&probe).unwrap();
    std::fs::remove_file(dir.path().join("probe2")).unwrap();
    let dst = dir.path().join("copy.img");
    let o = sparsekit(&["copy", "--snapshot", "--json", s(&src), s(&dst)], None);
    if reflinks {
        assert!(o.status.success(), "{}", err(&o));
        let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
        assert_eq!(v["snapshot"], true);
        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
        assert_eq!(entries(dir.path()), vec!["copy.img", "disk.img"]);
    } else {
        assert_eq!(o.status.code(), Some(1), "{}", err(&o));
        assert!(err(&o).contains("FICLONE: EOPNOTSUPP"), "{}", err(&o));
        assert!(err(&o).contains("disk.img"), "{}", err(&o));
        assert!(out(&o).is_empty());
        assert_eq!(entries(dir.path()), vec!["disk.img"]);
    }
}
