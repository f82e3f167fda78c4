//! What the end-to-end tests of `copy` and `compare` share: running the
//! binary (with the library's fault hooks set through
//! `SPARSEKIT_TEST_FAULTS`) and reading what it printed.

use std::path::Path;
use std::process::{Command, Output};

/// The `sparsekit` binary of this build, not yet started.
pub(crate) fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sparsekit"))
}

/// Runs `sparsekit ARGS` to completion, with `faults` (the
/// `SPARSEKIT_TEST_FAULTS` spec, e.g. `read=EIO@0`) when given.
pub(crate) fn sparsekit(args: &[&str], faults: Option<&str>) -> Output {
    let mut cmd = bin();
    cmd.args(args);
    if let Some(f) = faults {
        cmd.env("SPARSEKIT_TEST_FAULTS", f);
    }
    cmd.output().unwrap()
}

/// What it printed on stdout.
pub(crate) fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// What it printed on stderr.
pub(crate) fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A path as an argument (the tests' paths are UTF-8).
pub(crate) fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
