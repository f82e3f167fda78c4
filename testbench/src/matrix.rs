//! The capability matrix: filesystem × capability → [`Cell`], one column per
//! kernel release and machine, kept at the end of `matrix.toml` below
//! [`RESULTS_MARKER`] (the `[[filesystem]]` definitions above it are
//! hand-written and never rewritten).
//!
//! A bench run produces one [`Column`]; it is compared with the committed
//! column for the running kernel ([`compare`]: a capability less supported
//! than committed is a regression), written to `target/testbench/`, and with
//! `--bless` stored in `matrix.toml`. Columns from several machines or
//! kernels combine with [`Matrix::merge`]; [`markdown`] renders the tables
//! the README shows between [`README_START`] and [`README_END`].

use crate::identity;
pub use crate::scenarios::faults::tally::FaultTally;
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
pub use sparsekit_caps::{Cell, Support};
use std::collections::BTreeMap;
use std::path::Path;

/// The line after which `matrix.toml` is generated.
pub const RESULTS_MARKER: &str = "# ---- results: written by `cargo xtask testbench --bless`; edit the definitions above, not below ----";
/// README marker before the generated tables.
pub const README_START: &str =
    "<!-- matrix:start (generated from matrix.toml by `cargo xtask matrix readme`) -->";
/// README marker after the generated tables.
pub const README_END: &str = "<!-- matrix:end -->";

/// The results of one bench run: one kernel on one machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    /// `uname -r`: the release string, which names one build.
    pub kernel: String,
    /// The upstream version (`6.1.158`), see [`identity::version_of`]. Empty
    /// in columns recorded before it existed: then derived from `kernel`.
    #[serde(default)]
    pub version: String,
    /// The package the kernel came from, `NAME VERSION`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    /// Architecture, CPUs and memory (or `$SPARSEKIT_MACHINE`).
    pub machine: String,
    /// Date of the run (UTC, `YYYY-MM-DD`).
    pub recorded: String,
    /// Filesystem name → scenario counts of the run (absent in columns
    /// recorded before they were kept).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scenarios: BTreeMap<String, Counts>,
    /// Filesystem name → capability name → cell.
    pub filesystems: BTreeMap<String, BTreeMap<String, Cell>>,
    /// Filesystem name → the fault scenarios' counts (faults injected,
    /// survived, bytes of data lost).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub faults: BTreeMap<String, FaultTally>,
    /// Filesystem name → the cells a narrowed run (`--filter`) did not
    /// measure because the scenarios that make them were not selected: not
    /// a regression when absent, and kept from the committed column when
    /// blessed. Only in a run's own column, never in a committed one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unmeasured: BTreeMap<String, Vec<String>>,
}

impl Column {
    /// The label of the column in reports:
    /// `Linux 6.1.0-41-amd64 (6.1.158, linux-image-6.1.0-41-amd64 6.1.158-1; x86_64, 2 CPUs)`.
    pub fn label(&self) -> String {
        let version = identity::column_version(self);
        let package = self
            .package
            .as_deref()
            .map(|p| format!(", {p}"))
            .unwrap_or_default();
        format!(
            "Linux {} ({version}{package}; {})",
            self.kernel, self.machine
        )
    }
}

/// Scenario outcomes on one filesystem.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counts {
    /// Scenarios that passed.
    pub passed: usize,
    /// Scenarios that failed (or the filesystem could not be made).
    pub failed: usize,
    /// Scenarios skipped, with a reason, as not applicable here.
    pub skipped: usize,
}

/// All columns (the generated part of `matrix.toml`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Matrix {
    /// Columns in order of kernel version, release, then machine.
    #[serde(default, rename = "results")]
    pub columns: Vec<Column>,
}

impl Matrix {
    /// Reads the results of a `matrix.toml` (definitions are ignored here).
    pub fn load(path: &Path) -> anyhow::Result<Matrix> {
        let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
        Self::parse(&text).with_context(|| format!("{}: invalid results", path.display()))
    }

    /// Parses the generated part of a `matrix.toml` text.
    pub fn parse(text: &str) -> anyhow::Result<Matrix> {
        let generated = text
            .split_once(RESULTS_MARKER)
            .map_or("", |(_, after)| after);
        Ok(toml::from_str(generated)?)
    }

