//! Which kernel a matrix column describes, and which committed column a run
//! is compared with.
//!
//! A release string (`uname -r`) names one *build*: the same 6.18.44 built
//! twice has two releases (`6.18.44-fc-v595`, `6.18.44-fc-v857`), and Debian's
//! 6.1.158 is `6.1.0-41-amd64`. Keying the comparison on the release alone
//! meant that a run on another build of a committed kernel found "nothing to
//! compare" and could never fail. So a column also records the upstream
//! version and the package it came from, and [`choose_baseline`] falls back
//! from the same release to the same series to the nearest other kernel —
//! always saying which ([`Basis`]), and failing on regressions only where the
//! kernels are meant to behave alike ([`Basis::gates`]).
//!
//! Everything here is a pure function of strings and columns, tested without
//! a kernel; [`crate::matrix`] reads `uname` and the environment.

use crate::matrix::Column;
use std::cmp::Ordering;

/// An upstream kernel version as numbers: `6.1.158` → `[6, 1, 158]`.
/// Ordered numerically (6.12 > 6.9); an unparsable version is empty and
/// sorts before every other.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub Vec<u64>);

impl Version {
    /// The leading `X.Y[.Z…]` of `s` (`6.18.44-fc-v595` → 6.18.44); `None`
    /// unless it starts with at least `X.Y`.
    pub fn parse(s: &str) -> Option<Version> {
        let mut parts = Vec::new();
        for piece in s.split('.') {
            let digits: String = piece.chars().take_while(char::is_ascii_digit).collect();
            if digits.is_empty() {
                break;
            }
            parts.push(digits.parse().ok()?);
            if digits.len() != piece.len() {
                // `44-fc-v595`: the number ends the version.
                break;
            }
        }
        (parts.len() >= 2).then_some(Version(parts))
    }

    /// `(major, minor)`: the stable series (6.1, 6.12, 6.18).
    pub fn series(&self) -> Option<(u64, u64)> {
        match self.0[..] {
            [major, minor, ..] => Some((major, minor)),
            _ => None,
        }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(u64::to_string).collect();
        f.write_str(&parts.join("."))
    }
}

/// The upstream version of a kernel, from the best source available:
/// 1. Debian's `uname -v` (`#1 SMP PREEMPT_DYNAMIC Debian 6.1.158-1 (2025-11-09)`):
///    Debian releases are ABI names (`6.1.0-41-amd64`) that hide the patch level;
/// 2. the package version it came from (`6.12.57-1~deb12u1`, `1:6.8.0-45.45`);
/// 3. the release itself (`6.18.44-fc-v595`).
///
/// Falls back to the release string unchanged when none parses.
pub fn version_of(release: &str, uname_version: &str, package_version: Option<&str>) -> String {
    let from_uname = uname_version
        .split_whitespace()
        .skip_while(|w| *w != "Debian")
        .nth(1)
        .and_then(Version::parse);
    let from_package = package_version
        .map(|v| v.split_once(':').map_or(v, |(_epoch, rest)| rest))
        .and_then(Version::parse);
    from_uname
        .or(from_package)
        .or_else(|| Version::parse(release))
        .map_or_else(|| release.to_owned(), |v| v.to_string())
}

/// Why a committed column was chosen to compare a run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// The same release string: the same build.
    SameRelease,
    /// Another build of the same major.minor series (the newest committed).
    SameSeries,
    /// No column of this series: the nearest older kernel.
    OlderKernel,
    /// Only newer kernels are committed: the nearest of them.
    NewerKernel,
}

impl Basis {
    /// Whether less support than the baseline fails the run. Within a
    /// series a capability must not get worse; across series a difference
    /// is what the kernels do differently, reported but not failed.
    pub fn gates(self) -> bool {
        matches!(self, Basis::SameRelease | Basis::SameSeries)
    }

