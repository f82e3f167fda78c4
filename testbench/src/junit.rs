//! `junit.xml`: the run as JUnit XML in the shape fstests' `./check -R
//! xunit` writes (fstests `common/report`), so the tools that read fstests
//! results (kdevops, CI test reports) read ours.
//!
//! fstests writes one `<testsuite>` per section; a section there is one
//! filesystem configuration, so here one `<testsuite>` per kernel ×
//! filesystem, inside a `<testsuites>` root. As in fstests: testcase
//! `classname` is `sparsekit.<filesystem>` (fstests: `xfstests.<section>`),
//! `name` is the scenario (`copy/cache_drop`, like `generic/001`) or the
//! capability cell (`caps/punch_hole`); a skip is `<skipped message=…/>`, a
//! failure `<failure message=… type="TestFail"/>`; the suite's
//! `<properties>` carry `SECTION`, `FSTYP`, `MKFS_OPTIONS`,
//! `MOUNT_OPTIONS`, `KERNEL`, `ARCH` and `PLATFORM` (empty values left
//! out, as fstests does), plus `OVL_BASE_FSTYP` for an overlay.

use crate::results::{Case, Counts, FsResults, RunResults, Status, cases, rfc3339};
use std::fmt::Write as _;

/// The document for `runs` (one per kernel).
pub fn document(runs: &[RunResults]) -> String {
    let all: Vec<(&RunResults, &FsResults, Vec<Case>)> = runs
        .iter()
        .flat_map(|run| run.filesystems.iter().map(move |fs| (run, fs, cases(fs))))
        .collect();
    let total = all
        .iter()
        .map(|(_, _, c)| Counts::of(c))
        .fold(Counts::default(), |a, b| a + b);
    let seconds: f64 = all
        .iter()
        .map(|(_, fs, _)| fs.report.elapsed.as_secs_f64())
        .sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"sparsekit\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" errors=\"0\" time=\"{seconds:.3}\">",
        total.total(),
        total.failed,
        total.skipped,
    );
    for (run, fs, cases) in &all {
        suite(&mut out, run, fs, cases);
    }
    out += "</testsuites>\n";
    out
}

fn suite(out: &mut String, run: &RunResults, fs: &FsResults, cases: &[Case]) {
    let c = Counts::of(cases);
    let name = &fs.report.fs;
    let _ = writeln!(
        out,
        "\t<testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" errors=\"0\" time=\"{:.3}\" hostname=\"{}\" timestamp=\"{}\">",
        attr(&format!("{name} on Linux {}", run.kernel_release)),
        c.total(),
        c.failed,
        c.skipped,
        fs.report.elapsed.as_secs_f64(),
        attr(&run.hostname),
        rfc3339(run.started),
    );
    out.push_str("\t\t<properties>\n");
    for (k, v) in properties(run, fs) {
        if !v.is_empty() {
            let _ = writeln!(
                out,
                "\t\t\t<property name=\"{}\" value=\"{}\"/>",
                attr(k),
                attr(&v)
            );
        }
    }
    out.push_str("\t\t</properties>\n");
    let classname = attr(&format!("sparsekit.{name}"));
    for case in cases {
        let time = case.seconds.map_or("0".to_owned(), |s| format!("{s:.3}"));
        let _ = write!(
            out,
            "\t\t<testcase classname=\"{classname}\" name=\"{}\" time=\"{time}\"",
            attr(&case.name)
        );
        let system_out = case.cell.as_ref().map(|c| c.summary());
        match &case.status {
            Status::Pass if system_out.is_none() => {
                out.push_str("/>\n");
                continue;
            }
            Status::Pass => out.push_str(">\n"),
            Status::Skip(why) => {
                let _ = writeln!(out, ">\n\t\t\t<skipped message=\"{}\"/>", attr(why));
            }
            Status::Fail(msg) => {
                // The first line is the message; the whole text goes to
                // system-out, as fstests puts the .full file there.
                let first = msg.lines().next().unwrap_or_default();
                let _ = writeln!(
                    out,
                    ">\n\t\t\t<failure message=\"{}\" type=\"TestFail\"/>",
                    attr(first)
                );
                if msg.contains('\n') {
                    let _ = writeln!(out, "\t\t\t<system-err>{}</system-err>", text(msg));
                }
            }
        }
        if let Some(s) = system_out {
            let _ = writeln!(out, "\t\t\t<system-out>{}</system-out>", text(&s));
        }
        out.push_str("\t\t</testcase>\n");
    }
    out.push_str("\t</testsuite>\n");
}

