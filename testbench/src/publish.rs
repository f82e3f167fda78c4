//! After a run: the observed matrix column written to `target/testbench/`,
//! compared with the committed one, optionally blessed into `matrix.toml`
//! (and the README's tables); and the `matrix` subcommands.

use crate::defs::{self, FsDef};
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
    Column {
        kernel: matrix::kernel_release(),
        machine: matrix::machine_label(),
        recorded: matrix::today(),
        filesystems: reports
            .iter()
            .filter_map(|r| Some((r.fs.clone(), r.caps.as_ref()?.capabilities.clone())))
            .collect(),
    }
}

/// Writes matrix.{toml,md,json} under [`out_dir`], compares with the
/// committed column for this kernel, blesses if asked. Returns whether
/// there was no regression.
pub fn after_run(
    reports: &[FsReport],
    defs: &[FsDef],
    bless: bool,
    started: std::time::SystemTime,
) -> anyhow::Result<bool> {
    let observed = column(reports);
    let dir = out_dir();
    std::fs::create_dir_all(&dir)?;
    let mut this_run = Matrix::default();
    this_run.upsert(observed.clone());
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

    let path = defs::matrix_path();
    let text = std::fs::read_to_string(&path)?;
    let mut committed = Matrix::parse(&text)?;
    let mut ok = true;
    let mut diffs = Vec::new();
    match committed.baseline(&observed.kernel, &observed.machine) {
        None => println!(
            "no committed results for Linux {}: nothing to compare (record them with `cargo xtask testbench --bless`)",
            observed.kernel
        ),
        Some(base) => {
            diffs = matrix::compare(base, &observed);
            if diffs.is_empty() {
                println!(
                    "matrix: identical to the committed results for Linux {} ({})",
                    base.kernel, base.machine
                );
            } else {
                println!(
                    "matrix: differences from the committed results for Linux {} ({}):",
                    base.kernel, base.machine
                );
                for d in &diffs {
                    println!("  {d}");
                }
            }
            ok = !diffs.iter().any(|d| d.is_regression());
        }
    }
    write_ci_results(
        &dir,
        &RunResults::of_this_system(reports, defs, &diffs, started),
    )?;
    if bless {
        committed.upsert(observed);
        std::fs::write(&path, committed.write_into(&text)?)?;
        update_readme(&committed, defs, false)?;
        println!(
            "blessed: wrote the results into {} and the README's tables",
            path.display()
        );
    }
    Ok(ok)
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
                serde_json::json!({"passed": p, "failed": f, "skipped": s, "seconds": r.elapsed.as_secs_f64(), "records": records}),
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

/// `matrix readme [--check]` and `matrix merge FILE…`.
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
        _ => bail!("usage: matrix readme [--check] | matrix merge FILE…"),
    }
}
