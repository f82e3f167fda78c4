//! After a run: the observed matrix column written to `target/testbench/`,
//! compared with the committed one, optionally blessed into `matrix.toml`
//! (and the README's tables); and the `matrix` subcommands.

use crate::defs::{self, FsDef};
use crate::identity;
use crate::matrix::{self, Column, Matrix};
use crate::results::RunResults;
use crate::runner::{FsReport, Outcome};
use crate::{junit, kcidb};
use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `target/testbench` of the workspace.
pub fn out_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/testbench")
}

fn readme_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")
}

/// The column this run observed.
pub fn column(reports: &[FsReport]) -> Column {
    let (kernel, version, package) = matrix::kernel_identity();
    Column {
        kernel,
        version,
        package,
        machine: matrix::machine_label(),
        recorded: matrix::today(),
        scenarios: reports
            .iter()
            .map(|r| {
                let (passed, failed, skipped) = r.counts();
                (
                    r.fs.clone(),
                    matrix::Counts {
                        passed,
                        failed,
                        skipped,
                    },
                )
            })
            .collect(),
        filesystems: reports
            .iter()
            .filter_map(|r| Some((r.fs.clone(), r.caps.as_ref()?.capabilities.clone())))
            .collect(),
        faults: reports
            .iter()
            .filter_map(|r| Some((r.fs.clone(), r.faults?)))
            .collect(),
        unmeasured: reports
            .iter()
            .filter(|r| !r.unmeasured.is_empty())
            .map(|r| (r.fs.clone(), r.unmeasured.clone()))
            .collect(),
    }
}

/// What to do with a run's results.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// Where matrix.{toml,md,json} go ([`out_dir`] by default; a VM guest
    /// writes into its shared directory, the workspace being read-only there).
    pub out: PathBuf,
    /// Compare with the committed matrix (a guest leaves that to the host's
    /// `collect`, which alone can bless).
    pub compare: bool,
    /// Write the column into matrix.toml and the README.
    pub bless: bool,
}

/// Writes matrix.{toml,md,json} under `opts.out`, then (unless told not
/// to) compares with the committed matrix and blesses if asked. Returns
/// whether there was no regression.
pub fn after_run(
    reports: &[FsReport],
    defs: &[FsDef],
    opts: &PublishOptions,
    started: std::time::SystemTime,
) -> anyhow::Result<bool> {
    let observed = column(reports);
    let dir = &opts.out;
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    // Not upserted: the run's own column keeps what it did not measure.
    let this_run = Matrix {
        columns: vec![observed.clone()],
    };
    let order: Vec<String> = defs.iter().map(|d| d.name.clone()).collect();
    std::fs::write(dir.join("matrix.toml"), this_run.write_into("")?)?;
    std::fs::write(dir.join("matrix.md"), matrix::markdown(&this_run, &order))?;
    std::fs::write(
        dir.join("matrix.json"),
        serde_json::to_string_pretty(&json_report(&observed, reports))?,
    )?;
    println!(
        "\nmatrix of this run: {}/matrix.{{toml,md,json}}",
        dir.display()
    );
    // A guest (no comparison here) reports its scenarios and cells; the
    // matrix verdict is the host's `collect`.
    let (ok, gating) = if opts.compare {
        judge_run(&observed, defs, opts.bless)?
    } else {
        (true, Vec::new())
    };
    write_ci_results(
        dir,
        &RunResults::of_this_system(reports, defs, &gating, started),
    )?;
    Ok(ok)
}

/// Compares `observed` with the committed column [`Matrix::baseline`]
/// picks, prints which and why, and blesses if asked. Returns whether
/// there was no regression: less support fails only against the same
/// release or series ([`Basis::gates`](crate::identity::Basis::gates)).
pub fn judge(observed: &Column, defs: &[FsDef], bless: bool) -> anyhow::Result<bool> {
    Ok(judge_run(observed, defs, bless)?.0)
}

/// [`judge`], also returning the differences that gate the run (none
/// against another series: reported, not failed), for junit/kcidb.
fn judge_run(
    observed: &Column,
    defs: &[FsDef],
    bless: bool,
) -> anyhow::Result<(bool, Vec<matrix::Difference>)> {
    let path = defs::matrix_path();
    let text = std::fs::read_to_string(&path)?;
    let mut committed = Matrix::parse(&text)?;
    println!("this run: {}", observed.label());
    let judgement = committed.judge(observed);
    let ok = judgement.passes();
    let gating = match judgement.baseline {
        Some((basis, _)) if basis.gates() => judgement.differences.clone(),
        _ => Vec::new(),
    };
    match judgement.baseline {
        None => println!(
            "matrix.toml holds no results yet: nothing to compare (record them with `cargo xtask testbench --bless`)"
        ),
        Some((basis, base)) => {
            let why = basis.describe(&identity::column_version(observed));
            println!("compared with {} — {why}", base.label());
            let diffs = &judgement.differences;
            if diffs.is_empty() {
                println!("matrix: identical");
            } else if basis.gates() {
                println!("matrix: differences (less support fails the run):");
                for d in diffs {
                    println!("  {d}");
                }
            } else {
                println!("matrix: kernel differences (another series: reported, not failed):");
                for d in diffs {
                    println!(
                        "  {}",
                        d.to_string().replace("  (REGRESSION)", "  (less support)")
                    );
                }
            }
        }
    }
    if bless {
        committed.upsert(observed.clone());
        std::fs::write(&path, committed.write_into(&text)?)?;
        update_readme(&committed, defs, false)?;
        println!(
            "blessed: wrote the results into {} and the README's tables",
            path.display()
        );
    }
    Ok((ok, gating))
}

