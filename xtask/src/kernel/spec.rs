//! `--kernel SPEC`: what to boot, and picking the newest Debian package of a
//! series. Pure functions over strings, tested without apt.

use anyhow::bail;
use std::path::PathBuf;

/// One kernel of `--kernel SPEC[,SPEC…]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Spec {
    /// The running kernel: the bench runs directly, no VM.
    Host,
    /// `debian:6.1`: the newest `linux-image-6.1…-amd64` the apt lists offer.
    Debian { series: String },
    /// A vmlinuz whose modules are beside it (`…/boot/vmlinuz-REL` with
    /// `…/lib/modules/REL`, as `dpkg -x` or `make modules_install
    /// INSTALL_MOD_PATH=…` lay them out).
    Image(PathBuf),
}

impl Spec {
    /// A short name for messages and directories: `host`, `debian-6.1`,
    /// `vmlinuz-6.1.0-57-amd64`.
    pub(crate) fn label(&self) -> String {
        match self {
            Spec::Host => "host".into(),
            Spec::Debian { series } => format!("debian-{series}"),
            Spec::Image(p) => p
                .file_name()
                .map_or_else(|| "image".into(), |n| n.to_string_lossy().into_owned()),
        }
    }
}

/// Parses `debian:6.1,debian:6.12,host,/path/vmlinuz-X`.
pub(crate) fn parse_specs(text: &str) -> anyhow::Result<Vec<Spec>> {
    let mut specs = Vec::new();
    for item in text.split(',').map(str::trim) {
        let spec = if item == "host" {
            Spec::Host
        } else if let Some(series) = item.strip_prefix("debian:") {
            let valid = series.split('.').count() == 2
                && series
                    .split('.')
                    .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
            if !valid {
                bail!(
                    "--kernel {item}: expected debian:MAJOR.MINOR, e.g. debian:6.1 or debian:6.12"
                );
            }
            Spec::Debian {
                series: series.into(),
            }
        } else if item.contains('/') || item.starts_with("vmlinuz") {
            Spec::Image(PathBuf::from(item))
        } else {
            bail!(
                "--kernel {item:?}: expected debian:MAJOR.MINOR, host, or a path to a vmlinuz \
                 (with its modules beside it)"
            );
        };
        if specs.contains(&spec) {
            bail!("--kernel {item} given twice");
        }
        specs.push(spec);
    }
    if specs.is_empty() {
        bail!("--kernel needs at least one SPEC");
    }
    Ok(specs)
}

/// Whether `name` is the plain amd64 image package of `series`
/// (`linux-image-6.1.0-57-amd64`, `linux-image-6.12.117+deb12-amd64`), not a
/// cloud, rt, debug, unsigned or meta package.
pub(crate) fn is_series_image(name: &str, series: &str) -> bool {
    let Some(abi) = name
        .strip_prefix("linux-image-")
        .and_then(|r| r.strip_suffix("-amd64"))
    else {
        return false;
    };
    let Some(rest) = abi.strip_prefix(series).and_then(|r| r.strip_prefix('.')) else {
        return false;
    };
    // Debian's ABI names: digits, dots and dashes, and a `+debNN` tag.
    let untagged = rest.replacen("+deb", "", 1);
    !untagged.is_empty()
        && untagged
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == '-')
}

/// The numbers of an ABI name, for ordering: `6.1.0-57` → [6, 1, 0, 57].
fn abi_numbers(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// The newest image package of `series` among `names` (apt's package names).
pub(crate) fn newest_image<'a>(
    names: impl IntoIterator<Item = &'a str>,
    series: &str,
) -> Option<&'a str> {
    names
        .into_iter()
        .filter(|n| is_series_image(n, series))
        .max_by_key(|n| abi_numbers(n))
}

/// The file `apt-get download` writes for `package` at `version` (`:` in
/// an epoch is written `%3a`).
pub(crate) fn deb_file_name(package: &str, version: &str) -> String {
    format!("{package}_{}_amd64.deb", version.replace(':', "%3a"))
}

/// Quotes `s` for a POSIX shell.
pub(crate) fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_are_refused() {
        assert_eq!(
            parse_specs("debian:6.1,debian:6.12, host,./k/boot/vmlinuz-6.1.0-57-amd64").unwrap(),
            vec![
                Spec::Debian {
                    series: "6.1".into()
                },
                Spec::Debian {
                    series: "6.12".into()
                },
                Spec::Host,
                Spec::Image("./k/boot/vmlinuz-6.1.0-57-amd64".into()),
            ]
        );
        for bad in [
            "debian:6",
            "debian:6.x",
            "debian:",
            "ubuntu:24.04",
            "",
            "host,host",
            "6.1",
        ] {
            assert!(parse_specs(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            Spec::Debian {
                series: "6.1".into()
            }
            .label(),
            "debian-6.1"
        );
        assert_eq!(Spec::Image("/x/vmlinuz-6.1".into()).label(), "vmlinuz-6.1");
    }

    #[test]
    fn the_newest_plain_amd64_image_of_the_series_is_picked() {
        let names = [
            "linux-image-6.1.0-9-amd64",
            "linux-image-6.1.0-57-amd64",
            "linux-image-6.1.0-57-amd64-dbg",
            "linux-image-6.1.0-57-amd64-unsigned",
            "linux-image-6.1.0-58-cloud-amd64",
            "linux-image-6.1.0-58-rt-amd64",
            "linux-image-6.12.117+deb12-amd64",
            "linux-image-6.12.9+deb12-amd64",
            "linux-image-6.12.115+deb12-amd64",
            "linux-image-6.12.118+deb12-cloud-amd64",
            "linux-image-amd64",
            "linux-image-6.10.1-amd64",
        ];
        assert_eq!(
            newest_image(names, "6.1"),
            Some("linux-image-6.1.0-57-amd64")
        );
        assert_eq!(
            newest_image(names, "6.12"),
            Some("linux-image-6.12.117+deb12-amd64")
        );
        assert_eq!(
            newest_image(names, "6.10"),
            Some("linux-image-6.10.1-amd64")
        );
        assert_eq!(newest_image(names, "6.6"), None);
        // 6.1 must not pick 6.12's or 6.10's packages.
        assert!(!is_series_image("linux-image-6.12.117+deb12-amd64", "6.1"));
    }

    #[test]
    fn deb_names_and_quoting() {
        assert_eq!(
            deb_file_name("linux-image-6.1.0-57-amd64", "6.1.192-3"),
            "linux-image-6.1.0-57-amd64_6.1.192-3_amd64.deb"
        );
        assert_eq!(deb_file_name("p", "1:2.0"), "p_1%3a2.0_amd64.deb");
        assert_eq!(sh_quote("a'b c"), r"'a'\''b c'");
    }
}
