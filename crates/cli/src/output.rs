//! Everything the commands print goes through here, so a full disk
//! (`> /dev/full`), a closed pipe or any other write error on stdout is an
//! error the command returns, never a panic (`println!` panics on them).
//!
//! A closed pipe (`sparsekit map big.img | head`) means the reader left:
//! exit 0, as for the output that was read. Any other write error exits 1
//! and says, for commands that change files, that the change itself was
//! made and only its report was lost.

use crate::watchdog::Watchdog;
use std::fmt;
use std::io::{self, Write};

/// Writing the report to stdout failed.
#[derive(Debug)]
pub(crate) struct StdoutError {
    error: io::Error,
    /// What the command had already done (its human report line), for
    /// commands that change files.
    done: Option<String>,
}

impl StdoutError {
    /// The reader of a pipe went away: not an error (exit 0).
    pub(crate) fn reader_left(&self) -> bool {
        self.error.kind() == io::ErrorKind::BrokenPipe
    }
}

impl fmt::Display for StdoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.error.raw_os_error() {
            Some(code) => {
                sparsekit_sys::ErrnoName(rustix::io::Errno::from_raw_os_error(code)).to_string()
            }
            None => self.error.to_string(),
        };
        match &self.done {
            Some(done) => write!(
                f,
                "stdout: write: {why}; the operation itself completed, only this report was lost: {done}"
            ),
            None => write!(f, "stdout: write: {why}"),
        }
    }
}

impl std::error::Error for StdoutError {}

/// Prints a command's report (one line or document, a newline is added)
/// and flushes it. `done` is the human description of what the command
/// already changed, named in the error if the report cannot be written.
pub(crate) fn print_report(text: &str, done: Option<&str>) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .map_err(|error| {
            StdoutError {
                error,
                done: done.map(str::to_owned),
            }
            .into()
        })
}

/// For commands that stream to stdout through [`Stdout`] (map, stat, caps):
/// an `io::Error` at the root of `e` came from stdout (their other errors
/// are not `io::Error`s) and becomes a [`StdoutError`].
pub(crate) fn stdout_failed(e: anyhow::Error) -> anyhow::Error {
    match e.downcast::<io::Error>() {
        Ok(error) => StdoutError { error, done: None }.into(),
        Err(e) => e,
    }
}

/// Stdout for streamed output. While a write blocks (a pipe nobody reads
/// yet) the watchdog is paused: a slow reader is not a stalled file.
pub(crate) struct Stdout<'a> {
    out: io::StdoutLock<'static>,
    watchdog: &'a Watchdog,
}

impl<'a> Stdout<'a> {
    pub(crate) fn new(watchdog: &'a Watchdog) -> Self {
        Stdout {
            out: io::stdout().lock(),
            watchdog,
        }
    }
}

impl Write for Stdout<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _paused = self.watchdog.pause();
        self.out.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        let _paused = self.watchdog.pause();
        self.out.flush()
    }
}

/// Writes `sparsekit: MESSAGE` on stderr. A failing stderr is ignored:
/// there is nowhere left to say it, and `eprintln!` would panic.
pub(crate) fn warn_line(args: fmt::Arguments<'_>) {
    let mut err = io::stderr().lock();
    let _ = writeln!(err, "sparsekit: {args}");
}

/// `warning!("{path}: …")`: a message on stderr that never panics.
macro_rules! warning {
    ($($arg:tt)*) => {
        $crate::output::warn_line(format_args!($($arg)*))
    };
}
pub(crate) use warning;
