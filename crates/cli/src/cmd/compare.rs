//! `sparsekit compare A B [--allocation] [--json] [--limit N] [--timeout D]
//! [--cache auto|keep|drop|direct|dontcache]`
//!
//! Whether two files or block devices hold the same bytes, read from both
//! extent maps: holes in both are skipped, a hole against data is checked
//! for zeros, data against data is compared. Exit 0 equal, 1 different
//! (the first differing offset printed), 2 usage error, 3 timeout.

use crate::exit::UsageError;
use crate::human::human_size;
use crate::watchdog::{OnStall, TimeoutArg, Watchdog};
use serde_json::json;
use sparsekit_copy::compare::{CompareError, CompareOptions, CompareReport};
use sparsekit_copy::{CachePolicy, Interrupt};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Exit status when the files differ (`cmp`'s convention).
const DIFFERENT: u8 = 1;
/// Ranges listed by `--json` when `--limit` is not given.
const JSON_LIMIT: usize = 100;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The first file or block device (only read).
    a: PathBuf,
    /// The second file or block device (only read).
    b: PathBuf,
    /// Also compare the allocation: ranges one side allocates (data or
    /// unwritten) and the other leaves as a hole make the files different.
    /// Where a file's holes cannot be seen (no SEEK_HOLE or FIEMAP, as on
    /// NFSv3) its allocation is unknown, and unknown is not equal (exit 1).
    #[arg(long)]
    allocation: bool,
    /// List at most N differing ranges (and N allocation differences). The
    /// comparison stops once it knows there are more; with 0 it stops at
    /// the first differing byte. Default: 0, or 100 with --json.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    #[command(flatten)]
    timeout: TimeoutArg,
    /// Page-cache policy of the reads: auto takes the first of direct
    /// (O_DIRECT), dontcache (RWF_DONTCACHE), drop (fadvise), keep that works.
    #[arg(long, value_enum, default_value_t = CacheArg::Auto)]
    cache: CacheArg,
    /// Reader threads per file (1-16). More requests in flight help SSDs
    /// and network storage; one keeps each file's reads in order for
    /// devices that read ahead (disks, loop devices over files).
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u8).range(1..=16))]
    readers: u8,
    /// Print JSON: {"a":{"file","size","allocated","map_method","cache",
    /// "bytes_read","bytes_read_buffered"},"b":{…},"equal","sizes_equal","content_equal",
    /// "first_difference","differences":[{"offset","length"}],
    /// "differences_truncated","allocation":null|{"equal","only_a","only_b",
    /// "differences":[{"offset","length","allocated_in"}],"truncated",
    /// "unobserved":["a"|"b"]},
    /// "bytes_compared","bytes_skipped","seconds","fallbacks":[{"strategy","errno"}]}.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
#[value(rename_all = "lower")]
enum CacheArg {
    Auto,
    Keep,
    Drop,
    Direct,
    DontCache,
}

impl From<CacheArg> for CachePolicy {
    fn from(a: CacheArg) -> CachePolicy {
        match a {
            CacheArg::Auto => CachePolicy::Auto,
            CacheArg::Keep => CachePolicy::Keep,
            CacheArg::Drop => CachePolicy::Drop,
            CacheArg::Direct => CachePolicy::Direct,
            CacheArg::DontCache => CachePolicy::DontCache,
        }
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let limit = args.limit.unwrap_or(if args.json { JSON_LIMIT } else { 0 });
    let interrupt = Interrupt::new();
    let what = format!("{} vs {}", args.a.display(), args.b.display());
    // The shared watchdog: a stall (no byte read for that long) first asks
    // the comparison to stop between requests, then exits 3 itself (a read
    // on a dead mount never returns; the comparison only reads, so nothing
    // is lost).
    let watchdog = Watchdog::start(args.timeout.timeout, format!("{what}: compare"));
    let stop = interrupt.clone();
    watchdog.on_stall(OnStall {
        note: "nothing was changed (compare only reads)".into(),
        soft_stop: Some(Box::new(move || stop.trigger())),
        cleanup: None,
    });
    let opts = CompareOptions::new()
        .allocation(args.allocation)
        .limit(limit)
        .cache(args.cache.into())
        .readers(args.readers.into())
        .interrupt(interrupt);
    let report = opts
        .compare(&args.a, &args.b)
        .map_err(|e| compare_error(e, &what, &watchdog))?;
    watchdog.finish();
    // Quiet by default like every command: an expected fallback is in
    // --json and, under --verbose, on stderr.
    for f in &report.fallbacks {
        crate::fallback::note(format_args!("{what}: "), f);
    }
    let printed = (|| -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        if args.json {
            serde_json::to_writer(&mut out, &json_report(&args.a, &args.b, &report))
                .map_err(std::io::Error::from)?;
            writeln!(out)?;
        } else {
            write_human(&mut out, &args.a, &args.b, &report)?;
        }
        out.flush()?;
        Ok(())
    })();
    printed.map_err(crate::output::stdout_failed)?;
    Ok(if report.equal() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(DIFFERENT)
    })
}

