//! `sparsekit completions SHELL` (clap_complete) and the man pages `cargo
//! xtask man` writes (clap_mangen, through the hidden `__man DIR`).
//!
//! Both are made from the same clap definition as the parser, so they
//! cannot drift from it; the man pages are committed (crates/cli/man/) and
//! `cargo xtask ci` checks that they are current.

use anyhow::Context;
use clap::{Command, ValueEnum};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The shells completions are generated for.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Shell {
    /// bash (source it, or put it in /usr/share/bash-completion/completions/sparsekit).
    Bash,
    /// zsh (as `_sparsekit` in a directory of $fpath).
    Zsh,
    /// fish (in ~/.config/fish/completions/sparsekit.fish).
    Fish,
}

/// `completions` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete for.
    shell: Shell,
}

/// `__man` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct ManArgs {
    /// The directory to write sparsekit.1 and sparsekit-SUBCOMMAND.1 into.
    dir: PathBuf,
}

/// The completion script for `shell`, as bytes.
pub(crate) fn completions(cmd: Command, shell: Shell) -> Vec<u8> {
    // clap_complete offers hidden subcommands too: complete a copy of the
    // command without them (`__man` is for `cargo xtask man`, not users).
    let visible: Vec<Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    let mut cmd = Command::new("sparsekit")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommands(visible);
    let mut out = Vec::new();
    // Into memory first: clap_complete panics on a write error, and a
    // closed or full stdout must be an error message, not a panic.
    match shell {
        Shell::Bash => {
            clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, "sparsekit", &mut out)
        }
        Shell::Zsh => {
            clap_complete::generate(clap_complete::Shell::Zsh, &mut cmd, "sparsekit", &mut out)
        }
        Shell::Fish => {
            clap_complete::generate(clap_complete::Shell::Fish, &mut cmd, "sparsekit", &mut out)
        }
    }
    out
}

/// Prints the completion script for `args.shell`.
pub(crate) fn run_completions(cmd: Command, args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let script = completions(cmd, args.shell);
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&script)
        .and_then(|()| stdout.flush())
        .map_err(|e| crate::exit::io_error("stdout", "write", &e))?;
    Ok(ExitCode::SUCCESS)
}

/// Man pages: `(file name, roff text)` for the command and each visible
/// subcommand. The version is the crate's alone (no commit), so the pages
/// change only when the interface does.
pub(crate) fn man_pages(cmd: Command) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let cmd = cmd
        .version(env!("CARGO_PKG_VERSION"))
        .long_version(env!("CARGO_PKG_VERSION"));
    let mut pages = Vec::new();
    let mut render = |name: String, c: Command| -> anyhow::Result<()> {
        let mut out = Vec::new();
        clap_mangen::Man::new(c).render(&mut out)?;
        pages.push((format!("{name}.1"), out));
        Ok(())
    };
    render("sparsekit".into(), cmd.clone())?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("sparsekit-{}", sub.get_name());
        // The page is sparsekit-copy(1); its synopsis reads `sparsekit copy …`.
        let sub = sub
            .clone()
            .display_name(name.clone())
            .bin_name(format!("sparsekit {}", sub.get_name()))
            .version(env!("CARGO_PKG_VERSION"));
        render(name, sub)?;
    }
    Ok(pages)
}

/// Writes [`man_pages`] into `args.dir` (made if missing).
pub(crate) fn run_man(cmd: Command, args: ManArgs) -> anyhow::Result<ExitCode> {
    write_man(cmd, &args.dir)?;
    Ok(ExitCode::SUCCESS)
}

fn write_man(cmd: Command, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: mkdir", dir.display()))?;
    for (name, text) in man_pages(cmd)? {
        let path = dir.join(&name);
        std::fs::write(&path, text).with_context(|| format!("{}: write", path.display()))?;
    }
    Ok(())
}