    /// Records `column`: a new kernel/machine pair adds a column; for a
    /// pair already present, the filesystems `column` covers replace theirs
    /// (a run of some filesystems keeps the others' results).
    pub fn upsert(&mut self, mut column: Column) {
        let unmeasured = std::mem::take(&mut column.unmeasured);
        match self
            .columns
            .iter_mut()
            .find(|c| c.kernel == column.kernel && c.machine == column.machine)
        {
            Some(existing) => {
                existing.recorded = column.recorded;
                existing.version = column.version;
                existing.package = column.package;
                for (fs, mut cells) in column.filesystems {
                    // What this run did not measure stays as committed.
                    let kept = existing.filesystems.get(&fs);
                    for name in unmeasured.get(&fs).into_iter().flatten() {
                        if let Some(cell) = kept.and_then(|k| k.get(name)) {
                            cells.entry(name.clone()).or_insert_with(|| cell.clone());
                        }
                    }
                    existing.filesystems.insert(fs, cells);
                }
                existing.scenarios.extend(column.scenarios);
                existing.faults.extend(column.faults);
            }
            None => self.columns.push(column),
        }
        self.columns.sort_by_cached_key(|c| {
            (
                identity::column_version(c),
                c.kernel.clone(),
                c.machine.clone(),
            )
        });
    }

    /// Combines matrices from several machines or kernels (see [`upsert`](Self::upsert)).
    pub fn merge(mut self, other: Matrix) -> Matrix {
        for c in other.columns {
            self.upsert(c);
        }
        self
    }

    /// The committed column to compare `observed` with, and why (see
    /// [`identity::choose_baseline`]).
    pub fn baseline(&self, observed: &Column) -> Option<(identity::Basis, &Column)> {
        identity::choose_baseline(&self.columns, observed)
    }

    /// The verdict on `observed`: its baseline, the differences, and
    /// whether they fail the run.
    pub fn judge(&self, observed: &Column) -> Judgement<'_> {
        match self.baseline(observed) {
            None => Judgement {
                baseline: None,
                differences: Vec::new(),
            },
            Some((basis, base)) => Judgement {
                baseline: Some((basis, base)),
                differences: compare(base, observed),
            },
        }
    }

    /// `matrix.toml`'s text with the generated part replaced by `self`.
    pub fn write_into(&self, matrix_toml: &str) -> anyhow::Result<String> {
        let defs = matrix_toml
            .split_once(RESULTS_MARKER)
            .map_or(matrix_toml, |(before, _)| before)
            .trim_end();
        let mut out = format!("{defs}\n\n{RESULTS_MARKER}\n\n");
        out += &toml::to_string(self)?;
        Ok(out)
    }
}

/// What a run is compared with and what differs (see [`Matrix::judge`]).
#[derive(Debug)]
pub struct Judgement<'a> {
    /// The committed column and why it was chosen; `None` only for an
    /// empty matrix.
    pub baseline: Option<(identity::Basis, &'a Column)>,
    /// Differences from the baseline to the run.
    pub differences: Vec<Difference>,
}

impl Judgement<'_> {
    /// Whether the run passes: no capability less supported than a
    /// baseline of the same release or series ([`identity::Basis::gates`]).
    pub fn passes(&self) -> bool {
        match self.baseline {
            Some((basis, _)) if basis.gates() => {
                !self.differences.iter().any(Difference::is_regression)
            }
            _ => true,
        }
    }
}

/// How well supported: unsupported < degraded < emulated < native.
pub fn rank(s: Support) -> u8 {
    match s {
        Support::Unsupported => 0,
        Support::Degraded => 1,
        Support::Emulated => 2,
        Support::Native => 3,
        #[allow(unreachable_patterns)]
        _ => 0,
    }
}

/// One difference between the committed and the observed matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    /// Filesystem.
    pub fs: String,
    /// Capability.
    pub capability: String,
    /// Committed support (None: not in the committed column).
    pub before: Option<Support>,
    /// Observed support (None: not observed this time).
    pub after: Option<Support>,
}

