//! A bench run's results as other CI systems read them: one flat list of
//! test cases per filesystem (every scenario record and every capability
//! cell), from which [`junit`](crate::junit) and [`kcidb`](crate::kcidb)
//! render their documents.
//!
//! Everything here is pure: the run's facts (kernel, machine, start time,
//! the reports, the committed-matrix regressions) go in, cases and counts
//! come out, so the documents are snapshot-tested without a filesystem and
//! the bench's printed totals and the documents come from the same
//! [`cases`] and cannot disagree.

use crate::defs::FsDef;
use crate::matrix::{Difference, Support};
use crate::runner::{FsReport, Outcome};
use std::time::{SystemTime, UNIX_EPOCH};

/// The facts of one bench run on one kernel.
#[derive(Debug, Clone)]
pub struct RunResults {
    /// `uname -r`.
    pub kernel_release: String,
    /// `uname -v` (build number and date of the kernel).
    pub kernel_version: String,
    /// `uname -m`.
    pub arch: String,
    /// `uname -n`.
    pub hostname: String,
    /// The matrix's machine label (`x86_64, 2 CPUs, 24 GiB`).
    pub machine: String,
    /// When the run started, seconds since the epoch (UTC).
    pub started: u64,
    /// One entry per filesystem run (the self-test included), in run order.
    pub filesystems: Vec<FsResults>,
}

/// What happened on one filesystem, with what it was made of.
#[derive(Debug, Clone)]
pub struct FsResults {
    /// The run's report.
    pub report: FsReport,
    /// Its definition (None for the self-test, which has none).
    pub def: Option<FsDef>,
    /// Capabilities less supported than the committed matrix says
    /// (these make the bench fail, so they are failures here too).
    pub regressions: Vec<Difference>,
}

/// A test case's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Passed (for a capability cell: native, emulated or degraded, and
    /// not less than committed).
    Pass,
    /// Failed, with the message.
    Fail(String),
    /// Not run or not supported here, with the reason (the errno first
    /// for an unsupported capability).
    Skip(String),
}

/// One test case: a scenario record, a capability cell, or the
/// filesystem's set-up when it could not be made.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// `copy/cache_drop`, `caps/punch_hole`, `setup/mkfs_and_mount`.
    pub name: String,
    /// The outcome.
    pub status: Status,
    /// Seconds it took, where measured (capability cells are not timed
    /// one by one: the whole report is, as `matrix/caps_report`).
    pub seconds: Option<f64>,
    /// For a capability cell: what was observed.
    pub cell: Option<CellFacts>,
    /// A measured figure, where the run has one for this case.
    pub figure: Option<Figure>,
}

/// A measured value with its unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figure {
    /// What it measures (`dio_offset_align`).
    pub name: &'static str,
    /// The value.
    pub value: f64,
    /// The unit symbol (`B`, `s`).
    pub unit: &'static str,
}

/// The observed facts behind a capability case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellFacts {
    /// `native`, `emulated`, `degraded`, `unsupported`, or `absent`
    /// (committed but not observed this time).
    pub support: String,
    /// The errno, symbolically.
    pub errno: Option<String>,
    /// Why degraded, which fallback emulates it, or what failed.
    pub reason: Option<String>,
    /// Observed values (alignments, bytes freed).
    pub detail: Option<String>,
    /// How it was verified.
    pub verified_by: Option<String>,
}

impl CellFacts {
    /// One line for logs and system-out: `native; verified by …`.
    pub fn summary(&self) -> String {
        let mut s = self.support.clone();
        for (label, v) in [
            ("errno", &self.errno),
            ("reason", &self.reason),
            ("detail", &self.detail),
            ("verified by", &self.verified_by),
        ] {
            if let Some(v) = v {
                s += &format!("; {label}: {v}");
            }
        }
        s
    }
}

/// Passed, failed and skipped cases.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Passed.
    pub passed: usize,
    /// Failed.
    pub failed: usize,
    /// Skipped.
    pub skipped: usize,
}

impl Counts {
    /// Counts `cases`.
    pub fn of<'a>(cases: impl IntoIterator<Item = &'a Case>) -> Counts {
        let mut c = Counts::default();
        for case in cases {
            match case.status {
                Status::Pass => c.passed += 1,
                Status::Fail(_) => c.failed += 1,
                Status::Skip(_) => c.skipped += 1,
            }
        }
        c
    }

    /// All cases.
    pub fn total(&self) -> usize {
        self.passed + self.failed + self.skipped
    }
}

