//! The report on the machine's own filesystems (a temporary directory, and
//! tmpfs at /dev/shm where there is one): complete, serializable, and
//! nothing left behind.

use sparsekit_caps::{CAPABILITIES, Caps, CapsError, CapsOptions, CapsReport, Support};
use std::path::Path;

fn assert_complete(report: &CapsReport) {
    for name in CAPABILITIES {
        assert!(
            report.capabilities.contains_key(*name) || report.not_tried.contains_key(*name),
            "{name} missing from the report:\n{report}"
        );
    }
    for (name, cell) in &report.capabilities {
        assert!(
            CAPABILITIES.contains(&name.as_str()),
            "unknown capability {name}"
        );
        assert!(
            !cell.verified_by.is_empty(),
            "{name} says nothing of how it was verified"
        );
        match cell.support {
            Support::Unsupported | Support::Emulated => assert!(
                cell.errno.is_some() || cell.reason.is_some(),
                "{name}: {cell:?} names neither errno nor reason"
            ),
            Support::Degraded => assert!(cell.reason.is_some(), "{name}: {cell:?}"),
            Support::Native => assert_eq!(cell.errno, None, "{name}"),
        }
        if cell.support == Support::Emulated {
            assert!(cell.reason.is_some(), "{name}: emulated by what?");
        }
    }
}

fn assert_empty(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        left.is_empty(),
        "left behind in {}: {left:?}",
        dir.display()
    );
}

fn is_tmpfs(path: &Path) -> bool {
    rustix::fs::statfs(path).is_ok_and(|s| s.f_type as u64 & 0xffff_ffff == 0x0102_1994)
}

#[test]
fn a_temporary_directory_gets_a_complete_report_and_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let report = sparsekit_caps::probe(dir.path()).unwrap();
    assert_complete(&report);
    assert_empty(dir.path());
    assert_eq!(
        report.filesystem.directory,
        dir.path().display().to_string()
    );
    assert!(report.not_tried.contains_key("copy_file_range_cross_fs"));
    // Every filesystem Linux 6.x runs on here maps holes and copies ranges.
    assert_eq!(
        report.support("copy_file_range"),
        Some(Support::Native),
        "{report}"
    );
    assert_eq!(
        report.support("o_tmpfile"),
        Some(Support::Native),
        "{report}"
    );
    assert_eq!(report.filesystem.scratch, "o_tmpfile");

    let json = serde_json::to_string_pretty(&report).unwrap();
    assert_eq!(serde_json::from_str::<CapsReport>(&json).unwrap(), report);
    let toml_text = toml::to_string(&report).unwrap();
    assert_eq!(toml::from_str::<CapsReport>(&toml_text).unwrap(), report);
    assert!(
        toml_text.contains("[capabilities.punch_hole]"),
        "{toml_text}"
    );

    let table = report.to_string();
    assert!(table.contains("VERIFIED BY"), "{table}");
    for name in report.capabilities.keys() {
        assert!(table.contains(name.as_str()), "{name} not in\n{table}");
    }
}

#[test]
fn named_scratch_files_leave_nothing_behind_either() {
    let dir = tempfile::tempdir().unwrap();
    let report = CapsOptions::new()
        .named_scratch(true)
        .probe(dir.path())
        .unwrap();
    assert_complete(&report);
    assert_empty(dir.path());
    assert_eq!(report.filesystem.scratch, "named");
    // O_TMPFILE still reported for what it is.
    assert_eq!(report.support("o_tmpfile"), Some(Support::Native));
}

#[test]
fn a_second_directory_on_the_same_filesystem_is_not_tried() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let report = CapsOptions::new()
        .cross_fs_dir(other.path())
        .probe(dir.path())
        .unwrap();
    let why = &report.not_tried["copy_file_range_cross_fs"];
    assert!(why.contains("same filesystem"), "{why}");
    assert!(report.filesystem.cross_fs_peer.is_some());
    assert_empty(other.path());
}

#[test]
fn a_second_directory_on_another_filesystem_is_tried() {
    let dir = tempfile::tempdir().unwrap();
    let shm = Path::new("/dev/shm");
    let same = rustix::fs::stat(shm).ok().map(|s| s.st_dev)
        == rustix::fs::stat(dir.path()).ok().map(|s| s.st_dev);
    if !is_tmpfs(shm) || same {
        eprintln!(
            "SKIPPED: /dev/shm is not a tmpfs on another filesystem than the temporary directory"
        );
        return;
    }
    let other = tempfile::tempdir_in(shm).unwrap();
    let report = CapsOptions::new()
        .cross_fs_dir(other.path())
        .probe(dir.path())
        .unwrap();
    let cell = report.get("copy_file_range_cross_fs").expect("tried");
    // The kernel copies across filesystems, or refuses (EXDEV) and the
    // copy crate's read/write fallback does it: never unsupported.
    assert!(
        matches!(cell.support, Support::Native | Support::Emulated),
        "{cell:?}"
    );
    assert!(
        report
            .filesystem
            .cross_fs_peer
            .as_deref()
            .unwrap()
            .ends_with("(tmpfs)")
    );
    assert_empty(dir.path());
    assert_empty(other.path());
}

#[test]
fn errors_name_the_directory() {
    let err = sparsekit_caps::probe("/nonexistent/sparsekit-caps").unwrap_err();
    assert!(matches!(err, CapsError::Inspect { .. }), "{err:?}");
    assert!(
        err.to_string().contains("/nonexistent/sparsekit-caps"),
        "{err}"
    );
    assert!(err.to_string().contains("ENOENT"), "{err}");

    let file = tempfile::NamedTempFile::new().unwrap();
    let err = sparsekit_caps::probe(file.path()).unwrap_err();
    assert!(matches!(err, CapsError::NotADirectory { .. }), "{err:?}");

    // /proc takes no files at all, not even as root.
    let err = sparsekit_caps::probe("/proc/self").unwrap_err();
    assert!(matches!(err, CapsError::Scratch { .. }), "{err:?}");
    assert!(err.to_string().contains("/proc/self"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let err = CapsOptions::new()
        .cross_fs_dir("/nonexistent/peer")
        .probe(dir.path())
        .unwrap_err();
    assert!(matches!(err, CapsError::CrossDir { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/peer"), "{err}");
}

#[test]
fn caps_for_path_probes_each_filesystem_once() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let file = dir.path().join("disk.img");
    std::fs::write(&file, b"x").unwrap();

    let a = Caps::for_path(dir.path()).unwrap();
    let b = Caps::for_path(&sub).unwrap();
    let c = Caps::for_path(&file).unwrap();
    assert!(std::sync::Arc::ptr_eq(&a.shared(), &b.shared()));
    assert!(std::sync::Arc::ptr_eq(&a.shared(), &c.shared()));
    assert_eq!(
        a.is_native("copy_file_range"),
        a.support("copy_file_range") == Some(Support::Native)
    );
    assert!(a.cell("punch_hole").is_some());
    // Only the file we made is there: the probes kept nothing.
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["disk.img", "sub"]);

    if is_tmpfs(Path::new("/dev/shm")) {
        let shm = Caps::for_path("/dev/shm").unwrap();
        assert!(!std::sync::Arc::ptr_eq(&a.shared(), &shm.shared()));
        assert_eq!(shm.filesystem.fs_type, "tmpfs");
    }
}
