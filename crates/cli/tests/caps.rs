//! `sparsekit caps`: table, JSON and TOML output, exit codes, and no root
//! needed.

use sparsekit_caps::{CAPABILITIES, CapsReport};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Output};

fn sparsekit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sparsekit"))
        .args(args)
        .output()
        .expect("run sparsekit")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[test]
fn table_names_every_capability_and_how_it_was_verified() {
    let dir = tempfile::tempdir().unwrap();
    let out = sparsekit(&["caps", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("filesystem: "), "{text}");
    assert!(text.contains("VERIFIED BY"), "{text}");
    for name in CAPABILITIES {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn json_and_toml_are_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = sparsekit(&["caps", dir.path().to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: CapsReport = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report.filesystem.directory, dir.path().to_str().unwrap());
    assert!(report.capabilities.contains_key("punch_hole"));

    let out = sparsekit(&["caps", dir.path().to_str().unwrap(), "--toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: CapsReport = toml::from_str(&stdout(&out)).unwrap();
    assert!(report.capabilities.contains_key("seek_data_hole"));
    assert!(report.not_tried.contains_key("copy_file_range_cross_fs"));
}

#[test]
fn the_current_directory_is_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sparsekit"))
        .args(["caps", "--json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report: CapsReport = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report.filesystem.directory, ".");
}

#[test]
fn usage_errors_exit_2_and_failures_exit_1_naming_the_path() {
    let out = sparsekit(&["caps", "--json", "--toml"]);
    assert_eq!(out.status.code(), Some(2));

    let file = tempfile::NamedTempFile::new().unwrap();
    let path = file.path().to_str().unwrap();
    let out = sparsekit(&["caps", path]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains(path), "{}", stderr(&out));
    assert!(stderr(&out).contains("not a directory"), "{}", stderr(&out));

    let out = sparsekit(&["caps", "/nonexistent/caps-dir"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("/nonexistent/caps-dir") && err.contains("ENOENT"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let out = sparsekit(&[
        "caps",
        dir.path().to_str().unwrap(),
        "--cross-fs",
        "/nonexistent/peer",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("/nonexistent/peer"),
        "{}",
        stderr(&out)
    );
}

/// As an unprivileged user (run as root, the test drops to `nobody` with
/// setpriv; run unprivileged, it runs as is).
#[test]
fn works_without_root() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let path = dir.path().to_str().unwrap();
    let bin = env!("CARGO_BIN_EXE_sparsekit");
    // /proc/self belongs to the effective user.
    let is_root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
    let out = if is_root {
        match Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                bin,
                "caps",
                path,
                "--json",
            ])
            .output()
        {
            Ok(out) => out,
            Err(e) => panic!("running as root and setpriv (util-linux) is unavailable: {e}"),
        }
    } else {
        sparsekit(&["caps", path, "--json"])
    };
    assert!(out.status.success(), "{}", stderr(&out));
    let report: CapsReport = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(report.capabilities.len() >= CAPABILITIES.len() - 1);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
