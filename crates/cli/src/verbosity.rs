//! Quiet by default, like cp: an expected fallback (`--reflink auto` on
//! ext4 copying the data) is what the user asked for, not news. It is in
//! every `--json` document and, under `-v/--verbose`, on stderr; without
//! it stderr carries warnings and errors only.

use std::sync::atomic::{AtomicBool, Ordering};

static VERBOSE: AtomicBool = AtomicBool::new(false);

/// Set once from the command line, before any command runs.
pub(crate) fn set_verbose(on: bool) {
    VERBOSE.store(on, Ordering::Relaxed);
}

/// Whether `-v/--verbose` was given.
pub(crate) fn verbose() -> bool {
    VERBOSE.load(Ordering::Relaxed)
}

/// `sparsekit: MESSAGE` on stderr under `--verbose`, else nothing.
pub(crate) fn note(message: std::fmt::Arguments<'_>) {
    if verbose() {
        crate::output::warn_line(message);
    }
}