/// Writes junit.xml, kcidb.json and counts.json (what both hold, for the
/// check with other readers in `cargo xtask ci`) into `dir`, and prints
/// the totals.
pub fn write_ci_results(dir: &Path, run: &RunResults) -> anyhow::Result<()> {
    let runs = std::slice::from_ref(run);
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))
    };
    write("junit.xml", junit::document(runs))?;
    write(
        "kcidb.json",
        serde_json::to_string_pretty(&kcidb::document(runs))? + "\n",
    )?;
    let counts = run.counts();
    write("counts.json", serde_json::to_string_pretty(&counts)? + "\n")?;
    println!(
        "CI results: {}/{{junit.xml,kcidb.json}}: {counts} (every scenario above and every capability cell)",
        dir.display()
    );
    Ok(())
}

/// The host's side of a VM run: reads the column a guest wrote into `dir`
/// (its `matrix.toml`), then [`judge`]s it.
pub fn collect(dir: &Path, defs: &[FsDef], bless: bool) -> anyhow::Result<bool> {
    let path = dir.join("matrix.toml");
    let m = Matrix::load(&path)?;
    let [observed] = &m.columns[..] else {
        bail!(
            "{}: expected the one column of a run, found {}",
            path.display(),
            m.columns.len()
        );
    };
    judge(observed, defs, bless)
}

fn json_report(col: &Column, reports: &[FsReport]) -> serde_json::Value {
    let scenarios: BTreeMap<&str, serde_json::Value> = reports
        .iter()
        .map(|r| {
            let (p, f, s) = r.counts();
            let records: Vec<serde_json::Value> = r
                .records
                .iter()
                .map(|rec| {
                    let (outcome, why) = match &rec.outcome {
                        Outcome::Pass => ("pass", None),
                        Outcome::Fail(w) => ("fail", Some(w.as_str())),
                        Outcome::Skip(w) => ("skip", Some(w.as_str())),
                    };
                    serde_json::json!({"scenario": rec.scenario, "outcome": outcome, "reason": why, "seconds": rec.elapsed.as_secs_f64()})
                })
                .collect();
            (
                r.fs.as_str(),
                serde_json::json!({"passed": p, "failed": f, "skipped": s, "seconds": r.elapsed.as_secs_f64(), "faults": r.faults, "records": records}),
            )
        })
        .collect();
    serde_json::json!({"column": col, "scenarios": scenarios})
}

/// Regenerates the README's tables from `matrix`; with `check`, fails if
/// they are stale instead of writing.
pub fn update_readme(matrix: &Matrix, defs: &[FsDef], check: bool) -> anyhow::Result<()> {
    let order: Vec<String> = defs.iter().map(|d| d.name.clone()).collect();
    let path = readme_path();
    let readme = std::fs::read_to_string(&path)?;
    let new = matrix::update_readme(&readme, &matrix::markdown(matrix, &order))?;
    if new == readme {
        return Ok(());
    }
    if check {
        bail!(
            "README.md's capability matrix is stale: regenerate it with `cargo xtask matrix readme`"
        );
    }
    std::fs::write(&path, new)?;
    Ok(())
}

/// `matrix readme [--check]`, `matrix merge FILE…` and `matrix diff A B`
/// (A and B: a release, a version or a major.minor series).
pub fn matrix_command(args: &[String], defs: &[FsDef]) -> anyhow::Result<()> {
    let path = defs::matrix_path();
    match args.first().map(String::as_str) {
        Some("readme") => {
            let check = args.iter().any(|a| a == "--check");
            update_readme(&Matrix::load(&path)?, defs, check)?;
            println!(
                "README.md's capability matrix is {}",
                if check { "up to date" } else { "regenerated" }
            );
            Ok(())
        }
        Some("merge") if args.len() > 1 => {
            let text = std::fs::read_to_string(&path)?;
            let mut merged = Matrix::parse(&text)?;
            for other in &args[1..] {
                let m = Matrix::load(Path::new(other)).with_context(|| format!("merge {other}"))?;
                println!("merging {} column(s) from {other}", m.columns.len());
                merged = merged.merge(m);
            }
            std::fs::write(&path, merged.write_into(&text)?)?;
            update_readme(&merged, defs, false)?;
            println!(
                "wrote {} ({} columns) and the README's tables",
                path.display(),
                merged.columns.len()
            );
            Ok(())
        }
        Some("diff") if args.len() == 3 => {
            let m = Matrix::load(&path)?;
            let a = crate::markdown::select(&m, &args[1])?;
            let b = crate::markdown::select(&m, &args[2])?;
            println!("from {}\nto   {}", a.label(), b.label());
            print!("{}", crate::markdown::diff_text(a, b));
            Ok(())
        }
        _ => bail!("usage: matrix readme [--check] | matrix merge FILE… | matrix diff A B"),
    }
}
