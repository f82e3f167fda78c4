//! `sparsekit stat FILE [--fields LIST] [--no-sync|--force-sync] [--timeout DURATION] [--json]`
//!
//! statx with the fields asked for; shows only what the kernel filled and
//! lists the rest as not reported. With `--timeout`, a dead NFS or FUSE
//! mount makes it exit 3 after the timeout instead of hanging.

use crate::exit::{TIMEOUT, UsageError, WithExitCode};
use crate::human::human_size;
use crate::output::{stdout_failed, warning};
use sparsekit_probe::{
    Fields, Metadata, MountId, ProbeError, ProbeOptions, Strategy, SyncMode, Timestamp,
};
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The file to describe. It is not opened: statx looks the path up
    /// itself, so with --timeout even the lookup is bounded. To probe an
    /// already open file, give /proc/PID/fd/N.
    file: PathBuf,
    /// Comma-separated fields to ask for: type, mode, nlink, uid, gid,
    /// atime, mtime, ctime, ino, size, blocks, btime, mnt_id, dioalign,
    /// mnt_id_unique, subvol, write_atomic, dio_read_align; or the groups
    /// basic and all.
    #[arg(long, value_name = "LIST", default_value = "all", value_parser = Fields::parse_list)]
    fields: Fields,
    /// Answer from cached attributes, without asking an NFS or FUSE server
    /// (AT_STATX_DONT_SYNC).
    #[arg(long, conflicts_with = "force_sync")]
    no_sync: bool,
    /// Ask the server even if the cached attributes are fresh (AT_STATX_FORCE_SYNC).
    #[arg(long)]
    force_sync: bool,
    /// Give up after this long (e.g. 1s, 500ms, 2m; a bare number is
    /// seconds) and exit 3. The call runs on a worker thread.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Print JSON: {"file","strategy","sync","fallbacks":[{"strategy","errno"}],
    /// "requested","filled","missing","blksize","dev","rdev","attributes","fields":{…}}.
    #[arg(long)]
    json: bool,
    /// Which call answers: statx, or fstatat (basic fields only); auto
    /// falls back to fstatat where statx is missing and says so.
    #[arg(long, value_enum, default_value_t = StrategyArg::Auto)]
    strategy: StrategyArg,
    /// Describe a symbolic link itself, not the file it points to.
    #[arg(long)]
    no_dereference: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum StrategyArg {
    Auto,
    Statx,
    Fstatat,
}

impl From<StrategyArg> for Strategy {
    fn from(s: StrategyArg) -> Strategy {
        match s {
            StrategyArg::Auto => Strategy::Auto,
            StrategyArg::Statx => Strategy::Statx,
            StrategyArg::Fstatat => Strategy::Fstatat,
        }
    }
}

/// Parses `1s`, `1.5s`, `500ms`, `250us`, `2m`, `1h`, or a bare number of
/// seconds. Zero is refused: it would time out before trying.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale = match unit.trim() {
        "" | "s" | "sec" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "invalid duration {s:?}: unknown unit {other:?} (use ms, s, m or h)"
            ));
        }
    };
    let value: f64 = num.parse().map_err(|_| {
        format!("invalid duration {s:?}: expected a number and a unit, e.g. 1s or 500ms")
    })?;
    let secs = value * scale;
    if !secs.is_finite() || secs > 1e9 {
        return Err(format!("invalid duration {s:?}: too long"));
    }
    let d = Duration::from_secs_f64(secs);
    if d.is_zero() {
        return Err(format!("invalid duration {s:?}: must be more than zero"));
    }
    Ok(d)
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let path = args.file.display().to_string();
    if args.file.as_os_str().is_empty() {
        return Err(UsageError("FILE is empty".to_owned()).into());
    }
    let sync = if args.no_sync {
        SyncMode::DontSync
    } else if args.force_sync {
        SyncMode::ForceSync
    } else {
        SyncMode::AsStat
    };
    let meta = ProbeOptions::new()
        .fields(args.fields)
        .sync(sync)
        .strategy(args.strategy.into())
        .timeout(args.timeout)
        .follow_symlinks(!args.no_dereference)
        .probe_path(&args.file)
        .map_err(|e| match e.errno() {
            Some(errno) => crate::input::note_dangling(&args.file, errno, cli_error(e)),
            None => cli_error(e),
        })?;
    // Not an expected fallback but a degraded answer (seccomp or an old
    // kernel hides statx: no btime, no DIO alignment…): a warning.
    if let Some(why) = meta.statx_unavailable() {
        warning!("{path}: warning: {why}; fields only statx reports are missing");
    }
    if sync != SyncMode::AsStat && meta.sync() != sync {
        warning!(
            "{path}: warning: {} cannot honour sync mode {}; the answer is as stat(2) gives it",
            meta.strategy(),
            sync
        );
    }
    let mut out = io::stdout().lock();
    let written: io::Result<()> = if args.json {
        serde_json::to_writer(&mut out, &to_json(&path, &meta))
            .map_err(io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        write_human(&mut out, &path, &meta)
    };
    written
        .and_then(|()| out.flush())
        .map_err(|e| stdout_failed(e.into()))?;
    Ok(ExitCode::SUCCESS)
}

