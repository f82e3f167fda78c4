//! Maps errors to the documented exit codes and prints them.

use crate::output::{StdoutError, warning};
use std::fmt;
use std::process::ExitCode;

/// The operation failed (I/O error, unsupported operation).
pub(crate) const FAILURE: u8 = 1;
/// The command line was wrong; nothing was touched.
pub(crate) const USAGE: u8 = 2;
/// A timeout expired (`--timeout`).
pub(crate) const TIMEOUT: u8 = 3;
/// Stopped by SIGINT, SIGTERM (or, for collapse, insert and resume,
/// SIGHUP) at a consistent point: 128 + SIGINT, the shell's convention for
/// Ctrl-C, whichever signal it was.
pub(crate) const INTERRUPTED: u8 = 130;

/// A usage error found after parsing (an impossible combination of values,
/// a file of the wrong type given where a regular file is needed): exit 2.
#[derive(Debug)]
pub(crate) struct UsageError(pub(crate) String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// An error that carries its own exit code (e.g. 3 for a timeout).
#[derive(Debug)]
pub(crate) struct WithExitCode(pub(crate) u8, pub(crate) anyhow::Error);

impl fmt::Display for WithExitCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.1)
    }
}

impl std::error::Error for WithExitCode {}

/// `"PATH: open: ENOENT (No such file or directory)"`: std's io errors name
/// the errno too.
pub(crate) fn io_error(path: &str, op: &str, e: &std::io::Error) -> anyhow::Error {
    match e.raw_os_error() {
        Some(code) => {
            let errno = rustix::io::Errno::from_raw_os_error(code);
            anyhow::anyhow!("{path}: {op}: {}", sparsekit_sys::ErrnoName(errno))
        }
        None => anyhow::anyhow!("{path}: {op}: {e}"),
    }
}

pub(crate) fn clap_error(e: clap::Error) -> ExitCode {
    let _ = e.print();
    if e.use_stderr() {
        ExitCode::from(USAGE)
    } else {
        ExitCode::SUCCESS // --help, --version
    }
}

pub(crate) fn report(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        // `sparsekit map big.img | head`: the reader left; that is not an error.
        Err(e)
            if e.downcast_ref::<StdoutError>()
                .is_some_and(StdoutError::reader_left) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            warning!("{e:#}");
            if e.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(USAGE)
            } else if let Some(WithExitCode(code, _)) = e.downcast_ref::<WithExitCode>() {
                ExitCode::from(*code)
            } else {
                ExitCode::from(FAILURE)
            }
        }
    }
}
