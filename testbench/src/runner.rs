//! Runs scenarios on each filesystem and summarises pass / fail / skip.

use crate::defs::FsDef;
use crate::fixture::MountedFs;
use crate::scenario::{Ctx, Scenario, Verdict};
use crate::scenarios::faults::tally::{self, FaultTally};
use crate::tools;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

/// The outcome of one scenario on one filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every check held.
    Pass,
    /// A check failed, an error escaped, or it panicked.
    Fail(String),
    /// Not applicable or not supported here, with the reason.
    Skip(String),
}

/// One scenario's record.
#[derive(Debug, Clone)]
pub struct Record {
    /// Scenario name.
    pub scenario: &'static str,
    /// What happened.
    pub outcome: Outcome,
    /// How long it took.
    pub elapsed: Duration,
}

/// Everything that happened on one filesystem.
#[derive(Debug, Clone)]
pub struct FsReport {
    /// Definition name.
    pub fs: String,
    /// Set when the filesystem itself could not be made (tools missing:
    /// skipped; mkfs or mount failing: failed).
    pub setup: Option<Outcome>,
    /// Per-scenario records.
    pub records: Vec<Record>,
    /// Wall time including mkfs and mount.
    pub elapsed: Duration,
    /// The capability report of the mounted filesystem (the matrix cells).
    pub caps: Option<sparsekit_caps::CapsReport>,
    /// Faults injected, survived and data lost by the fault scenarios
    /// (`None` if none ran).
    pub faults: Option<FaultTally>,
    /// Matrix cells made by scenarios `--filter` left out (see
    /// [`Column::unmeasured`](crate::matrix::Column::unmeasured)).
    pub unmeasured: Vec<String>,
}

impl FsReport {
    /// (passed, failed, skipped).
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for r in &self.records {
            match r.outcome {
                Outcome::Pass => c.0 += 1,
                Outcome::Fail(_) => c.1 += 1,
                Outcome::Skip(_) => c.2 += 1,
            }
        }
        match &self.setup {
            Some(Outcome::Fail(_)) => c.1 += 1,
            Some(Outcome::Skip(_)) => c.2 += 1,
            _ => {}
        }
        c
    }
}

/// Options of a run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Install missing mkfs tools with apt-get (as root on Debian).
    pub install: bool,
    /// Only scenarios whose name contains one of these comma-separated
    /// texts (`caps/,punch/model`).
    pub filter: Option<String>,
}

/// The prefix of the scenarios that run on block-device definitions (and
/// only there).
pub const BLOCK_SCENARIOS: &str = "blockdev/";

/// Where on a block definition's device the caps trials write.
const BLOCK_TRIAL_RANGE: u64 = 1 << 20;

