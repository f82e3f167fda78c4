//! The one JSON record of a fallback, shared by every `--json` document:
//! `{"strategy": "reflink", "errno": "EOPNOTSUPP"}` — the strategy that was
//! tried and the errno that made sparsekit move on, by symbolic name.
//!
//! The errno is never null and never a bare "unknown": a value outside the
//! named set is written with its number, `"errno 133"`.

use rustix::io::Errno;
use serde_json::{Value, json};

/// The errno as documents write it: `"EOPNOTSUPP"`, else `"errno N"`.
pub(crate) fn errno_name(errno: Errno) -> String {
    sparsekit_sys::ErrnoName(errno)
        .symbol()
        .map_or_else(|| format!("errno {}", errno.raw_os_error()), str::to_owned)
}

/// `{"strategy": strategy, "errno": errno_name(errno)}`.
pub(crate) fn record(strategy: &str, errno: Errno) -> Value {
    json!({"strategy": strategy, "errno": errno_name(errno)})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shape_named_errno_or_its_number() {
        insta::assert_json_snapshot!(
            [
                record("reflink", Errno::OPNOTSUPP),
                record("copy_file_range", Errno::XDEV),
                record("punch_hole", Errno::from_raw_os_error(4095)),
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