impl std::ops::Add for Counts {
    type Output = Counts;
    fn add(self, o: Counts) -> Counts {
        Counts {
            passed: self.passed + o.passed,
            failed: self.failed + o.failed,
            skipped: self.skipped + o.skipped,
        }
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} tests: {} passed, {} failed, {} skipped",
            self.total(),
            self.passed,
            self.failed,
            self.skipped
        )
    }
}

/// Name of the case standing for a filesystem that could not be made.
pub const SETUP_CASE: &str = "setup/mkfs_and_mount";

/// The cases of one filesystem: its set-up if it failed or was skipped,
/// every scenario record, then every capability cell (sorted by name),
/// then regressions to capabilities no longer observed at all.
pub fn cases(fs: &FsResults) -> Vec<Case> {
    let r = &fs.report;
    let mut out = Vec::new();
    if let Some(setup) = &r.setup {
        out.push(Case {
            name: SETUP_CASE.into(),
            status: status_of(setup),
            seconds: Some(r.elapsed.as_secs_f64()),
            cell: None,
            figure: None,
        });
    }
    for rec in &r.records {
        out.push(Case {
            name: rec.scenario.to_owned(),
            status: status_of(&rec.outcome),
            seconds: Some(rec.elapsed.as_secs_f64()),
            cell: None,
            figure: None,
        });
    }
    let regression = |cap: &str| {
        fs.regressions
            .iter()
            .find(|d| d.capability == cap && d.is_regression())
    };
    if let Some(caps) = &r.caps {
        for (name, cell) in &caps.capabilities {
            let facts = CellFacts {
                support: cell.support.as_str().to_owned(),
                errno: cell.errno.clone(),
                reason: cell.reason.clone(),
                detail: cell.detail.clone(),
                verified_by: Some(cell.verified_by.clone()),
            };
            let status = if let Some(d) = regression(name) {
                Status::Fail(regression_message(d))
            } else if cell.support == Support::Unsupported {
                // The errno first: it is the reason a reader looks for.
                let errno = cell.errno.as_deref().unwrap_or("no errno");
                Status::Skip(match &cell.reason {
                    Some(why) => format!("{errno}: {why}"),
                    None => errno.to_owned(),
                })
            } else {
                Status::Pass
            };
            // The alignment O_DIRECT needs here, measured by statx
            // (STATX_DIOALIGN), is the one figure a capability cell has.
            let figure = (name == "o_direct" && !matches!(status, Status::Skip(_)))
                .then_some(caps.filesystem.dio_offset_align)
                .flatten()
                .map(|v| Figure {
                    name: "dio_offset_align",
                    value: f64::from(v),
                    unit: "B",
                });
            out.push(Case {
                name: format!("caps/{name}"),
                status,
                seconds: None,
                cell: Some(facts),
                figure,
            });
        }
        for (name, why) in &caps.not_tried {
            if caps.capabilities.contains_key(name) {
                continue;
            }
            out.push(Case {
                name: format!("caps/{name}"),
                status: Status::Skip(format!("not tried: {why}")),
                seconds: None,
                cell: None,
                figure: None,
            });
        }
    }
    let observed = |cap: &str| {
        r.caps
            .as_ref()
            .is_some_and(|c| c.capabilities.contains_key(cap) || c.not_tried.contains_key(cap))
    };
    for d in &fs.regressions {
        if d.is_regression() && !observed(&d.capability) {
            out.push(Case {
                name: format!("caps/{}", d.capability),
                status: Status::Fail(regression_message(d)),
                seconds: None,
                cell: Some(CellFacts {
                    support: "absent".into(),
                    errno: None,
                    reason: None,
                    detail: None,
                    verified_by: None,
                }),
                figure: None,
            });
        }
    }
    out
}

fn status_of(o: &Outcome) -> Status {
    match o {
        Outcome::Pass => Status::Pass,
        Outcome::Fail(w) => Status::Fail(w.clone()),
        Outcome::Skip(w) => Status::Skip(w.clone()),
    }
}

fn regression_message(d: &Difference) -> String {
    let name = |s: Option<Support>| s.map_or("absent", |s| s.as_str());
    format!(
        "regression: {} {} was {} in the committed matrix, now {}",
        d.fs,
        d.capability,
        name(d.before),
        name(d.after)
    )
}

