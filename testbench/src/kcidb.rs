//! `kcidb.json`: the run in KernelCI's KCIDB I/O schema v5 (v5.3, the
//! newest the `kcidb-io` package knows), ready for `kcidb-submit`.
//!
//! The kernel under test is the checkout (we did not check it out, so it
//! carries the release and `uname -v` rather than a commit) and its build
//! (a distribution's, which booted and ran the bench: status PASS). Every
//! scenario record and capability cell is one test, with the path
//! `sparsekit.<scenario or caps.capability>.<filesystem>` (for example
//! `sparsekit.copy.cache_drop.xfs`) and status PASS, FAIL or SKIP; the
//! filesystem and kernel go in `environment.misc`, the cell's facts in
//! `misc`, durations in `duration`, measured figures in `number`.
//!
//! IDs are `sparsekit:` followed by what identifies the object: the kernel
//! release for the checkout, release and architecture for the build, and
//! for a test the run (its start time and a hash of the host) and its path,
//! so they are stable for a given run and unique across runs.

use crate::results::{Case, FsResults, RunResults, Status, cases, rfc3339};
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;

/// The `origin` of every object.
pub const ORIGIN: &str = "sparsekit";
/// The schema version written.
pub const VERSION: (u32, u32) = (5, 3);
/// The schema's limit on `log_excerpt`, in characters.
const LOG_EXCERPT_MAX: usize = 16_384;

/// The document for `runs` (one per kernel).
pub fn document(runs: &[RunResults]) -> Value {
    let mut checkouts = Vec::new();
    let mut builds = Vec::new();
    let mut tests = Vec::new();
    let mut ids = BTreeSet::new();
    for run in runs {
        let checkout_id = format!("{ORIGIN}:linux-{}", run.kernel_release);
        let build_id = format!("{checkout_id}-{}", run.arch);
        let started = rfc3339(run.started);
        if ids.insert(checkout_id.clone()) {
            checkouts.push(json!({
                "id": clean(&checkout_id),
                "origin": ORIGIN,
                "comment": clean(&format!("Linux {} {}", run.kernel_release, run.kernel_version)),
                "start_time": started,
                "valid": true,
                "misc": {
                    "kernel_release": clean(&run.kernel_release),
                    "kernel_version": clean(&run.kernel_version),
                },
            }));
        }
        if ids.insert(build_id.clone()) {
            builds.push(json!({
                "id": clean(&build_id),
                "checkout_id": clean(&checkout_id),
                "origin": ORIGIN,
                "architecture": architecture(&run.arch),
                "comment": clean(&format!(
                    "Linux {} ({}), not built by sparsekit: it booted and ran the bench",
                    run.kernel_release, run.arch
                )),
                "start_time": started,
                "status": "PASS",
                "misc": {"kernel_version": clean(&run.kernel_version)},
            }));
        }
        let run_id = format!(
            "{}-{:08x}",
            started
                .trim_end_matches("+00:00")
                .replace(['-', ':'], "")
                .to_owned()
                + "Z",
            fnv1a(&format!("{}\n{}", run.hostname, run.machine))
        );
        for fs in &run.filesystems {
            for case in cases(fs) {
                let path = test_path(&case.name, &fs.report.fs);
                let mut id = format!("{ORIGIN}:{run_id}:{path}");
                // Sanitised names can collide (`a/b c` and `a/b_c`): the
                // later one gets a counter, so IDs stay unique.
                let mut n = 2;
                while !ids.insert(id.clone()) {
                    id = format!("{ORIGIN}:{run_id}:{path}#{n}");
                    n += 1;
                }
                tests.push(test(run, fs, &case, id, &build_id, path, &started));
            }
        }
    }
    json!({
        "version": {"major": VERSION.0, "minor": VERSION.1},
        "checkouts": checkouts,
        "builds": builds,
        "tests": tests,
    })
}