fn compare_error(e: CompareError, what: &str, watchdog: &Watchdog) -> anyhow::Error {
    if e.is_usage_error() {
        return UsageError(e.to_string()).into();
    }
    // Interrupted only by the watchdog (no signal handlers here): `finish`
    // says false once it fired.
    if let CompareError::Interrupted { bytes_compared } = &e {
        if !watchdog.finish() {
            return watchdog.timeout_error(&format!(
                "{} compared, no difference so far; nothing was changed",
                human_size(*bytes_compared)
            ));
        }
    }
    anyhow::anyhow!("{what}: {e}")
}

/// `a.img and b.img differ: first at offset 1234` (and the ranges with
/// --limit), or `a.img and b.img are equal (…)`.
fn write_human(out: &mut impl Write, a: &Path, b: &Path, r: &CompareReport) -> std::io::Result<()> {
    let (a, b) = (a.display(), b.display());
    let how = format!(
        "{} read, {} of holes skipped, map {}/{}, cache {}/{}, {:.2} s",
        human_size(r.bytes_read()),
        human_size(r.bytes_skipped),
        r.a.map_method,
        r.b.map_method,
        r.a.cache,
        r.b.cache,
        r.elapsed.as_secs_f64()
    );
    if r.equal() {
        return writeln!(
            out,
            "{a} and {b} are equal ({}; {how})",
            human_size(r.a.size)
        );
    }
    if !r.sizes_equal() {
        writeln!(
            out,
            "{a} and {b} differ in size: {} and {} bytes",
            r.a.size, r.b.size
        )?;
    }
    if let Some(first) = r.first_difference {
        if r.content_equal {
            writeln!(
                out,
                "{a} and {b} differ: the first {first} bytes are equal, then {} ends",
                if r.a.size < r.b.size {
                    a.to_string()
                } else {
                    b.to_string()
                }
            )?;
        } else {
            writeln!(out, "{a} and {b} differ: first at offset {first}")?;
        }
    }
    for d in &r.differences {
        writeln!(
            out,
            "  differ {}..{} ({})",
            d.offset,
            d.end(),
            human_size(d.length)
        )?;
    }
    if r.differences_truncated && !r.differences.is_empty() {
        writeln!(out, "  … more differing ranges (raise --limit)")?;
    }
    let path_of = |w: sparsekit_copy::compare::Which| match w {
        sparsekit_copy::compare::Which::A => (&a, &r.a),
        sparsekit_copy::compare::Which::B => (&b, &r.b),
    };
    let unobserved: Vec<_> = r.allocation.iter().flat_map(|al| &al.unobserved).collect();
    if !unobserved.is_empty() && r.content_equal && r.sizes_equal() {
        writeln!(
            out,
            "{a} and {b} hold the same bytes; their allocation is unknown:"
        )?;
    }
    for &which in unobserved {
        let (path, side) = path_of(which);
        writeln!(
            out,
            "  neither SEEK_HOLE nor FIEMAP shows the holes of {path} (mapped by {}; it allocates {} in all)",
            side.map_method.as_str(),
            human_size(side.allocated)
        )?;
    }
    if let Some(alloc) = r
        .allocation
        .as_ref()
        .filter(|a| a.unobserved.is_empty() && !a.equal())
    {
        writeln!(
            out,
            "{a} and {b} differ in allocation: {} allocated only in {a}, {} only in {b}",
            human_size(alloc.only_a),
            human_size(alloc.only_b)
        )?;
        for d in &alloc.differences {
            let (side, _) = path_of(d.allocated_in);
            writeln!(
                out,
                "  allocated only in {side}: {}..{} ({})",
                d.offset,
                d.offset + d.length,
                human_size(d.length)
            )?;
        }
        if alloc.truncated {
            writeln!(out, "  … more allocation differences (raise --limit)")?;
        }
    }
    writeln!(out, "({how})")
}