impl RunResults {
    /// Counts over every case of every filesystem: what junit.xml and
    /// kcidb.json hold, and what the bench prints after its summary.
    pub fn counts(&self) -> Counts {
        self.filesystems
            .iter()
            .map(|fs| Counts::of(&cases(fs)))
            .fold(Counts::default(), |a, b| a + b)
    }

    /// The facts of the running system, for `reports` that started at
    /// `started`, with `regressions` (from the comparison with the
    /// committed matrix) attributed to their filesystems.
    pub fn of_this_system(
        reports: &[FsReport],
        defs: &[FsDef],
        regressions: &[Difference],
        started: SystemTime,
    ) -> RunResults {
        let uname = rustix::system::uname();
        let s = |c: &std::ffi::CStr| c.to_string_lossy().into_owned();
        RunResults {
            kernel_release: s(uname.release()),
            kernel_version: s(uname.version()),
            arch: s(uname.machine()),
            hostname: s(uname.nodename()),
            machine: crate::matrix::machine_label(),
            started: started
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            filesystems: reports
                .iter()
                .map(|r| FsResults {
                    report: r.clone(),
                    def: defs.iter().find(|d| d.name == r.fs).cloned(),
                    regressions: regressions
                        .iter()
                        .filter(|d| d.fs == r.fs && d.is_regression())
                        .cloned()
                        .collect(),
                })
                .collect(),
        }
    }
}

