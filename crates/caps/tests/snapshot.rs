//! The report on tmpfs, redacted of machine-specific values, as insta
//! snapshots: what a tmpfs does, one committed expectation per kernel
//! series (`snapshots/snapshot__tmpfs_report@linux-6.18.snap`, `…@linux-6.1…`),
//! because some cells depend on the kernel (no `cachestat` before 6.5, no
//! tmpfs `O_DIRECT` before 6.6, …). On a series without one, the report is
//! compared with every committed expectation on what does not depend on the
//! kernel ([`CapsReport::kernel_independent`]): the set of capabilities,
//! the filesystem section, every other cell whole, every `verified_by` —
//! so a change of the report's format still fails on any kernel. The test
//! bench runs the same comparison on its own tmpfs mount
//! (scenario `caps/tmpfs_snapshot`).

use sparsekit_caps::{CapsReport, Support};
use std::path::{Path, PathBuf};

const TMPFS_MAGIC: u64 = 0x0102_1994;
const PREFIX: &str = "snapshot__tmpfs_report@linux-";

fn snapshots() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots")
}

/// `6.18` of `6.18.44-fc-v857`: the series an expectation is kept for.
fn series(release: &str) -> String {
    release
        .split(|c: char| !c.is_ascii_digit())
        .take(2)
        .collect::<Vec<_>>()
        .join(".")
}

/// Every committed expectation: (series, report), sorted by file name.
fn expectations() -> Vec<(String, CapsReport)> {
    let mut files: Vec<_> = std::fs::read_dir(snapshots())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(PREFIX) && n.ends_with(".snap"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|name| {
            let text = std::fs::read_to_string(snapshots().join(&name)).unwrap();
            let body = text.splitn(3, "---\n").nth(2).expect("an insta snapshot");
            let series = name[PREFIX.len()..name.len() - ".snap".len()].to_owned();
            (series, toml::from_str(body).unwrap())
        })
        .collect()
}

/// The fallback of a series without an expectation: equal to every
/// committed one once kernel-dependent cells are masked.
fn assert_kernel_independent_match(report: &CapsReport) {
    let got = report.kernel_independent();
    let all = expectations();
    assert!(
        !all.is_empty(),
        "no committed expectation in {:?}",
        snapshots()
    );
    for (series, want) in all {
        assert_eq!(
            toml::to_string(&got).unwrap(),
            toml::to_string(&want.kernel_independent()).unwrap(),
            "the tmpfs report differs from the Linux {series} expectation in what does not \
             depend on the kernel"
        );
    }
}

/// A report of a tmpfs (in /dev/shm), or `None` where there is none.
fn tmpfs_report_here() -> Option<CapsReport> {
    let shm = Path::new("/dev/shm");
    let is_tmpfs =
        rustix::fs::statfs(shm).is_ok_and(|s| s.f_type as u64 & 0xffff_ffff == TMPFS_MAGIC);
    if !is_tmpfs {
        eprintln!(
            "SKIPPED: /dev/shm is not a tmpfs here; the test bench runs the same \
             snapshot check on its tmpfs mount (scenario caps/tmpfs_snapshot)"
        );
        return None;
    }
    let dir = tempfile::tempdir_in(shm).unwrap();
    let report = sparsekit_caps::probe(dir.path()).unwrap();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    Some(report)
}

#[test]
fn tmpfs_report() {
    let Some(report) = tmpfs_report_here() else {
        return;
    };
    let series = series(&report.filesystem.kernel_release);
    let recording = matches!(
        std::env::var("INSTA_UPDATE").as_deref(),
        Ok("always" | "new")
    );
    if snapshots().join(format!("{PREFIX}{series}.snap")).exists() || recording {
        insta::with_settings!({ snapshot_suffix => format!("linux-{series}") }, {
            insta::assert_toml_snapshot!("tmpfs_report", report.redacted());
        });
    } else {
        eprintln!(
            "no tmpfs expectation for Linux {series}: compared what does not depend on the \
             kernel (record one with INSTA_UPDATE=always cargo test -p sparsekit-caps --test \
             snapshot)"
        );
        assert_kernel_independent_match(&report);
    }
}

/// The fallback for a kernel without an expectation, run on this one.
#[test]
fn tmpfs_report_matches_every_expectation_where_the_kernel_does_not_matter() {
    if let Some(report) = tmpfs_report_here() {
        assert_kernel_independent_match(&report);
    }
}

#[test]
fn expectations_differ_only_where_the_kernel_matters() {
    let all = expectations();
    let names: Vec<_> = all.iter().map(|(s, _)| s.as_str()).collect();
    assert!(
        names.contains(&"6.1") && names.contains(&"6.18"),
        "{names:?}"
    );
    let (_, first) = &all[0];
    for (series, r) in &all[1..] {
        assert_eq!(
            r.kernel_independent(),
            first.kernel_independent(),
            "Linux {series} and {} disagree beyond the kernel-dependent cells",
            all[0].0
        );
        for (name, cell) in &r.capabilities {
            if first.get(name) != Some(cell) {
                assert!(
                    CapsReport::KERNEL_DEPENDENT.contains(&name.as_str()),
                    "{name} differs between Linux {series} and {}",
                    all[0].0
                );
            }
        }
    }
    // The series of the two kernels the expectations come from.
    assert_eq!(series("6.18.44-fc-v857"), "6.18");
    assert_eq!(series("6.1.0-57-amd64"), "6.1");
}

/// What the fallback still catches: a change of format anywhere, also in
/// a kernel-dependent cell's `verified_by`.
#[test]
fn the_kernel_independent_comparison_still_fails_on_a_format_change() {
    let (_, base) = expectations().remove(0);
    let want = base.kernel_independent();
    type Change = Box<dyn Fn(&mut CapsReport)>;
    let changes: Vec<(&str, Change)> = vec![
        (
            "verified_by of a kernel-dependent cell",
            Box::new(|r| r.capabilities.get_mut("cachestat").unwrap().verified_by += "!"),
        ),
        (
            "detail of another cell",
            Box::new(|r| r.capabilities.get_mut("punch_hole").unwrap().detail = None),
        ),
        (
            "support of another cell",
            Box::new(|r| r.capabilities.get_mut("allocate").unwrap().support = Support::Degraded),
        ),
        (
            "a capability gone",
            Box::new(|r| {
                r.capabilities.remove("o_direct");
            }),
        ),
        (
            "the filesystem section",
            Box::new(|r| r.filesystem.fs_type = "tmpfs2".into()),
        ),
        (
            "not_tried",
            Box::new(|r| {
                r.not_tried.clear();
            }),
        ),
    ];
    for (what, change) in changes {
        let mut r = base.clone();
        change(&mut r);
        assert_ne!(r.kernel_independent(), want, "{what} went unnoticed");
    }
    // And a kernel-dependent outcome alone does not count.
    let mut r = base.clone();
    let cell = r.capabilities.get_mut("o_direct").unwrap();
    cell.support = Support::Unsupported;
    cell.errno = Some("EINVAL".into());
    assert_eq!(r.kernel_independent(), want);
}
