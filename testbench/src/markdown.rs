//! The README's matrix: the kernels (identity and scenario counts), then one
//! table per filesystem with the kernels side by side, rows where the kernels
//! disagree marked, then what changed from each kernel to the next
//! (`cargo xtask matrix diff A B` prints the same for any two).

use crate::identity;
use crate::matrix::{Cell, Column, Difference, Matrix, Support, compare};
use std::collections::BTreeSet;
use std::fmt::Write as _;

/// The mark on a row whose cells differ between kernels.
pub const DIFFERS: &str = "≠";

/// Renders `matrix` (filesystems in `fs_order`, then any others).
pub fn markdown(matrix: &Matrix, fs_order: &[String]) -> String {
    let mut out = String::new();
    if matrix.columns.is_empty() {
        out += "No results recorded yet: run `cargo xtask testbench --bless` as root.\n";
        return out;
    }
    out += "Legend: **native** — the kernel does it, semantics verified; **emulated** — \
            sparsekit's fallback does it (kernel errno shown); **degraded** — the call \
            succeeds but does less; **no** — unsupported (errno shown). A row marked ";
    let _ = writeln!(
        out,
        "{DIFFERS} differs between kernels (its cells in bold).\n"
    );
    let cols = &matrix.columns;
    let mut fss: Vec<&String> = fs_order
        .iter()
        .filter(|f| cols.iter().any(|c| c.filesystems.contains_key(*f)))
        .collect();
    let others: BTreeSet<&String> = cols
        .iter()
        .flat_map(|c| c.filesystems.keys())
        .filter(|f| !fs_order.contains(f))
        .collect();
    fss.extend(others);

    out += "#### Kernels\n\nScenarios of the last blessed run on each filesystem (it may have \
            been narrowed with `--filter`): passed / failed / skipped.\n\n";
    out += "| kernel | version | package | machine | recorded |";
    for f in &fss {
        let _ = write!(out, " {f} |");
    }
    out += "\n|---|---|---|---|---|";
    out += &"---|".repeat(fss.len());
    out += "\n";
    for c in cols {
        let _ = write!(
            out,
            "| {} | {} | {} | {} | {} |",
            c.kernel,
            identity::column_version(c),
            c.package.as_deref().unwrap_or("–"),
            c.machine,
            c.recorded
        );
        for f in &fss {
            let cell = c.scenarios.get(*f).map_or("–".to_owned(), |n| {
                format!("{} / {} / {}", n.passed, n.failed, n.skipped)
            });
            let _ = write!(out, " {cell} |");
        }
        out += "\n";
    }

    for f in &fss {
        let _ = writeln!(out, "\n#### {f}\n");
        out += "| capability |";
        for c in cols {
            let _ = write!(out, " {} |", c.kernel);
        }
        out += "\n|---|";
        out += &"---|".repeat(cols.len());
        out += "\n";
        let caps: BTreeSet<&String> = cols
            .iter()
            .filter_map(|c| c.filesystems.get(*f))
            .flat_map(|m| m.keys())
            .collect();
        for cap in caps {
            let cells: Vec<String> = cols
                .iter()
                .map(|c| {
                    c.filesystems
                        .get(*f)
                        .and_then(|m| m.get(cap))
                        .map_or("–".to_owned(), cell_text)
                })
                .collect();
            // A kernel that did not run this filesystem ("–") says nothing.
            let seen: BTreeSet<&String> = cells.iter().filter(|t| *t != "–").collect();
            let differs = seen.len() > 1;
            if differs {
                let _ = write!(out, "| `{cap}` {DIFFERS} |");
            } else {
                let _ = write!(out, "| `{cap}` |");
            }
            for t in &cells {
                if differs && t != "–" {
                    let _ = write!(out, " **{t}** |");
                } else {
                    let _ = write!(out, " {t} |");
                }
            }
            out += "\n";
        }
    }

    if cols.iter().any(|c| !c.faults.is_empty()) {
        out += "\n#### Fault injection\n\nA FUSE filesystem over each one failing, shortening, \
                slowing and freezing requests under the CLI: cases / faults injected / \
                survived / bytes of data lost (must be 0).\n\n| kernel |";
        for f in &fss {
            let _ = write!(out, " {f} |");
        }
        out += "\n|---|";
        out += &"---|".repeat(fss.len());
        out += "\n";
        for c in cols.iter().filter(|c| !c.faults.is_empty()) {
            let _ = write!(out, "| {} |", c.kernel);
            for f in &fss {
                let cell = c.faults.get(*f).map_or("–".to_owned(), |t| {
                    format!(
                        "{} / {} / {} / {}",
                        t.cases, t.injected, t.survived, t.data_lost
                    )
                });
                let _ = write!(out, " {cell} |");
            }
            out += "\n";
        }
    }

    if cols.len() > 1 {
        out += "\n#### What changed between kernels\n";
        for pair in cols.windows(2) {
            let _ = writeln!(
                out,
                "\n`cargo xtask matrix diff {} {}`:\n",
                pair[0].kernel, pair[1].kernel
            );
            out += &diff_text(&pair[0], &pair[1]);
        }
    }
    out
}

/// The differences from `a` to `b` over the filesystems both ran.
pub fn diff(a: &Column, b: &Column) -> Vec<Difference> {
    let mut shared = b.clone();
    shared
        .filesystems
        .retain(|f, _| a.filesystems.contains_key(f));
    compare(a, &shared)
}