fn test(
    run: &RunResults,
    fs: &FsResults,
    case: &Case,
    id: String,
    build_id: &str,
    path: String,
    started: &str,
) -> Value {
    let fs_name = &fs.report.fs;
    let mut t = Map::new();
    t.insert("id".into(), clean(&id).into());
    t.insert("build_id".into(), clean(build_id).into());
    t.insert("origin".into(), ORIGIN.into());
    t.insert("path".into(), path.into());
    t.insert(
        "comment".into(),
        clean(&format!(
            "{} on {fs_name} (Linux {})",
            case.name, run.kernel_release
        ))
        .into(),
    );
    t.insert("start_time".into(), started.into());
    let mut misc = Map::new();
    misc.insert("case".into(), clean(&case.name).into());
    let status = match &case.status {
        Status::Pass => "PASS",
        Status::Fail(msg) => {
            t.insert("log_excerpt".into(), excerpt(msg).into());
            "FAIL"
        }
        Status::Skip(why) => {
            misc.insert("skip_reason".into(), clean(why).into());
            "SKIP"
        }
    };
    t.insert("status".into(), status.into());
    if let Some(s) = case.seconds {
        t.insert("duration".into(), json!(s));
    }
    // The schema: a number "should only be considered when the test has
    // actually executed".
    if let (Some(f), false) = (case.figure, status == "SKIP") {
        t.insert(
            "number".into(),
            json!({"value": f.value, "unit": f.unit, "prefix": "binary"}),
        );
        misc.insert("number_name".into(), f.name.into());
    }
    if let Some(cell) = &case.cell {
        misc.insert("support".into(), clean(&cell.support).into());
        for (k, v) in [
            ("errno", &cell.errno),
            ("reason", &cell.reason),
            ("detail", &cell.detail),
            ("verified_by", &cell.verified_by),
        ] {
            if let Some(v) = v {
                misc.insert(k.into(), clean(v).into());
            }
        }
    }
    t.insert("misc".into(), misc.into());
    t.insert("environment".into(), environment(run, fs));
    t.into()
}

fn environment(run: &RunResults, fs: &FsResults) -> Value {
    let mut misc = Map::new();
    misc.insert("filesystem".into(), clean(&fs.report.fs).into());
    let mut comment = fs.report.fs.clone();
    if let Some(def) = &fs.def {
        let made = def.over_def.as_deref().unwrap_or(def);
        misc.insert("fstype".into(), clean(&def.fstype).into());
        misc.insert("mkfs".into(), clean(&made.mkfs.join(" ")).into());
        misc.insert("mount_options".into(), clean(&def.mount_options).into());
        if let Some(base) = &def.over_def {
            misc.insert("over".into(), clean(&base.name).into());
        }
        comment += &format!(" ({}", def.fstype);
        if !made.mkfs.is_empty() {
            comment += &format!(", {}", made.mkfs.join(" "));
        }
        if !def.mount_options.is_empty() {
            comment += &format!(", -o {}", def.mount_options);
        }
        comment += ")";
    }
    comment += &format!(" on Linux {}, {}", run.kernel_release, run.machine);
    misc.insert("kernel_release".into(), clean(&run.kernel_release).into());
    misc.insert("kernel_version".into(), clean(&run.kernel_version).into());
    misc.insert("machine".into(), clean(&run.machine).into());
    misc.insert("hostname".into(), clean(&run.hostname).into());
    json!({"comment": clean(&comment), "misc": misc})
}

/// `sparsekit.copy.cache_drop.xfs`: each name component reduced to the
/// schema's path alphabet (`[a-zA-Z0-9_-]`, dot-separated, none empty).
pub fn test_path(case: &str, fs: &str) -> String {
    let component = |s: &str| -> String {
        let c: String = s
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if c.is_empty() { "_".into() } else { c }
    };
    let mut path = String::from(ORIGIN);
    for part in case.split('/').chain([fs]) {
        path.push('.');
        path += &component(part);
    }
    path
}

