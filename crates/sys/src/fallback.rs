//! The one record of a fallback, for every op crate: the strategy that was
//! tried and left, and the errno that showed it unsupported here.
//!
//! `S` is the crate's strategy type (punch's `PunchStrategy`, the extent
//! map's `Method`, copy's `&'static str` step names); its `Display` is the
//! name the command line and JSON use. The record reads the same
//! everywhere:
//! - `Display`: `punch_hole: EOPNOTSUPP (Operation not supported)`;
//! - JSON (feature `serde`): `{"strategy": "punch_hole", "errno": "EOPNOTSUPP"}`,
//!   the errno by [`ErrnoName::symbolic`] (never null, `"errno N"` outside
//!   the named set);
//! - on stderr, a caller appends [`FELL_BACK`]: `FILE: punch_hole:
//!   EOPNOTSUPP (Operation not supported), fell back`.

use crate::ErrnoName;
use rustix::io::Errno;
use std::fmt;

/// The words after a fallback on stderr: `FILE: {fallback}, fell back`.
pub const FELL_BACK: &str = "fell back";

/// A strategy tried and left, and the errno that showed it unsupported
/// (one of [`UNSUPPORTED`](crate::errno::UNSUPPORTED), or one a crate widens
/// the set with at its call site).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fallback<S> {
    /// The strategy left behind.
    pub strategy: S,
    /// Why (`EOPNOTSUPP`, `ENOSYS`, `EINVAL`, …).
    pub errno: Errno,
}

impl<S> Fallback<S> {
    /// `strategy` failed with `errno`.
    pub fn new(strategy: S, errno: Errno) -> Self {
        Self { strategy, errno }
    }
}

impl<S: fmt::Display> fmt::Display for Fallback<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.strategy, ErrnoName(self.errno))
    }
}

#[cfg(feature = "serde")]
impl<S: fmt::Display> serde::Serialize for Fallback<S> {
    fn serialize<Z: serde::Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Fallback", 2)?;
        st.serialize_field("strategy", &self.strategy.to_string())?;
        st.serialize_field("errno", &ErrnoName(self.errno).symbolic())?;
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_strategy_and_named_errno() {
        let f = Fallback::new("punch_hole", Errno::OPNOTSUPP);
        assert_eq!(
            format!("{f}, {FELL_BACK}"),
            "punch_hole: EOPNOTSUPP (Operation not supported), fell back"
        );
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serializes_as_the_cli_record() {
        let v = serde_json::to_value([
            Fallback::new("reflink", Errno::OPNOTSUPP),
            Fallback::new("punch_hole", Errno::from_raw_os_error(4095)),
        ])
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!([
                {"strategy": "reflink", "errno": "EOPNOTSUPP"},
                {"strategy": "punch_hole", "errno": "errno 4095"},
            ])
        );
    }
}
