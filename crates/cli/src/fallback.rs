//! The one record of a fallback, shared by every `--json` document and
//! every `-v` line: the library's [`Fallback`] (the strategy that was tried
//! and the errno that made sparsekit move on).
//!
//! JSON: `{"strategy": "reflink", "errno": "EOPNOTSUPP"}`. The errno is
//! never null and never a bare "unknown": a value outside the named set is
//! written with its number, `"errno 133"` ([`ErrnoName::symbolic`]).
//! stderr (under `-v`): `FILE: reflink: EOPNOTSUPP (Operation not
//! supported), fell back`.

use serde_json::{Value, json};
use sparsekit_sys::fallback::FELL_BACK;
use sparsekit_sys::{ErrnoName, Fallback};
use std::fmt::{Arguments, Display};

/// `{"strategy": …, "errno": "EOPNOTSUPP"}`.
pub(crate) fn record<S: Display>(f: &Fallback<S>) -> Value {
    json!({"strategy": f.strategy.to_string(), "errno": ErrnoName(f.errno).symbolic()})
}

/// `{head}{fallback}, fell back` on stderr under `--verbose`: `head` is
/// the file and what it names (`"disk.img: method "`).
pub(crate) fn note<S: Display>(head: Arguments<'_>, f: &Fallback<S>) {
    crate::verbosity::note(format_args!("{head}{f}, {FELL_BACK}"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::io::Errno;

    #[test]
    fn one_shape_named_errno_or_its_number() {
        insta::assert_json_snapshot!(
            [
                record(&Fallback::new("reflink", Errno::OPNOTSUPP)),
                record(&Fallback::new("copy_file_range", Errno::XDEV)),
                record(&Fallback::new("punch_hole", Errno::from_raw_os_error(4095))),
            ],
            @r#"
        [
          {
            "errno": "EOPNOTSUPP",
            "strategy": "reflink"
          },
          {
            "errno": "EXDEV",
            "strategy": "copy_file_range"
          },
          {
            "errno": "errno 4095",
            "strategy": "punch_hole"
          }
        ]
        "#
        );
    }
}
