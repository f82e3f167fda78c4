//! Records the git commit `sparsekit --version` names.
//!
//! From a git checkout: `git rev-parse HEAD`, and rebuilt when HEAD moves.
//! From a `cargo package` tarball (crates.io, or `cargo package`'s own
//! verification build, which lies inside the checkout but is not part of
//! it): the commit cargo recorded in `.cargo_vcs_info.json`. Elsewhere (a
//! plain source copy): "unknown", never a build failure.

use std::path::Path;
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !s.is_empty()).then_some(s)
}

/// `"sha1"` from cargo's `.cargo_vcs_info.json` (`{"git": {"sha1": "…"}, …}`),
/// read without a JSON crate: the build script has no dependencies.
fn packaged_commit(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(".cargo_vcs_info.json")).ok()?;
    let after = text.split("\"sha1\"").nth(1)?;
    let sha: String = after
        .trim_start_matches([' ', ':', '"', '\n', '\t'])
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    (sha.len() >= 7).then_some(sha)
}

fn main() {
    let dir =
        std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    println!("cargo:rerun-if-changed=.cargo_vcs_info.json");
    // Only a checkout that tracks this very manifest is ours: a packaged
    // copy under target/package/ sits inside the checkout but is untracked.
    let tracked = git(&dir, &["ls-files", "--error-unmatch", "Cargo.toml"]).is_some();
    let commit = if tracked {
        for what in ["HEAD", "index"] {
            if let Some(p) = git(
                &dir,
                &["rev-parse", "--path-format=absolute", "--git-path", what],
            ) {
                println!("cargo:rerun-if-changed={p}");
            }
        }
        if let Some(r) = git(&dir, &["symbolic-ref", "-q", "HEAD"]) {
            if let Some(p) = git(
                &dir,
                &["rev-parse", "--path-format=absolute", "--git-path", &r],
            ) {
                println!("cargo:rerun-if-changed={p}");
            }
        }
        git(&dir, &["rev-parse", "HEAD"])
    } else {
        packaged_commit(&dir)
    };
    let commit = commit.map_or("unknown".to_owned(), |c| c.chars().take(12).collect());
    println!("cargo:rustc-env=SPARSEKIT_GIT_COMMIT={commit}");
}