/// Timeouts (and refusals while earlier probes are stuck) exit 3; the
/// library's message already names the file and the time waited.
fn cli_error(e: ProbeError) -> anyhow::Error {
    if e.is_timeout() {
        WithExitCode(TIMEOUT, anyhow::Error::new(e)).into()
    } else {
        anyhow::Error::new(e)
    }
}

/// The fields shown: asked for and filled.
fn shown(meta: &Metadata) -> Fields {
    meta.requested() & meta.filled()
}

fn names(fields: Fields) -> Vec<&'static str> {
    fields.names().collect()
}

fn ts_json(t: Timestamp) -> serde_json::Value {
    serde_json::json!({ "sec": t.sec, "nsec": t.nsec })
}

fn to_json(path: &str, meta: &Metadata) -> serde_json::Value {
    use serde_json::{Map, Value, json};
    let show = shown(meta);
    let mut fields = Map::new();
    let mut put = |field: Fields, name: &str, v: Option<Value>| {
        if let (true, Some(v)) = (show.intersects(field), v) {
            fields.insert(name.to_owned(), v);
        }
    };
    put(
        Fields::TYPE,
        "type",
        meta.file_type().map(|t| json!(t.as_str())),
    );
    put(Fields::MODE, "mode", meta.mode().map(|m| json!(m)));
    put(Fields::NLINK, "nlink", meta.nlink().map(|v| json!(v)));
    put(Fields::UID, "uid", meta.uid().map(|v| json!(v)));
    put(Fields::GID, "gid", meta.gid().map(|v| json!(v)));
    put(Fields::ATIME, "atime", meta.atime().map(ts_json));
    put(Fields::MTIME, "mtime", meta.mtime().map(ts_json));
    put(Fields::CTIME, "ctime", meta.ctime().map(ts_json));
    put(Fields::INO, "ino", meta.ino().map(|v| json!(v)));
    put(Fields::SIZE, "size", meta.size().map(|v| json!(v)));
    put(Fields::BLOCKS, "blocks", meta.blocks().map(|v| json!(v)));
    put(Fields::BTIME, "btime", meta.btime().map(ts_json));
    put(
        Fields::MNT_ID | Fields::MNT_ID_UNIQUE,
        "mnt_id",
        meta.mount_id()
            .map(|m| json!({ "id": m.get(), "unique": matches!(m, MountId::Unique(_)) })),
    );
    put(
        Fields::DIOALIGN,
        "dioalign",
        meta.dio_align()
            .map(|d| json!({ "mem_align": d.mem_align, "offset_align": d.offset_align })),
    );
    put(
        Fields::DIO_READ_ALIGN,
        "dio_read_offset_align",
        meta.dio_read_offset_align().map(|v| json!(v)),
    );
    put(Fields::SUBVOL, "subvol", meta.subvol().map(|v| json!(v)));
    put(
        Fields::WRITE_ATOMIC,
        "write_atomic",
        meta.atomic_write().map(|a| {
            json!({
                "unit_min": a.unit_min,
                "unit_max": a.unit_max,
                "segments_max": a.segments_max,
                "unit_max_opt": a.unit_max_opt,
            })
        }),
    );
    let attributes = meta.attributes().map(|a| {
        json!({
            "set": a.set.names().collect::<Vec<_>>(),
            "supported": a.supported.names().collect::<Vec<_>>(),
        })
    });
    json!({
        "file": path,
        "strategy": meta.strategy().as_str(),
        "sync": meta.sync().as_str(),
        "fallbacks": meta.fallback().iter().map(crate::fallback::record).collect::<Vec<_>>(),
        "requested": names(meta.requested()),
        "filled": names(meta.filled()),
        "missing": names(meta.missing()),
        "blksize": meta.blksize(),
        "dev": meta.dev().to_string(),
        "rdev": meta.rdev().to_string(),
        "attributes": attributes,
        "fields": Value::Object(fields),
    })
}