/// The schema allows `[a-z0-9_]` in an architecture.
fn architecture(arch: &str) -> String {
    arch.chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '_' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '_',
        })
        .collect()
}

/// The schema forbids NUL in every string it constrains.
fn clean(s: &str) -> String {
    s.replace('\0', "\\u{0}")
}

/// A failure message within the schema's `log_excerpt` limit (the end is
/// dropped, and says so).
fn excerpt(msg: &str) -> String {
    let msg = clean(msg);
    if msg.chars().count() <= LOG_EXCERPT_MAX {
        return msg;
    }
    const CUT: &str = "\n[… cut at 16 KiB]";
    let keep = LOG_EXCERPT_MAX - CUT.chars().count();
    msg.chars().take(keep).collect::<String>() + CUT
}

/// 32-bit FNV-1a: a short, stable, dependency-free hash for run IDs.
fn fnv1a(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::sample;

    #[test]
    fn sample_run_document() {
        insta::assert_json_snapshot!(document(&[sample()]));
    }

    #[test]
    fn paths_follow_the_schema_alphabet() {
        assert_eq!(
            test_path("copy/cache_drop", "xfs"),
            "sparsekit.copy.cache_drop.xfs"
        );
        assert_eq!(
            test_path("caps/punch_hole", "btrfs-zstd"),
            "sparsekit.caps.punch_hole.btrfs-zstd"
        );
        assert_eq!(
            test_path("a//b.c <x>\u{0}", "fs.1"),
            "sparsekit.a._.b_c__x__.fs_1"
        );
        // The schema's pattern, written out: ^([a-zA-Z0-9_-]+(\.[a-zA-Z0-9_-]+)*)?$
        for p in [test_path("", ""), test_path("/", "é")] {
            assert!(
                p.split('.').all(|c| !c.is_empty()
                    && c.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')),
                "{p}"
            );
        }
    }

    #[test]
    fn ids_are_unique_even_when_names_collide() {
        let mut run = sample();
        // Two scenarios whose names sanitise to the same path.
        let fs = &mut run.filesystems[1].report;
        let mut twin = fs.records[1].clone();
        twin.scenario = "copy/cache drop";
        fs.records.push(twin.clone());
        twin.scenario = "copy/cache_drop";
        fs.records.push(twin);
        let doc = document(&[run.clone(), run]);
        let mut seen = BTreeSet::new();
        for kind in ["checkouts", "builds", "tests"] {
            for obj in doc[kind].as_array().unwrap() {
                let id = obj["id"].as_str().unwrap();
                assert!(seen.insert(id.to_owned()), "duplicate {kind} id {id}");
                assert!(id.starts_with("sparsekit:"));
            }
        }
        // The same run twice is the same checkout and build.
        assert_eq!(doc["checkouts"].as_array().unwrap().len(), 1);
        assert_eq!(doc["builds"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn long_failures_are_cut_to_the_schema_limit_and_nul_is_never_written() {
        let long = "é".repeat(20_000);
        let e = excerpt(&long);
        assert_eq!(e.chars().count(), LOG_EXCERPT_MAX);
        assert!(e.ends_with("cut at 16 KiB]"));
        let doc = document(&[sample()]).to_string();
        assert!(!doc.contains("\\u0000"), "a NUL reached the document");
    }

    #[test]
    fn statuses_and_counts_match_the_run() {
        let run = sample();
        let doc = document(std::slice::from_ref(&run));
        let tests = doc["tests"].as_array().unwrap();
        let count = |s: &str| tests.iter().filter(|t| t["status"] == s).count();
        let c = run.counts();
        assert_eq!(
            (count("PASS"), count("FAIL"), count("SKIP")),
            (c.passed, c.failed, c.skipped)
        );
        assert_eq!(tests.len(), c.total());
    }
}