/// The suite's properties in fstests' names, sorted as fstests sorts them.
fn properties(run: &RunResults, fs: &FsResults) -> Vec<(&'static str, String)> {
    let mut p = vec![
        ("ARCH", run.arch.clone()),
        ("KERNEL", run.kernel_release.clone()),
        (
            "PLATFORM",
            format!("Linux/{} {} {}", run.arch, run.hostname, run.kernel_release),
        ),
        ("SECTION", fs.report.fs.clone()),
    ];
    if let Some(def) = &fs.def {
        // fstests' MKFS_OPTIONS are the options without the program and
        // device; an overlay's are those of the filesystem under it.
        let made = def.over_def.as_deref().unwrap_or(def);
        p.push(("FSTYP", def.fstype.clone()));
        p.push(("MKFS_OPTIONS", made.mkfs.get(1..).unwrap_or(&[]).join(" ")));
        if !def.mount_options.is_empty() {
            p.push(("MOUNT_OPTIONS", format!("-o {}", def.mount_options)));
        }
        if let Some(base) = &def.over_def {
            p.push(("OVL_BASE_FSTYP", base.fstype.clone()));
        }
    }
    p.sort_by_key(|(k, _)| *k);
    p
}

/// Escapes an attribute value: markup characters, and whitespace that
/// attribute normalisation would otherwise turn into spaces.
fn attr(s: &str) -> String {
    escape(s, true)
}

/// Escapes element text.
fn text(s: &str) -> String {
    escape(s, false)
}

/// XML 1.0 cannot carry most C0 controls, U+FFFE or U+FFFF even as
/// character references, so those are written visibly as `\u{..}`
/// instead of being dropped (fstests runs its text through `cat -v` for
/// the same reason).
fn escape(s: &str, attribute: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' | '\t' | '\r' if attribute => {
                let _ = write!(out, "&#{};", u32::from(ch));
            }
            '\r' => out.push_str("&#13;"),
            '\n' | '\t' => out.push(ch),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::sample;

    #[test]
    fn sample_run_document() {
        insta::assert_snapshot!(document(&[sample()]));
    }

    #[test]
    fn hostile_strings_cannot_break_out_of_attributes_or_text() {
        let hostile = "a\"b'c<d>e&f]]>\u{0}\u{1}\u{1b}\n\t\r\u{fffe}";
        let a = attr(hostile);
        assert_eq!(
            a,
            "a&quot;b&apos;c&lt;d&gt;e&amp;f]]&gt;\\u{0}\\u{1}\\u{1b}&#10;&#9;&#13;\\u{fffe}"
        );
        let t = text(hostile);
        assert_eq!(
            t,
            "a&quot;b&apos;c&lt;d&gt;e&amp;f]]&gt;\\u{0}\\u{1}\\u{1b}\n\t&#13;\\u{fffe}"
        );
        for s in [a, t] {
            assert!(!s.contains(['<', '>', '"', '\'', '\0']), "{s}");
        }
    }

    #[test]
    fn document_is_well_formed_and_counts_match() {
        // A minimal structural check that needs no XML crate: every
        // element opened is closed, in order, and the root totals are
        // the run's counts. (The full check with a reader we did not write,
        // junitparser, runs in `cargo xtask ci`.)
        let run = sample();
        let doc = document(std::slice::from_ref(&run));
        let mut stack: Vec<String> = Vec::new();
        let mut rest = doc.as_str();
        while let Some(i) = rest.find('<') {
            rest = &rest[i + 1..];
            let end = rest.find('>').expect("unterminated tag");
            let tag = &rest[..end];
            rest = &rest[end + 1..];
            if tag.starts_with('?') {
                continue;
            }
            let name: String = tag
                .trim_start_matches('/')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if tag.starts_with('/') {
                assert_eq!(stack.pop().as_deref(), Some(name.as_str()), "{doc}");
            } else if !tag.ends_with('/') {
                stack.push(name);
            }
        }
        assert!(stack.is_empty(), "unclosed: {stack:?}");
        let c = run.counts();
        assert!(doc.contains(&format!(
            "<testsuites name=\"sparsekit\" tests=\"{}\" failures=\"{}\" skipped=\"{}\"",
            c.total(),
            c.failed,
            c.skipped
        )));
        assert_eq!(doc.matches("<testcase ").count(), c.total());
        assert_eq!(doc.matches("<failure ").count(), c.failed);
        assert_eq!(doc.matches("<skipped ").count(), c.skipped);
    }
}