/// `2024-05-06 07:08:09.123456789 UTC`, without a time zone database.
fn utc(t: Timestamp) -> String {
    let days = t.sec.div_euclid(86_400);
    let secs = t.sec.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:09} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        t.nsec
    )
}

fn write_human(out: &mut impl Write, path: &str, meta: &Metadata) -> io::Result<()> {
    let show = shown(meta);
    let row =
        |out: &mut dyn Write, label: &str, value: String| writeln!(out, "{label:>14}: {value}");
    row(out, "File", path.to_owned())?;
    if show.contains(Fields::TYPE) {
        if let Some(t) = meta.file_type() {
            row(out, "Type", t.to_string())?;
        }
    }
    if let Some(m) = meta.mode().filter(|_| show.contains(Fields::MODE)) {
        row(out, "Mode", format!("{m:04o}"))?;
    }
    if let Some(v) = meta.nlink().filter(|_| show.contains(Fields::NLINK)) {
        row(out, "Links", v.to_string())?;
    }
    if let Some(v) = meta.uid().filter(|_| show.contains(Fields::UID)) {
        row(out, "Uid", v.to_string())?;
    }
    if let Some(v) = meta.gid().filter(|_| show.contains(Fields::GID)) {
        row(out, "Gid", v.to_string())?;
    }
    if let Some(v) = meta.ino().filter(|_| show.contains(Fields::INO)) {
        row(out, "Inode", v.to_string())?;
    }
    if let Some(v) = meta.size().filter(|_| show.contains(Fields::SIZE)) {
        row(out, "Size", format!("{v} ({})", human_size(v)))?;
    }
    if let Some(v) = meta.blocks().filter(|_| show.contains(Fields::BLOCKS)) {
        row(
            out,
            "Blocks",
            format!("{v} ({} allocated)", human_size(v.saturating_mul(512))),
        )?;
    }
    row(out, "IO block", meta.blksize().to_string())?;
    row(out, "Device", meta.dev().to_string())?;
    if meta.rdev() != sparsekit_probe::DevId::default() {
        row(out, "Device type", meta.rdev().to_string())?;
    }
    let times = [
        (Fields::ATIME, "Access", meta.atime()),
        (Fields::MTIME, "Modify", meta.mtime()),
        (Fields::CTIME, "Change", meta.ctime()),
        (Fields::BTIME, "Birth", meta.btime()),
    ];
    for (field, label, t) in times {
        if let Some(t) = t.filter(|_| show.contains(field)) {
            row(out, label, utc(t))?;
        }
    }
    if show.intersects(Fields::MNT_ID | Fields::MNT_ID_UNIQUE) {
        match meta.mount_id() {
            Some(MountId::Unique(id)) => row(out, "Mount id", format!("{id} (unique)"))?,
            Some(MountId::Reusable(id)) => row(out, "Mount id", id.to_string())?,
            None => {}
        }
    }
    if let Some(d) = meta.dio_align().filter(|_| show.contains(Fields::DIOALIGN)) {
        let text = if d.supported() {
            format!("memory {}, offset {}", d.mem_align, d.offset_align)
        } else {
            "direct I/O not supported".to_owned()
        };
        row(out, "DIO align", text)?;
    }
    if let Some(v) = meta
        .dio_read_offset_align()
        .filter(|_| show.contains(Fields::DIO_READ_ALIGN))
    {
        row(out, "DIO read align", v.to_string())?;
    }
    if let Some(v) = meta.subvol().filter(|_| show.contains(Fields::SUBVOL)) {
        row(out, "Subvolume", v.to_string())?;
    }
    if let Some(a) = meta
        .atomic_write()
        .filter(|_| show.contains(Fields::WRITE_ATOMIC))
    {
        let mut text = if a.unit_max == 0 {
            "not supported".to_owned()
        } else {
            format!(
                "unit {}..{}, {} segment(s)",
                a.unit_min, a.unit_max, a.segments_max
            )
        };
        if let Some(opt) = a.unit_max_opt {
            text += &format!(", fast up to {opt}");
        }
        row(out, "Atomic write", text)?;
    }
    if let Some(a) = meta.attributes() {
        let set: Vec<&str> = a.set.names().collect();
        let supported: Vec<&str> = a.supported.names().collect();
        row(
            out,
            "Attributes",
            format!(
                "{} (reported here: {})",
                if set.is_empty() {
                    "none".to_owned()
                } else {
                    set.join(",")
                },
                if supported.is_empty() {
                    "none".to_owned()
                } else {
                    supported.join(",")
                }
            ),
        )?;
    }
    if !meta.missing().is_empty() {
        row(out, "Not reported", meta.missing().to_string())?;
    }
    row(
        out,
        "Answered by",
        format!("{}, sync {}", meta.strategy(), meta.sync()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cmd {
        #[command(flatten)]
        args: Args,
    }

    fn parse(argv: &[&str]) -> Result<Args, clap::Error> {
        Cmd::try_parse_from(std::iter::once("stat").chain(argv.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration(" 1h "), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("0s").unwrap_err().contains("more than zero"));
        assert!(
            parse_duration("1 fortnight")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(
            parse_duration("s")
                .unwrap_err()
                .contains("expected a number")
        );
        assert!(parse_duration("1e99").is_err());
    }

    #[test]
    fn arguments() {
        let a = parse(&[
            "f",
            "--fields",
            "size,btime",
            "--no-sync",
            "--timeout",
            "1s",
            "--json",
        ])
        .unwrap();
        assert_eq!(a.fields, Fields::SIZE | Fields::BTIME);
        assert!(a.no_sync && a.json);
        assert_eq!(a.timeout, Some(Duration::from_secs(1)));
        let a = parse(&["f"]).unwrap();
        assert_eq!(a.fields, Fields::KNOWN);
        assert_eq!(a.timeout, None);
    }

    #[test]
    fn usage_errors() {
        for argv in [
            &["f", "--no-sync", "--force-sync"][..],
            &["f", "--fields", "colour"],
            &["f", "--timeout", "0"],
            &["f", "--timeout", "soon"],
            &["f", "--strategy", "magic"],
            &[],
        ] {
            let e = parse(argv).unwrap_err();
            assert!(e.use_stderr(), "{argv:?} must be a usage error (exit 2)");
        }
        let e = parse(&["f", "--fields", "colour"]).unwrap_err().to_string();
        assert!(e.contains("colour") && e.contains("dioalign"), "{e}");
    }

    fn tempfile(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    #[test]
    fn json_shows_only_filled_fields_and_lists_the_rest() {
        let f = tempfile(b"hello");
        let meta = ProbeOptions::new()
            .fields(Fields::KNOWN)
            .strategy(Strategy::Fstatat)
            .probe_path(f.path())
            .unwrap();
        let v = to_json("disk.img", &meta);
        assert_eq!(v["file"], "disk.img");
        assert_eq!(v["strategy"], "fstatat");
        assert_eq!(v["fields"]["size"], 5);
        assert_eq!(v["fields"]["type"], "regular file");
        assert!(
            v["fields"].get("btime").is_none(),
            "not filled, so not shown: {v}"
        );
        assert!(v["fields"].get("dioalign").is_none());
        let missing: Vec<&str> = v["missing"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        assert!(
            missing.contains(&"btime") && missing.contains(&"dioalign"),
            "{missing:?}"
        );
        assert!(v["attributes"].is_null());
        assert_eq!(v["fallbacks"], serde_json::json!([]));
    }

    #[test]
    fn json_of_statx_matches_its_mask() {
        let f = tempfile(b"abc");
        let meta = ProbeOptions::new()
            .fields(Fields::SIZE | Fields::BTIME)
            .probe_path(f.path())
            .unwrap();
        let v = to_json("f", &meta);
        assert_eq!(v["strategy"], "statx");
        assert_eq!(v["requested"], serde_json::json!(["size", "btime"]));
        // Shown: requested and filled, nothing else (mode was filled, not asked).
        let shown: Vec<&String> = v["fields"].as_object().unwrap().keys().collect();
        let expected = if meta.btime().is_some() {
            vec!["btime", "size"]
        } else {
            vec!["size"]
        };
        assert_eq!(shown, expected);
        assert_eq!(v["fields"]["size"], 3);
        assert!(v["attributes"]["supported"].is_array());
    }

    #[test]
    fn human_output_names_what_is_missing() {
        let f = tempfile(&[0u8; 2048]);
        let meta = ProbeOptions::new()
            .fields(Fields::SIZE | Fields::DIOALIGN | Fields::SUBVOL)
            .strategy(Strategy::Fstatat)
            .probe_path(f.path())
            .unwrap();
        let mut out = Vec::new();
        write_human(&mut out, "disk.img", &meta).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("File: disk.img"), "{text}");
        assert!(text.contains("Size: 2048 (2.0 KiB)"), "{text}");
        assert!(text.contains("Not reported: dioalign,subvol"), "{text}");
        assert!(
            text.contains("Answered by: fstatat, sync as-stat"),
            "{text}"
        );
        assert!(!text.contains("Mode:"), "mode was not asked for: {text}");
    }

    #[test]
    fn utc_dates() {
        assert_eq!(
            utc(Timestamp { sec: 0, nsec: 0 }),
            "1970-01-01 00:00:00.000000000 UTC"
        );
        assert_eq!(
            utc(Timestamp {
                sec: 1_709_251_199,
                nsec: 5
            }),
            "2024-02-29 23:59:59.000000005 UTC"
        );
        assert_eq!(
            utc(Timestamp { sec: -1, nsec: 0 }),
            "1969-12-31 23:59:59.000000000 UTC"
        );
    }

    #[test]
    fn a_timeout_exits_3_naming_the_path_and_the_time() {
        let e = cli_error(ProbeError::TimedOut {
            path: "/mnt/dead/disk.img".into(),
            after: Duration::from_millis(1002),
            timeout: Duration::from_secs(1),
        });
        match e.downcast_ref::<WithExitCode>() {
            Some(WithExitCode(code, _)) => assert_eq!(*code, TIMEOUT),
            None => panic!("not an exit-3 error: {e:#}"),
        }
        let msg = format!("{e:#}");
        assert!(
            msg.contains("/mnt/dead/disk.img") && msg.contains("1.002 s"),
            "{msg}"
        );
    }

    #[test]
    fn other_errors_exit_1_with_the_errno() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let e = ProbeOptions::new()
            .probe_path(&missing)
            .map_err(cli_error)
            .unwrap_err();
        assert!(e.downcast_ref::<WithExitCode>().is_none());
        let msg = format!("{e:#}");
        assert!(msg.contains("nope: statx: ENOENT"), "{msg}");
    }
}
