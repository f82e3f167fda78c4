//! `man [--check]`: the CLI's man pages (clap_mangen, one per subcommand),
//! committed under crates/cli/man/ so packagers find them without building.
//! With `--check` (run by `cargo xtask ci`), fails if they differ from what
//! the current CLI generates, naming the command that regenerates them.

use crate::util::{cargo, root, run};
use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::path::Path;

fn read_dir(dir: &Path) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    if !dir.exists() {
        return Ok(files);
    }
    for e in std::fs::read_dir(dir).with_context(|| dir.display().to_string())? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".1") {
            files.insert(name, std::fs::read(e.path())?);
        }
    }
    Ok(files)
}

pub(crate) fn command(args: &[String]) -> anyhow::Result<()> {
    let check = match args {
        [] => false,
        [a] if a == "--check" => true,
        _ => bail!("usage: cargo xtask man [--check]"),
    };
    let fresh_dir = root().join("target/man");
    let _ = std::fs::remove_dir_all(&fresh_dir);
    let mut c = cargo();
    c.args([
        "run",
        "--quiet",
        "--locked",
        "-p",
        "sparsekit-cli",
        "--",
        "__man",
    ])
    .arg(&fresh_dir);
    run(c)?;
    let fresh = read_dir(&fresh_dir)?;
    let committed_dir = root().join("crates/cli/man");
    let committed = read_dir(&committed_dir)?;
    let stale: Vec<&String> = fresh
        .keys()
        .chain(committed.keys())
        .filter(|n| fresh.get(*n) != committed.get(*n))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if stale.is_empty() {
        println!(
            "man pages in crates/cli/man are current ({} pages)",
            fresh.len()
        );
        return Ok(());
    }
    if check {
        bail!(
            "man pages in crates/cli/man are stale ({}): regenerate them with `cargo xtask man`",
            stale
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    std::fs::create_dir_all(&committed_dir)?;
    for name in committed.keys().filter(|n| !fresh.contains_key(*n)) {
        std::fs::remove_file(committed_dir.join(name))?;
    }
    for (name, text) in &fresh {
        std::fs::write(committed_dir.join(name), text)?;
    }
    println!(
        "wrote {} man pages into {}",
        fresh.len(),
        committed_dir.display()
    );
    Ok(())
}
