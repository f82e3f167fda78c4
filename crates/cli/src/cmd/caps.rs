//! `sparsekit caps [DIR] [--cross-fs DIR] [--json|--toml]`

use crate::exit::UsageError;
use crate::input::{Accept, check};
use crate::output::stdout_failed;
use crate::watchdog::{OnStall, TimeoutArg, Watchdog};
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
    #[command(flatten)]
    timeout: TimeoutArg,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dir = args.dir.unwrap_or_else(|| PathBuf::from("."));
    let watchdog = Watchdog::start(args.timeout.timeout, format!("{}: caps", dir.display()));
    check(&dir, "caps", Accept::Directory)?;
    watchdog.on_stall(OnStall {
        note: "the scratch files are unnamed (O_TMPFILE) or unlinked as soon as made, so nothing is left".into(),
        ..OnStall::default()
    });
    let mut options = CapsOptions::new();
    if let Some(other) = &args.cross_fs {
        options = options.cross_fs_dir(other);
    }
    let report = options.probe(&dir).map_err(|e| match e {
        // The wrong kind of argument: exit 2, nothing touched.
        CapsError::NotADirectory { .. } => UsageError(e.to_string()).into(),
        e => anyhow::Error::new(e),
    })?;
    watchdog.finish();
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
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| stdout_failed(e.into()))?;
    Ok(ExitCode::SUCCESS)
}