/// `secs` since the epoch as RFC 3339 UTC (`2026-12-01T03:30:00+00:00`),
/// the form both JUnit timestamps and KCIDB's `date-time` accept.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm), as matrix::today.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}+00:00",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A run with every kind of case and hostile strings in every field a
/// document copies, for the format modules' snapshot tests and for
/// `sparsekit-testbench results-sample` (validated by readers we did not
/// write in `cargo xtask ci`).
pub fn sample() -> RunResults {
    use crate::runner::Record;
    use sparsekit_caps::Cell;
    use std::time::Duration;
    let def = |name: &str, fstype: &str, mkfs: &[&str], opts: &str| FsDef {
        name: name.into(),
        fstype: fstype.into(),
        mkfs: mkfs.iter().map(|s| s.to_string()).collect(),
        package: None,
        mount_options: opts.into(),
        image_size: "512M".into(),
        device: None,
        nbd_options: Vec::new(),
        over: None,
        over_def: None,
    };
    let mut caps: sparsekit_caps::CapsReport = serde_json::from_value(serde_json::json!({
        "filesystem": {
            "fs_type": "ext4", "magic": "0xef53", "block_size": 4096,
            "directory": "/mnt/x", "device": "7:3", "dio_mem_align": 512,
            "dio_offset_align": 512, "kernel_release": "6.18.44-fc-v595",
            "scratch": "o_tmpfile"
        },
        "capabilities": {}
    }))
    .expect("a valid CapsReport");
    caps.capabilities.insert(
        "punch_hole".into(),
        Cell::native("fallocate(PUNCH_HOLE); read back zeros"),
    );
    let mut unsupported = Cell::native("FICLONE");
    unsupported.support = Support::Unsupported;
    unsupported.errno = Some("EOPNOTSUPP".into());
    caps.capabilities.insert("ficlone".into(), unsupported);
    let mut emulated = Cell::native("moved data, compared with the model");
    emulated.support = Support::Emulated;
    emulated.errno = Some("EOPNOTSUPP".into());
    emulated.reason = Some("move_data (sparsekit-punch fallback)".into());
    caps.capabilities.insert("collapse_range".into(), emulated);
    let mut degraded = Cell::native("O_DIRECT write, then cachestat");
    degraded.support = Support::Degraded;
    degraded.reason = Some("16 of 16 pages left in the cache <&>\"'".into());
    caps.capabilities.insert("o_direct".into(), degraded);
    caps.capabilities
        .insert("zero_range".into(), Cell::native("fallocate(ZERO_RANGE)"));
    caps.not_tried.insert(
        "copy_file_range_cross_fs".into(),
        "no second directory".into(),
    );
    let rec = |scenario, outcome, ms| Record {
        scenario,
        outcome,
        elapsed: Duration::from_millis(ms),
    };
    let ext4 = FsReport {
        fs: "ext4".into(),
        setup: None,
        records: vec![
            rec("matrix/caps_report", Outcome::Pass, 120),
            rec("copy/cache_drop", Outcome::Pass, 1500),
            rec(
                "clone/ficlone_shares",
                Outcome::Skip("FICLONE: EOPNOTSUPP (Operation not supported)".into()),
                3,
            ),
            rec(
                "punch/hostile <tag attr=\"x\"> & 'quotes' ]]> \u{1}\u{0}\n",
                Outcome::Fail(
                    "content differs at offset 4096: expected <0x00>, got \"0xff\" & more ]]>\n\
                     second line\ttab \u{7f} \u{1b}[31m \u{fffe}"
                        .into(),
                ),
                250,
            ),
        ],
        elapsed: Duration::from_millis(4000),
        caps: Some(caps),
        faults: None,
        unmeasured: Vec::new(),
    };
    let btrfs = FsReport {
        fs: "btrfs-zstd".into(),
        setup: Some(Outcome::Skip(
            "mkfs.btrfs not found (install btrfs-progs)".into(),
        )),
        records: Vec::new(),
        elapsed: Duration::from_millis(10),
        caps: None,
        faults: None,
        unmeasured: Vec::new(),
    };
    let selftest = FsReport {
        fs: "selftest".into(),
        setup: None,
        records: vec![rec("selftest/sigint_leaves_nothing", Outcome::Pass, 900)],
        elapsed: Duration::from_millis(900),
        caps: None,
        faults: None,
        unmeasured: Vec::new(),
    };
    RunResults {
        kernel_release: "6.18.44-fc-v595".into(),
        kernel_version: "#1 SMP PREEMPT_DYNAMIC Tue Nov 25 10:00:00 UTC 2026".into(),
        arch: "x86_64".into(),
        hostname: "bench<1>&\"host\"".into(),
        machine: "x86_64, 2 CPUs, 24 GiB".into(),
        started: 1_796_094_000,
        filesystems: vec![
            FsResults {
                report: selftest,
                def: None,
                regressions: Vec::new(),
            },
            FsResults {
                report: ext4,
                def: Some(def("ext4", "ext4", &["mkfs.ext4", "-F", "-q"], "")),
                regressions: vec![
                    Difference {
                        fs: "ext4".into(),
                        capability: "zero_range".into(),
                        before: Some(Support::Native),
                        after: Some(Support::Native),
                    },
                    Difference {
                        fs: "ext4".into(),
                        capability: "o_direct".into(),
                        before: Some(Support::Native),
                        after: Some(Support::Degraded),
                    },
                    Difference {
                        fs: "ext4".into(),
                        capability: "seek_data_hole".into(),
                        before: Some(Support::Native),
                        after: None,
                    },
                ],
            },
            FsResults {
                report: btrfs,
                def: Some(def(
                    "btrfs-zstd",
                    "btrfs",
                    &["mkfs.btrfs", "-f", "-q"],
                    "compress-force=zstd",
                )),
                regressions: Vec::new(),
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00+00:00");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00+00:00");
        assert_eq!(rfc3339(1_796_094_000 + 3661), "2026-12-01T04:01:01+00:00");
    }

    #[test]
    fn every_record_and_cell_is_one_case() {
        let run = sample();
        let names: Vec<Vec<String>> = run
            .filesystems
            .iter()
            .map(|fs| cases(fs).into_iter().map(|c| c.name).collect())
            .collect();
        assert_eq!(names[0], ["selftest/sigint_leaves_nothing"]);
        // 4 records, 5 cells, 1 not tried, 1 regression to an absent cell.
        assert_eq!(names[1].len(), 4 + 5 + 1 + 1);
        assert_eq!(names[2], [SETUP_CASE]);
        let c = run.counts();
        assert_eq!(
            c,
            Counts {
                passed: 1 + 2 + 3,
                failed: 1 + 2,
                skipped: 1 + 2 + 1
            },
            "{c}"
        );
    }

    #[test]
    fn unsupported_cells_skip_with_the_errno_first_and_regressions_fail() {
        let run = sample();
        let ext4 = cases(&run.filesystems[1]);
        let get = |n: &str| ext4.iter().find(|c| c.name == n).unwrap().status.clone();
        assert_eq!(get("caps/ficlone"), Status::Skip("EOPNOTSUPP".into()));
        assert_eq!(get("caps/collapse_range"), Status::Pass);
        // A difference that is not a regression (same support) is no failure.
        assert_eq!(get("caps/zero_range"), Status::Pass);
        assert!(
            matches!(get("caps/o_direct"), Status::Fail(m) if m.contains("was native") && m.contains("now degraded"))
        );
        assert!(matches!(get("caps/seek_data_hole"), Status::Fail(m) if m.contains("now absent")));
    }
}