    /// For the run's report: `same release`, `same series 6.18`, ….
    pub fn describe(self, observed: &Version) -> String {
        match (self, observed.series()) {
            (Basis::SameRelease, _) => "the same release".into(),
            (Basis::SameSeries, Some((a, b))) => {
                format!("the same series {a}.{b}, another build")
            }
            (Basis::SameSeries, None) => "the same series, another build".into(),
            (Basis::OlderKernel, _) => "no column of this series: the nearest older kernel".into(),
            (Basis::NewerKernel, _) => {
                "no column of this series nor older: the nearest newer kernel".into()
            }
        }
    }
}

/// The version of a column (older matrix.toml columns lack the field: then
/// the release's leading numbers).
pub fn column_version(c: &Column) -> Version {
    Version::parse(&c.version)
        .or_else(|| Version::parse(&c.kernel))
        .unwrap_or_default()
}

/// The committed column to compare `observed` with, and why: (a) the same
/// release, else (b) the newest column of the same major.minor series, else
/// (c) the nearest older kernel, else (d) the nearest newer one. `None` only
/// when `committed` is empty. Among equals, a column from the same machine
/// wins, then the most recently recorded.
pub fn choose_baseline<'a>(
    committed: &'a [Column],
    observed: &Column,
) -> Option<(Basis, &'a Column)> {
    let version = column_version(observed);
    // Best by `key`; ties go to the same machine, then the latest date.
    let best = |candidates: Vec<&'a Column>, key: &dyn Fn(&Version, &Version) -> Ordering| {
        candidates.into_iter().max_by(|a, b| {
            key(&column_version(a), &column_version(b))
                .then_with(|| (a.machine == observed.machine).cmp(&(b.machine == observed.machine)))
                .then_with(|| a.recorded.cmp(&b.recorded))
        })
    };
    let same_release: Vec<&Column> = committed
        .iter()
        .filter(|c| c.kernel == observed.kernel)
        .collect();
    if let Some(c) = best(same_release, &|_, _| Ordering::Equal) {
        return Some((Basis::SameRelease, c));
    }
    let series = version.series();
    let same_series: Vec<&Column> = committed
        .iter()
        .filter(|c| series.is_some() && column_version(c).series() == series)
        .collect();
    if let Some(c) = best(same_series, &|a, b| a.cmp(b)) {
        return Some((Basis::SameSeries, c));
    }
    let older: Vec<&Column> = committed
        .iter()
        .filter(|c| column_version(c) < version)
        .collect();
    if let Some(c) = best(older, &|a, b| a.cmp(b)) {
        return Some((Basis::OlderKernel, c));
    }
    let newer: Vec<&Column> = committed.iter().collect();
    best(newer, &|a, b| b.cmp(a)).map(|c| (Basis::NewerKernel, c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn col(kernel: &str, version: &str, machine: &str, recorded: &str) -> Column {
        Column {
            kernel: kernel.into(),
            version: version.into(),
            package: None,
            machine: machine.into(),
            recorded: recorded.into(),
            scenarios: BTreeMap::new(),
            faults: BTreeMap::new(),
            unmeasured: BTreeMap::new(),
            filesystems: BTreeMap::new(),
        }
    }

    #[test]
    fn versions_parse_numerically() {
        assert_eq!(
            Version::parse("6.18.44-fc-v595"),
            Some(Version(vec![6, 18, 44]))
        );
        assert_eq!(
            Version::parse("6.1.0-41-amd64"),
            Some(Version(vec![6, 1, 0]))
        );
        assert_eq!(
            Version::parse("6.12.57+deb12-amd64"),
            Some(Version(vec![6, 12, 57]))
        );
        assert_eq!(Version::parse("6.8"), Some(Version(vec![6, 8])));
        assert_eq!(Version::parse("6"), None);
        assert_eq!(Version::parse("linux"), None);
        assert_eq!(Version::parse(""), None);
        assert!(Version::parse("6.12.1").unwrap() > Version::parse("6.9.200").unwrap());
        assert_eq!(Version::parse("6.12.57").unwrap().series(), Some((6, 12)));
        assert_eq!(Version::parse("6.12.57").unwrap().to_string(), "6.12.57");
    }

    #[test]
    fn the_version_comes_from_debian_uname_then_the_package_then_the_release() {
        assert_eq!(
            version_of(
                "6.1.0-41-amd64",
                "#1 SMP PREEMPT_DYNAMIC Debian 6.1.158-1 (2025-11-09)",
                None
            ),
            "6.1.158"
        );
        assert_eq!(
            version_of(
                "6.12.57+deb12-amd64",
                "#1 SMP PREEMPT_DYNAMIC",
                Some("6.12.57-1~deb12u1")
            ),
            "6.12.57"
        );
        assert_eq!(
            version_of("6.8.0-45-generic", "#45-Ubuntu SMP", Some("1:6.8.0-45.45")),
            "6.8.0"
        );
        assert_eq!(version_of("6.18.44-fc-v857", "#1 SMP", None), "6.18.44");
        assert_eq!(version_of("weird", "#1", Some("also-weird")), "weird");
    }

    #[test]
    fn the_same_release_wins_and_prefers_the_same_machine() {
        let committed = [
            col("6.18.44-fc-v595", "6.18.44", "other", "2026-11-26"),
            col("6.18.44-fc-v595", "6.18.44", "m", "2026-11-20"),
            col("6.18.50-x", "6.18.50", "m", "2026-11-27"),
        ];
        let observed = col("6.18.44-fc-v595", "6.18.44", "m", "2026-12-01");
        let (basis, c) = choose_baseline(&committed, &observed).unwrap();
        assert_eq!(basis, Basis::SameRelease);
        assert_eq!(c.machine, "m");
        assert!(basis.gates());
    }

    #[test]
    fn another_build_of_a_committed_kernel_compares_with_its_series_and_gates() {
        // The bug of issue 12: same 6.18.44, another build suffix, used to
        // find "nothing to compare".
        let committed = [
            col("6.1.0-41-amd64", "6.1.158", "m", "2026-11-25"),
            col("6.18.44-fc-v595", "", "m", "2026-11-25"),
            col("6.18.30-fc-v100", "6.18.30", "m", "2026-11-25"),
        ];
        let observed = col("6.18.44-fc-v857", "6.18.44", "m", "2026-12-01");
        let (basis, c) = choose_baseline(&committed, &observed).unwrap();
        assert_eq!(basis, Basis::SameSeries);
        assert_eq!(c.kernel, "6.18.44-fc-v595", "the newest of the series");
        assert!(basis.gates());
        assert!(basis.describe(&column_version(&observed)).contains("6.18"));
    }

    #[test]
    fn another_series_compares_with_the_nearest_older_kernel_without_gating() {
        let committed = [
            col("6.1.0-41-amd64", "6.1.158", "m", "2026-11-25"),
            col("6.12.57+deb12-amd64", "6.12.57", "m", "2026-11-25"),
            col("6.18.44-fc-v595", "6.18.44", "m", "2026-11-25"),
        ];
        let observed = col("6.16.3-foo", "6.16.3", "m", "2026-12-01");
        let (basis, c) = choose_baseline(&committed, &observed).unwrap();
        assert_eq!(
            (basis, c.kernel.as_str()),
            (Basis::OlderKernel, "6.12.57+deb12-amd64")
        );
        assert!(!basis.gates());
    }

    #[test]
    fn only_newer_kernels_still_give_a_baseline_and_only_an_empty_matrix_gives_none() {
        let committed = [
            col("6.18.44-fc-v595", "6.18.44", "m", "2026-11-25"),
            col("6.12.57+deb12-amd64", "6.12.57", "m", "2026-11-25"),
        ];
        let observed = col("6.1.0-41-amd64", "6.1.158", "m", "2026-12-01");
        let (basis, c) = choose_baseline(&committed, &observed).unwrap();
        assert_eq!(
            (basis, c.kernel.as_str()),
            (Basis::NewerKernel, "6.12.57+deb12-amd64")
        );
        assert!(!basis.gates());
        assert!(choose_baseline(&[], &observed).is_none());
        // An unparsable release still finds something to compare with.
        let odd = col("custom", "", "m", "2026-12-01");
        assert!(choose_baseline(&committed, &odd).is_some());
    }
}