/// Runs `scenarios` on a fresh mount of `def`.
pub fn run_fs(def: &FsDef, scenarios: &[Scenario], opts: &RunOptions) -> FsReport {
    let started = Instant::now();
    let mut report = FsReport {
        fs: def.name.clone(),
        setup: None,
        records: Vec::new(),
        elapsed: Duration::ZERO,
        caps: None,
        faults: None,
        unmeasured: Vec::new(),
    };
    println!("== {} ({})", def.name, describe(def));
    if let Err(reason) = tools::ensure(def, opts.install) {
        println!("  SKIP {}: {reason}", def.name);
        report.setup = Some(Outcome::Skip(reason));
        report.elapsed = started.elapsed();
        return report;
    }
    let fs = match MountedFs::mount(def) {
        Ok(fs) => fs,
        Err(e) => {
            // mount(2) asked the kernel to load the module itself; if the
            // type is still not registered, this kernel cannot have it:
            // a definition that does not apply, not a failure.
            let registered = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
            if let Some(reason) = missing_fs_type(def, &registered) {
                println!("  SKIP {}: {reason}", def.name);
                report.setup = Some(Outcome::Skip(reason));
                report.elapsed = started.elapsed();
                return report;
            }
            println!("  FAIL {}: cannot make the filesystem: {e:#}", def.name);
            report.setup = Some(Outcome::Fail(format!("{e:#}")));
            report.elapsed = started.elapsed();
            return report;
        }
    };
    // The matrix cells: every capability tried on this filesystem.
    let t = Instant::now();
    // The temporary directory is another filesystem than the mount, for
    // `copy_file_range_cross_fs`.
    let caps_options = sparsekit_caps::CapsOptions::new().cross_fs_dir(std::env::temp_dir());
    let probed = match fs.device().filter(|_| def.is_block()) {
        // The block rows, on the device's first MiB (the scenarios
        // overwrite the whole device anyway).
        Some(dev) => sparsekit_caps::probe_block_device(dev, 0..BLOCK_TRIAL_RANGE),
        None => caps_options.probe(fs.mountpoint()),
    };
    let outcome = match probed {
        Ok(caps) if caps.capabilities.is_empty() => Outcome::Fail("no capability was tried".into()),
        Ok(caps) => {
            println!(
                "  caps: {} capabilities classified in {:.2?}",
                caps.capabilities.len(),
                t.elapsed()
            );
            report.caps = Some(caps);
            Outcome::Pass
        }
        Err(e) => Outcome::Fail(format!("{e}")),
    };
    if let Outcome::Fail(why) = &outcome {
        println!("  FAIL matrix/caps_report: {why}");
    }
    report.records.push(Record {
        scenario: "matrix/caps_report",
        outcome,
        elapsed: t.elapsed(),
    });
    // Counts of an earlier filesystem (or an aborted run) are not ours.
    let _ = tally::take();
    let _ = crate::scenarios::nfs::take_cells();
    for s in scenarios {
        if !selected(opts.filter.as_deref(), s.name) {
            if let Some(cell) = crate::scenarios::nfs::cell_of(s.name, def) {
                report.unmeasured.push(cell);
            }
            continue;
        }
        // Block definitions have no filesystem to run file scenarios on;
        // filesystems have no device of their own for the block ones.
        if s.name.starts_with(BLOCK_SCENARIOS) != def.is_block() {
            continue;
        }
        let rec = run_one(&fs, s);
        match &rec.outcome {
            Outcome::Pass => println!("  PASS {} ({:.2?})", s.name, rec.elapsed),
            Outcome::Skip(why) => println!("  SKIP {}: {why}", s.name),
            Outcome::Fail(why) => println!("  FAIL {} ({:.2?}): {why}", s.name, rec.elapsed),
        }
        report.records.push(rec);
    }
    report.faults = tally::take();
    // What each NFS mount type did in an outage: rows of the matrix.
    if let Some(caps) = &mut report.caps {
        caps.capabilities
            .extend(crate::scenarios::nfs::take_cells());
    }
    drop(fs);
    report.elapsed = started.elapsed();
    report
}

/// Whether scenario `name` is in `filter` (comma-separated texts, any of
/// which it must contain; no filter: every scenario).
pub fn selected(filter: Option<&str>, name: &str) -> bool {
    filter.is_none_or(|f| {
        f.split(',')
            .any(|part| !part.is_empty() && name.contains(part))
    })
}

/// Why `def` cannot be mounted on this kernel, if a type it needs (its own
/// or its base's) is not in `proc_filesystems` (the text of
/// /proc/filesystems: `[nodev]\tNAME` lines).
pub fn missing_fs_type(def: &FsDef, proc_filesystems: &str) -> Option<String> {
    let registered = |t: &str| {
        proc_filesystems
            .lines()
            .any(|l| l.split_whitespace().last() == Some(t))
    };
    let mut d = Some(def);
    while let Some(cur) = d {
        if !registered(&cur.fstype) {
            return Some(format!(
                "this kernel has no {:?} filesystem: not in /proc/filesystems even after mount(2) asked for it (module missing?)",
                cur.fstype
            ));
        }
        d = cur.over_def.as_deref();
    }
    None
}

fn describe(def: &FsDef) -> String {
    let mut d = if let Some(base) = &def.over_def {
        format!("mount -t {} over {}", def.fstype, base.name)
    } else if let Some(device) = &def.device {
        format!("block device: {device} {}", def.nbd_options.join(" "))
    } else if def.mkfs.is_empty() {
        format!("mount -t {}", def.fstype)
    } else {
        def.mkfs.join(" ")
    };
    if !def.mount_options.is_empty() {
        d += &format!(", -o {}", def.mount_options);
    }
    d
}

/// One scenario in its own scratch directory, panics caught.
fn run_one(fs: &MountedFs, s: &Scenario) -> Record {
    let started = Instant::now();
    let dir = fs.mountpoint().join(s.name.replace('/', "_"));
    let outcome = match std::fs::create_dir_all(&dir) {
        Err(e) => Outcome::Fail(format!("mkdir {}: {e}", dir.display())),
        Ok(()) => {
            let ctx = Ctx::new(fs, dir.clone());
            match catch_unwind(AssertUnwindSafe(|| (s.run)(&ctx))) {
                Ok(Ok(Verdict::Pass)) => Outcome::Pass,
                Ok(Ok(Verdict::Skip(why))) => Outcome::Skip(why),
                Ok(Err(e)) => Outcome::Fail(format!("{e:#}")),
                Err(panic) => Outcome::Fail(format!("panicked: {}", panic_message(&panic))),
            }
        }
    };
    // Scratch files go, so the next scenario sees an empty-ish filesystem.
    let _ = std::fs::remove_dir_all(&dir);
    Record {
        scenario: s.name,
        outcome,
        elapsed: started.elapsed(),
    }
}