impl Difference {
    /// Less supported than committed, or no longer observed at all.
    pub fn is_regression(&self) -> bool {
        match (self.before, self.after) {
            (Some(b), Some(a)) => rank(a) < rank(b),
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = |s: Option<Support>| s.map_or("absent", |s| s.as_str());
        write!(
            f,
            "{} {}: {} -> {}{}",
            self.fs,
            self.capability,
            name(self.before),
            name(self.after),
            if self.is_regression() {
                "  (REGRESSION)"
            } else {
                ""
            }
        )
    }
}

/// Differences in support between `committed` and `observed`, for the
/// filesystems the run covered (a run of some filesystems says nothing of
/// the others) and the cells it measured ([`Column::unmeasured`]).
pub fn compare(committed: &Column, observed: &Column) -> Vec<Difference> {
    let mut diffs = Vec::new();
    for (fs, now) in &observed.filesystems {
        let empty = BTreeMap::new();
        let then = committed.filesystems.get(fs).unwrap_or(&empty);
        let unmeasured = observed.unmeasured.get(fs);
        let names: std::collections::BTreeSet<&String> = then.keys().chain(now.keys()).collect();
        for cap in names {
            if !now.contains_key(cap) && unmeasured.is_some_and(|u| u.contains(cap)) {
                continue;
            }
            let before = then.get(cap).map(|c| c.support);
            let after = now.get(cap).map(|c| c.support);
            if before != after {
                diffs.push(Difference {
                    fs: fs.clone(),
                    capability: cap.clone(),
                    before,
                    after,
                });
            }
        }
    }
    diffs
}

pub use crate::markdown::markdown;

/// `readme` with the text between the markers replaced by `tables`.
pub fn update_readme(readme: &str, tables: &str) -> anyhow::Result<String> {
    let Some((before, rest)) = readme.split_once(README_START) else {
        bail!("README.md lacks the marker {README_START}");
    };
    let Some((_, after)) = rest.split_once(README_END) else {
        bail!("README.md lacks the marker {README_END}");
    };
    Ok(format!(
        "{before}{README_START}\n{}\n{README_END}{after}",
        tables.trim_end()
    ))
}

/// The machine label of a column: `$SPARSEKIT_MACHINE`, else
/// `x86_64, 2 CPUs, 24 GiB`.
pub fn machine_label() -> String {
    if let Ok(m) = std::env::var("SPARSEKIT_MACHINE") {
        if !m.trim().is_empty() {
            return m.trim().to_owned();
        }
    }
    let uname = rustix::system::uname();
    let arch = uname.machine().to_string_lossy().into_owned();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| (kib + (1 << 19)) >> 20);
    format!("{arch}, {cpus} CPUs, {mem_gib} GiB")
}

/// `uname -r`.
pub fn kernel_release() -> String {
    rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned()
}

/// The package the running kernel came from, `NAME VERSION`:
/// `$SPARSEKIT_KERNEL_PACKAGE` (set by the VM launcher, or by a distribution
/// running the bench on its own kernel), else dpkg's record of
/// `linux-image-RELEASE` (Debian and Ubuntu name their image packages so),
/// else unknown.
pub fn kernel_package(release: &str) -> Option<String> {
    if let Ok(p) = std::env::var("SPARSEKIT_KERNEL_PACKAGE") {
        if !p.trim().is_empty() {
            return Some(p.trim().to_owned());
        }
    }
    let out = std::process::Command::new("dpkg-query")
        .args(["-W", "-f", "${Package} ${Version}"])
        .arg(format!("linux-image-{release}"))
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && text.split_whitespace().count() == 2).then_some(text)
}

/// The identity of the running kernel: (release, version, package).
pub fn kernel_identity() -> (String, String, Option<String>) {
    let release = kernel_release();
    let uname_version = rustix::system::uname()
        .version()
        .to_string_lossy()
        .into_owned();
    let package = kernel_package(&release);
    let package_version = package.as_deref().and_then(|p| p.split_whitespace().nth(1));
    let version = identity::version_of(&release, &uname_version, package_version);
    (release, version, package)
}