/// [`diff`] as a Markdown list (`- none` when they agree).
pub fn diff_text(a: &Column, b: &Column) -> String {
    let d = diff(a, b);
    if d.is_empty() {
        return "- no difference\n".into();
    }
    let name = |s: Option<Support>| s.map_or("absent", |s| s.as_str());
    d.iter()
        .map(|x| {
            format!(
                "- {} `{}`: {} → {}\n",
                x.fs,
                x.capability,
                name(x.before),
                name(x.after)
            )
        })
        .collect()
}

/// The column named `key`: its release, else its version, else the newest
/// of a `major.minor` series. Ambiguity and absence are errors that list the
/// columns.
pub fn select<'a>(matrix: &'a Matrix, key: &str) -> anyhow::Result<&'a Column> {
    let list = || {
        matrix
            .columns
            .iter()
            .map(|c| format!("{} ({})", c.kernel, identity::column_version(c)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let by = |f: &dyn Fn(&Column) -> bool| -> Vec<&'a Column> {
        matrix.columns.iter().filter(|c| f(c)).collect()
    };
    for found in [
        by(&|c| c.kernel == key),
        by(&|c| identity::column_version(c).to_string() == key),
    ] {
        match &found[..] {
            [] => {}
            [one] => return Ok(one),
            many => anyhow::bail!(
                "{key:?} names {} columns (machines: {}); use the release string",
                many.len(),
                many.iter()
                    .map(|c| c.machine.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        }
    }
    let series = identity::Version::parse(key).and_then(|v| v.series());
    if let (Some(s), [_, _]) = (series, key.split('.').collect::<Vec<_>>().as_slice()) {
        // Columns are sorted by version: the last of the series is the newest.
        if let Some(c) = matrix
            .columns
            .iter()
            .rev()
            .find(|c| identity::column_version(c).series() == Some(s))
        {
            return Ok(c);
        }
    }
    anyhow::bail!("no column {key:?} in matrix.toml (columns: {})", list())
}

fn cell_text(c: &Cell) -> String {
    let errno = c
        .errno
        .as_deref()
        .map(|e| format!(" ({e})"))
        .unwrap_or_default();
    match c.support {
        Support::Native => "native".into(),
        Support::Emulated => format!("emulated{errno}"),
        Support::Degraded => format!("degraded{errno}"),
        _ => format!("no{errno}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn col(kernel: &str, version: &str, cells: &[(&str, &str, Support)]) -> Column {
        let mut filesystems: BTreeMap<String, BTreeMap<String, Cell>> = BTreeMap::new();
        for (fs, cap, s) in cells {
            filesystems.entry(fs.to_string()).or_default().insert(
                cap.to_string(),
                Cell {
                    support: *s,
                    errno: None,
                    reason: None,
                    detail: None,
                    verified_by: "t".into(),
                },
            );
        }
        Column {
            kernel: kernel.into(),
            version: version.into(),
            package: None,
            machine: "m".into(),
            recorded: "2026-12-01".into(),
            scenarios: BTreeMap::new(),
            faults: BTreeMap::new(),
            unmeasured: BTreeMap::new(),
            filesystems,
        }
    }

    fn matrix() -> Matrix {
        let mut m = Matrix::default();
        m.upsert(col(
            "6.18.44-x",
            "6.18.44",
            &[
                ("ext4", "cachestat", Support::Native),
                ("ext4", "fiemap", Support::Native),
                ("xfs", "fiemap", Support::Native),
            ],
        ));
        m.upsert(col(
            "6.1.0-57-amd64",
            "6.1.192",
            &[
                ("ext4", "cachestat", Support::Unsupported),
                ("ext4", "fiemap", Support::Native),
            ],
        ));
        m
    }

    #[test]
    fn kernels_side_by_side_with_differing_rows_marked() {
        let md = markdown(&matrix(), &["ext4".into(), "xfs".into()]);
        assert!(
            md.contains("| capability | 6.1.0-57-amd64 | 6.18.44-x |"),
            "{md}"
        );
        assert!(
            md.contains("| `cachestat` ≠ | **no** | **native** |"),
            "{md}"
        );
        assert!(md.contains("| `fiemap` | native | native |"), "{md}");
        // xfs ran on one kernel only: its cell elsewhere is "–", not a difference.
        assert!(md.contains("| `fiemap` | – | native |"), "{md}");
        assert!(
            md.contains("`cargo xtask matrix diff 6.1.0-57-amd64 6.18.44-x`"),
            "{md}"
        );
        assert!(
            md.contains("- ext4 `cachestat`: unsupported → native"),
            "{md}"
        );
        assert!(
            !md.contains("xfs `fiemap`"),
            "a filesystem one kernel lacks is no change: {md}"
        );
    }

    #[test]
    fn columns_are_selected_by_release_version_or_series() {
        let m = matrix();
        assert_eq!(select(&m, "6.1.0-57-amd64").unwrap().version, "6.1.192");
        assert_eq!(select(&m, "6.18.44").unwrap().kernel, "6.18.44-x");
        assert_eq!(select(&m, "6.1").unwrap().kernel, "6.1.0-57-amd64");
        let err = select(&m, "5.10").unwrap_err().to_string();
        assert!(err.contains("6.18.44-x (6.18.44)"), "{err}");
        assert!(
            select(&m, "6.1.0").is_err(),
            "6.1.0 is neither a release nor a version here"
        );
    }
}
