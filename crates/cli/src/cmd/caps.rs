//! `sparsekit caps [DIR] [--cross-fs DIR] [--json|--toml]`

use crate::exit::UsageError;
use sparsekit_caps::{CapsError, CapsOptions};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// A writable directory on the filesystem to probe (default: the
    /// current directory). Small scratch files are made there by O_TMPFILE
    /// (or named and unlinked at once) and none is left behind.
    dir: Option<PathBuf>,
    /// A writable directory on another filesystem, to try
    /// copy_file_range across filesystems.
    #[arg(long, value_name = "DIR")]
    cross_fs: Option<PathBuf>,
    /// Print the report as JSON: {"filesystem":{…},"capabilities":{NAME:{"support",
    /// "errno","reason","detail","verified_by"}},"not_tried":{…}}.
    #[arg(long, conflicts_with = "toml")]
    json: bool,
    /// Print the report as TOML (the cell format of matrix.toml).
    #[arg(long)]
    toml: bool,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dir = args.dir.unwrap_or_else(|| PathBuf::from("."));
    let mut options = CapsOptions::new();
    if let Some(other) = &args.cross_fs {
        options = options.cross_fs_dir(other);
    }
    let report = options.probe(&dir).map_err(|e| match e {
        // The wrong kind of argument: exit 2, nothing touched.
        CapsError::NotADirectory { .. } => UsageError(e.to_string()).into(),
        e => anyhow::Error::new(e),
    })?;
    let text = if args.json {
        let mut s = serde_json::to_string_pretty(&report)?;
        s.push('\n');
        s
    } else if args.toml {
        toml::to_string(&report)?
    } else {
        report.to_string()
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