/// Today's date, UTC, from the system clock (no date crate needed).
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(support: Support, errno: Option<&str>) -> Cell {
        Cell {
            support,
            errno: errno.map(String::from),
            reason: None,
            detail: None,
            verified_by: "test".into(),
        }
    }

    fn column(kernel: &str, cells: &[(&str, &str, Support)]) -> Column {
        let mut filesystems: BTreeMap<String, BTreeMap<String, Cell>> = BTreeMap::new();
        for (fs, cap, s) in cells {
            filesystems
                .entry(fs.to_string())
                .or_default()
                .insert(cap.to_string(), cell(*s, None));
        }
        Column {
            kernel: kernel.into(),
            version: String::new(),
            package: None,
            machine: "m".into(),
            recorded: "2026-11-25".into(),
            scenarios: BTreeMap::new(),
            filesystems,
            faults: BTreeMap::new(),
            unmeasured: BTreeMap::new(),
        }
    }

    #[test]
    fn a_cell_a_narrowed_run_did_not_measure_is_neither_lost_nor_a_regression() {
        let committed = column(
            "6.12",
            &[
                ("nfs", "outage_unreachable_soft", Support::Degraded),
                ("nfs", "outage_stopped_soft", Support::Native),
            ],
        );
        let mut narrowed = column("6.12", &[("nfs", "outage_stopped_soft", Support::Native)]);
        assert!(compare(&committed, &narrowed)[0].is_regression());
        narrowed
            .unmeasured
            .insert("nfs".into(), vec!["outage_unreachable_soft".into()]);
        assert_eq!(compare(&committed, &narrowed), Vec::new());
        let mut m = Matrix::default();
        m.upsert(committed.clone());
        m.upsert(narrowed);
        assert_eq!(m.columns, vec![committed]);
    }

    #[test]
    fn less_support_is_a_regression_more_is_not() {
        let before = column(
            "6.18",
            &[
                ("xfs", "ficlone", Support::Native),
                ("xfs", "punch_hole", Support::Degraded),
            ],
        );
        let after = column(
            "6.18",
            &[
                ("xfs", "ficlone", Support::Unsupported),
                ("xfs", "punch_hole", Support::Native),
            ],
        );
        let d = compare(&before, &after);
        assert_eq!(d.len(), 2);
        assert!(
            d.iter()
                .find(|x| x.capability == "ficlone")
                .unwrap()
                .is_regression()
        );
        assert!(
            !d.iter()
                .find(|x| x.capability == "punch_hole")
                .unwrap()
                .is_regression()
        );
    }

    #[test]
    fn a_capability_no_longer_observed_is_a_regression_and_other_filesystems_are_ignored() {
        let before = column(
            "6.18",
            &[
                ("xfs", "ficlone", Support::Native),
                ("btrfs", "ficlone", Support::Native),
            ],
        );
        let after = column("6.18", &[("xfs", "fiemap", Support::Native)]);
        let d = compare(&before, &after);
        assert!(
            d.iter()
                .any(|x| x.capability == "ficlone" && x.is_regression())
        );
        assert!(d.iter().all(|x| x.fs == "xfs"));
    }

    #[test]
    fn results_round_trip_below_the_marker_and_definitions_survive() {
        let defs = "# comment kept\n[[filesystem]]\nname = \"ext4\"\nfstype = \"ext4\"\n";
        let mut m = Matrix::default();
        m.upsert(column("6.18", &[("ext4", "fiemap", Support::Native)]));
        let text = m.write_into(defs).unwrap();
        assert!(text.starts_with(defs.trim_end()));
        assert_eq!(Matrix::parse(&text).unwrap(), m);
        // Rewriting is idempotent.
        assert_eq!(m.write_into(&text).unwrap(), text);
    }

    #[test]
    fn merge_keeps_one_column_per_kernel_and_machine() {
        let mut a = Matrix::default();
        a.upsert(column("6.1", &[("ext4", "fiemap", Support::Native)]));
        a.upsert(column("6.18", &[("ext4", "fiemap", Support::Native)]));
        let mut b = Matrix::default();
        b.upsert(column("6.18", &[("ext4", "fiemap", Support::Degraded)]));
        b.upsert(column("6.18", &[("xfs", "fiemap", Support::Native)]));
        let m = a.merge(b);
        assert_eq!(m.columns.len(), 2);
        let col = m.columns.iter().find(|c| c.kernel == "6.18").unwrap();
        assert_eq!(col.filesystems["ext4"]["fiemap"].support, Support::Degraded);
        assert_eq!(col.filesystems["xfs"]["fiemap"].support, Support::Native);
    }

    #[test]
    fn readme_tables_replace_only_the_marked_part() {
        let readme = format!("intro\n{README_START}\nOLD-TABLES\n{README_END}\noutro\n");
        let mut m = Matrix::default();
        m.upsert(column(
            "6.18",
            &[
                ("ext4", "fiemap", Support::Native),
                ("tmpfs", "fiemap", Support::Unsupported),
            ],
        ));
        let md = markdown(&m, &["ext4".into(), "tmpfs".into()]);
        assert!(md.contains("| `fiemap` | native |"), "{md}");
        let new = update_readme(&readme, &md).unwrap();
        assert!(
            new.starts_with("intro\n") && new.ends_with("\noutro\n") && !new.contains("OLD-TABLES")
        );
        assert_eq!(update_readme(&new, &md).unwrap(), new);
        assert!(update_readme("no markers", &md).is_err());
    }

    #[test]
    fn columns_recorded_before_versions_existed_still_parse_and_derive_their_version() {
        let old = format!(
            "{RESULTS_MARKER}\n[[results]]\nkernel = \"6.18.44-fc-v595\"\nmachine = \"m\"\n\
             recorded = \"2026-11-25\"\n[results.filesystems.ext4.fiemap]\n\
             support = \"native\"\nverified_by = \"t\"\n"
        );
        let m = Matrix::parse(&old).unwrap();
        assert_eq!(m.columns[0].version, "");
        assert_eq!(
            identity::column_version(&m.columns[0]).to_string(),
            "6.18.44"
        );
        assert!(
            m.columns[0].label().contains("(6.18.44; m)"),
            "{}",
            m.columns[0].label()
        );
    }

    #[test]
    fn columns_sort_by_version_numerically() {
        let mut m = Matrix::default();
        for k in ["6.18.44-x", "6.12.57+deb12-amd64", "6.1.0-41-amd64"] {
            m.upsert(column(k, &[("ext4", "fiemap", Support::Native)]));
        }
        let order: Vec<&str> = m.columns.iter().map(|c| c.kernel.as_str()).collect();
        assert_eq!(
            order,
            ["6.1.0-41-amd64", "6.12.57+deb12-amd64", "6.18.44-x"]
        );
    }

    #[test]
    fn less_support_fails_within_a_series_and_is_reported_across_series() {
        let mut committed = Matrix::default();
        committed.upsert(column(
            "6.18.44-fc-v595",
            &[("ext4", "cachestat", Support::Native)],
        ));
        let worse = |kernel: &str| column(kernel, &[("ext4", "cachestat", Support::Emulated)]);
        // Another build of the same kernel (issue 12): now a regression.
        let j = committed.judge(&worse("6.18.44-fc-v857"));
        assert_eq!(j.baseline.unwrap().0, identity::Basis::SameSeries);
        assert!(!j.passes());
        // The same release.
        assert!(!committed.judge(&worse("6.18.44-fc-v595")).passes());
        // Another series: a kernel difference, reported but passing.
        let j = committed.judge(&worse("6.1.0-57-amd64"));
        assert_eq!(j.baseline.unwrap().0, identity::Basis::NewerKernel);
        assert_eq!(j.differences.len(), 1);
        assert!(j.passes());
        // More support passes anywhere; an empty matrix has no baseline.
        let better = column("6.18.44-fc-v857", &[("ext4", "cachestat", Support::Native)]);
        assert!(committed.judge(&better).passes());
        assert!(Matrix::default().judge(&better).baseline.is_none());
    }

    #[test]
    fn fault_counts_round_trip_and_render_and_old_results_still_parse() {
        let mut c = column("6.18", &[("ext4", "fiemap", Support::Native)]);
        c.faults.insert(
            "ext4".into(),
            FaultTally {
                cases: 2,
                injected: 5,
                survived: 4,
                data_lost: 0,
            },
        );
        let mut m = Matrix::default();
        m.upsert(c);
        let text = m.write_into("").unwrap();
        assert!(text.contains("[results.faults.ext4]"), "{text}");
        assert_eq!(Matrix::parse(&text).unwrap(), m);
        let md = markdown(&m, &["ext4".into()]);
        assert!(md.contains("| 6.18 | 2 / 5 / 4 / 0 |"), "{md}");
        // Columns without fault counts still parse: the guest columns'
        // subset runs no faults/ scenario, so they record none.
        let committed = Matrix::load(&crate::defs::matrix_path()).unwrap();
        assert!(
            committed
                .columns
                .iter()
                .any(|c| c.faults.is_empty() && !c.scenarios.is_empty()),
            "no committed column without fault counts"
        );
    }

    #[test]
    fn dates() {
        let t = today();
        assert_eq!(t.len(), 10);
        assert!(t.starts_with("20"));
    }
}
