//! `sparsekit --version`, `completions` and the hidden `__man`: the
//! conventions of the tools our users know.

use std::process::{Command, Output, Stdio};

fn sparsekit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sparsekit"))
        .args(args)
        .output()
        .expect("run sparsekit")
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

/// `0.1.0 (git 0123456789ab)`, or `(git unknown)` outside a checkout.
fn assert_names_version_and_commit(line: &str) {
    let rest = line
        .strip_prefix(&format!("sparsekit {} (git ", env!("CARGO_PKG_VERSION")))
        .unwrap_or_else(|| panic!("{line:?}"));
    let commit = rest.strip_suffix(')').unwrap_or_else(|| panic!("{line:?}"));
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{line:?}"
    );
}

#[test]
fn version_names_the_crates_version_and_the_git_commit() {
    for flag in ["-V", "--version"] {
        let out = sparsekit(&[flag]);
        assert!(out.status.success());
        assert!(out.stderr.is_empty());
        let stdout = text(&out.stdout);
        assert_names_version_and_commit(stdout.lines().next().unwrap());
        if flag == "--version" {
            assert!(stdout.contains("sparsekit-copy"), "{stdout}");
        }
    }
    // Built from a git checkout (or a package that recorded its commit),
    // the commit must be known.
    let dir = env!("CARGO_MANIFEST_DIR");
    let in_git = Command::new("git")
        .args(["-C", dir, "ls-files", "--error-unmatch", "Cargo.toml"])
        .output()
        .is_ok_and(|o| o.status.success());
    let packaged = std::path::Path::new(dir)
        .join(".cargo_vcs_info.json")
        .exists();
    if in_git || packaged {
        let out = sparsekit(&["-V"]);
        assert!(
            !text(&out.stdout).contains("unknown"),
            "{}",
            text(&out.stdout)
        );
    }
}

#[test]
fn completions_for_each_shell_name_every_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let out = sparsekit(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        assert!(out.stderr.is_empty());
        let script = text(&out.stdout);
        for sub in ["map", "copy", "clone", "dedupe", "caps", "completions"] {
            assert!(script.contains(sub), "{shell} lacks {sub}");
        }
        assert!(
            !script.contains("__man"),
            "{shell} completes the hidden __man"
        );
    }
}

#[test]
fn completions_usage_errors_exit_2_and_full_stdout_exits_1_without_panic() {
    let out = sparsekit(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sparsekit"))
        .args(["completions", "bash"])
        .stdout(Stdio::from(full))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("ENOSPC"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn man_pages_one_per_visible_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out = sparsekit(&["__man", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for sub in [
        "caps",
        "clone",
        "collapse",
        "completions",
        "copy",
        "dedupe",
        "dig",
        "insert",
        "map",
        "punch",
        "stat",
        "zero",
    ] {
        assert!(names.contains(&format!("sparsekit-{sub}.1")), "{names:?}");
    }
    assert!(names.contains(&"sparsekit.1".to_owned()));
    assert!(!names.iter().any(|n| n.contains("__man")));
    let copy = std::fs::read_to_string(dir.path().join("sparsekit-copy.1")).unwrap();
    assert!(copy.contains(".TH sparsekit-copy 1"), "{copy}");
    assert!(copy.contains("\\fBsparsekit copy\\fR"), "{copy}");
    // No commit in the pages: they change only with the interface.
    assert!(!copy.contains("(git "), "{copy}");
}

/// Quiet by default, like cp: an expected fallback (reflink on a
/// filesystem without it, under `--reflink auto`) is in `--json` and, under
/// `-v`, on stderr; without `-v` stderr is empty.
#[test]
fn expected_fallbacks_only_under_verbose_and_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.img");
    std::fs::write(&src, vec![5u8; 256 * 1024]).unwrap();
    let src = src.to_str().unwrap();
    let dst = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
    let fs = {
        let f = std::fs::File::open(dir.path()).unwrap();
        sparsekit_sys::fstype::FsType::of(&f).unwrap().to_string()
    };

    let json = sparsekit(&["copy", src, &dst("a"), "--json"]);
    assert!(json.status.success(), "{}", text(&json.stderr));
    assert!(json.stderr.is_empty(), "--json: {}", text(&json.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let fallbacks = doc["fallbacks"].as_array().unwrap().clone();
    for f in &fallbacks {
        assert!(f["strategy"].is_string() && f["errno"].is_string(), "{f}");
    }
    if matches!(fs.as_str(), "ext4" | "tmpfs") {
        // No reflink there: the path this test is about is taken.
        assert!(
            fallbacks
                .iter()
                .any(|f| f["strategy"] == "reflink" && f["errno"] == "EOPNOTSUPP"),
            "{doc}"
        );
    }

    let quiet = sparsekit(&["copy", src, &dst("b")]);
    assert!(quiet.status.success());
    assert_eq!(text(&quiet.stderr), "", "stderr without -v");
    assert!(!quiet.stdout.is_empty(), "the summary line stays on stdout");

    for flag in ["-v", "--verbose"] {
        let loud = sparsekit(&[flag, "copy", src, &dst(&format!("c{flag}"))]);
        assert!(loud.status.success());
        let err = text(&loud.stderr);
        assert_eq!(err.lines().count(), fallbacks.len(), "{err}");
        for f in &fallbacks {
            let strategy = f["strategy"].as_str().unwrap();
            assert!(err.contains(strategy) && err.contains("fell back"), "{err}");
        }
    }
}