/// The fault-injection table (faults injected, survived, bytes of data
/// lost, per filesystem); returns whether no data was lost.
fn print_fault_summary(reports: &[FsReport]) -> bool {
    let with: Vec<(&str, FaultTally)> = reports
        .iter()
        .filter_map(|r| Some((r.fs.as_str(), r.faults?)))
        .collect();
    if with.is_empty() {
        return true;
    }
    println!();
    println!(
        "{:<16} {:>6} {:>9} {:>9} {:>10}",
        "fault injection", "cases", "injected", "survived", "data lost"
    );
    let mut lost = 0;
    for (fs, t) in &with {
        lost += t.data_lost;
        println!(
            "{:<16} {:>6} {:>9} {:>9} {:>10}",
            fs, t.cases, t.injected, t.survived, t.data_lost
        );
    }
    if lost > 0 {
        println!("FAILED: the fault scenarios lost {lost} bytes of data");
    }
    lost == 0
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(non-string panic)".into())
}

/// The end-of-run summary table; returns whether everything passed or
/// skipped and no fault scenario lost data.
pub fn print_summary(reports: &[FsReport]) -> bool {
    println!();
    println!(
        "{:<16} {:>6} {:>6} {:>7} {:>9}",
        "filesystem", "passed", "failed", "skipped", "time"
    );
    let mut ok = true;
    let (mut tp, mut tf, mut ts) = (0, 0, 0);
    for r in reports {
        let (p, f, s) = r.counts();
        ok &= f == 0;
        tp += p;
        tf += f;
        ts += s;
        println!(
            "{:<16} {:>6} {:>6} {:>7} {:>8.1}s",
            r.fs,
            p,
            f,
            s,
            r.elapsed.as_secs_f64()
        );
    }
    println!("{:<16} {:>6} {:>6} {:>7}", "total", tp, tf, ts);
    ok &= print_fault_summary(reports);
    for r in reports {
        for rec in &r.records {
            if let Outcome::Fail(why) = &rec.outcome {
                println!("FAILED {} on {}: {why}", rec.scenario, r.fs);
            }
        }
        if let Some(Outcome::Fail(why)) = &r.setup {
            println!("FAILED setup of {}: {why}", r.fs);
        }
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    /// /proc/filesystems of a Debian 6.12 guest whose btrfs module is absent.
    const NO_BTRFS: &str =
        "nodev\tsysfs\nnodev\ttmpfs\nnodev\toverlay\n\text4\n\txfs\nnodev\tfuse\n";

    #[test]
    fn a_filter_selects_names_containing_any_of_its_parts() {
        assert!(selected(None, "punch/model_auto"));
        assert!(selected(Some("punch/"), "punch/model_auto"));
        assert!(selected(Some("caps/,punch/model"), "punch/model_auto"));
        assert!(selected(
            Some("caps/,punch/model"),
            "caps/named_scratch_clean"
        ));
        assert!(!selected(Some("caps/,punch/model"), "punch/dig_seek"));
        // An empty part (a trailing comma) selects nothing by itself.
        assert!(!selected(Some("caps/,"), "punch/dig_seek"));
    }

    #[test]
    fn a_filesystem_the_kernel_lacks_is_named_with_the_reason() {
        let defs = crate::defs::load(&crate::defs::matrix_path()).unwrap();
        let by = |n: &str| defs.iter().find(|d| d.name == n).unwrap();
        let why = missing_fs_type(by("btrfs"), NO_BTRFS).unwrap();
        assert!(
            why.contains("\"btrfs\"") && why.contains("/proc/filesystems"),
            "{why}"
        );
        assert!(missing_fs_type(by("btrfs-zstd"), NO_BTRFS).is_some());
        for present in ["ext4", "xfs", "tmpfs", "overlay-xfs"] {
            assert_eq!(missing_fs_type(by(present), NO_BTRFS), None, "{present}");
        }
        // An overlay is only as available as its base: no xfs, no overlay-xfs.
        let no_xfs = NO_BTRFS.replace("\txfs\n", "\n");
        let why = missing_fs_type(by("overlay-xfs"), &no_xfs).unwrap();
        assert!(why.contains("\"xfs\""), "{why}");
        // A name is matched whole: "ext4" does not make "ext" present.
        let mut ext = by("ext4").clone();
        ext.fstype = "ext".into();
        assert!(missing_fs_type(&ext, NO_BTRFS).is_some());
    }
}