fn json_report(a: &Path, b: &Path, r: &CompareReport) -> serde_json::Value {
    let side = |p: &Path, s: &sparsekit_copy::compare::SideReport| {
        json!({
            "file": p.display().to_string(),
            "size": s.size,
            "allocated": s.allocated,
            "map_method": s.map_method.as_str(),
            "cache": s.cache.as_str(),
            "bytes_read": s.bytes_read,
            "bytes_read_buffered": s.bytes_read_buffered,
        })
    };
    let differences: Vec<_> = r
        .differences
        .iter()
        .map(|d| json!({"offset": d.offset, "length": d.length}))
        .collect();
    let allocation = r.allocation.as_ref().map(|a| {
        let diffs: Vec<_> = a
            .differences
            .iter()
            .map(|d| {
                json!({"offset": d.offset, "length": d.length, "allocated_in": d.allocated_in.as_str()})
            })
            .collect();
        json!({
            "equal": a.equal(),
            "only_a": a.only_a,
            "only_b": a.only_b,
            "differences": diffs,
            "truncated": a.truncated,
            "unobserved": a.unobserved.iter().map(|w| w.as_str()).collect::<Vec<_>>(),
        })
    });
    let fallbacks: Vec<_> = r.fallbacks.iter().map(crate::fallback::record).collect();
    json!({
        "a": side(a, &r.a),
        "b": side(b, &r.b),
        "equal": r.equal(),
        "sizes_equal": r.sizes_equal(),
        "content_equal": r.content_equal,
        "first_difference": r.first_difference,
        "differences": differences,
        "differences_truncated": r.differences_truncated,
        "allocation": allocation,
        "bytes_compared": r.bytes_compared,
        "bytes_skipped": r.bytes_skipped,
        "seconds": r.elapsed.as_secs_f64(),
        "fallbacks": fallbacks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    /// Two 8 MiB files: data at 0 and 4 MiB; B differs at 4 MiB + 10 and
    /// writes zeros where A has a hole (1 MiB..2 MiB).
    fn files() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir_in("/tmp").unwrap();
        let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
        for p in [&a, &b] {
            let f = std::fs::File::create(p).unwrap();
            f.write_all_at(&[7u8; 65536], 0).unwrap();
            f.write_all_at(&[9u8; 65536], 4 << 20).unwrap();
            f.set_len(8 << 20).unwrap();
        }
        let f = std::fs::File::options().write(true).open(&b).unwrap();
        f.write_all_at(&[1], (4 << 20) + 10).unwrap();
        f.write_all_at(&vec![0u8; 1 << 20], 1 << 20).unwrap();
        f.sync_all().unwrap();
        (dir, a, b)
    }

    /// The JSON document with what depends on the machine (timing, the
    /// policies and methods the filesystem under /tmp offers) fixed.
    fn normalised(v: serde_json::Value) -> serde_json::Value {
        let mut v = v;
        v["seconds"] = json!(0.25);
        for s in ["a", "b"] {
            v[s]["file"] = json!(format!("{s}.img"));
            v[s]["allocated"] = json!(0);
        }
        v
    }

    #[test]
    fn json_shape() {
        let (_d, a, b) = files();
        let r = CompareOptions::new()
            .cache(CachePolicy::Keep)
            .map_method(sparsekit_extents::Method::Seek)
            .allocation(true)
            .limit(10)
            .compare(&a, &b)
            .unwrap();
        insta::assert_json_snapshot!(normalised(json_report(&a, &b, &r)));
    }

    #[test]
    fn human_lines_name_the_first_offset_and_the_ranges() {
        let (_d, a, b) = files();
        let r = CompareOptions::new().limit(10).compare(&a, &b).unwrap();
        let mut out = Vec::new();
        write_human(&mut out, Path::new("a.img"), Path::new("b.img"), &r).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with(
                "a.img and b.img differ: first at offset 4194314\n  differ 4194314..4194315 (1 B)\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn unknown_allocation_names_the_file_and_its_map() {
        let (_d, a, _) = files();
        let r = CompareOptions::new()
            .map_method(sparsekit_extents::Method::Scan)
            .allocation(true)
            .compare(&a, &a)
            .unwrap();
        let mut out = Vec::new();
        write_human(&mut out, Path::new("a.img"), Path::new("b.img"), &r).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with(
                "a.img and b.img hold the same bytes; their allocation is unknown:\n  neither SEEK_HOLE nor FIEMAP shows the holes of a.img (mapped by scan;"
            ),
            "{text}"
        );
        assert!(text.contains("holes of b.img"), "{text}");
        assert_eq!(
            json_report(&a, &a, &r)["allocation"]["unobserved"],
            json!(["a", "b"])
        );
    }
}
