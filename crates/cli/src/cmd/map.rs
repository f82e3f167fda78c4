//! `sparsekit map FILE [--json] [--method auto|seek|fiemap|scan|all-data]`

use crate::exit::UsageError;
use crate::human::{human_bytes, human_size, push_right, push_u64};
use crate::input::{Accept, open_checked};
use crate::output::{Stdout, stdout_failed, warning};
use crate::watchdog::Watchdog;
use sparsekit_extents::{Extent, ExtentKind, Fallback, MapError, MapOptions, Method};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The file (or block device) to map.
    file: PathBuf,
    /// Print JSON: {"file","size","method","fallbacks":[{"strategy","errno"}],"extents":[…],
    /// "data_bytes","hole_bytes"}.
    #[arg(long)]
    json: bool,
    /// How to find the extents; auto prefers FIEMAP here so unwritten and
    /// shared extents show, then SEEK_DATA/SEEK_HOLE, then scanning.
    #[arg(long, value_enum, default_value_t = MethodArg::Auto)]
    method: MethodArg,
    #[command(flatten)]
    timeout: crate::watchdog::TimeoutArg,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum MethodArg {
    Auto,
    Seek,
    Fiemap,
    Scan,
    AllData,
}

impl From<MethodArg> for Method {
    fn from(m: MethodArg) -> Method {
        match m {
            MethodArg::Auto => Method::Auto,
            MethodArg::Seek => Method::Seek,
            MethodArg::Fiemap => Method::Fiemap,
            MethodArg::Scan => Method::Scan,
            MethodArg::AllData => Method::AllData,
        }
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let path = args.file.display().to_string();
    // Started before the open: on a dead mount the open itself hangs.
    let watchdog = Watchdog::start(args.timeout.timeout, format!("{path}: map"));
    let file = open_checked(&args.file, "map", Accept::FileOrDevice, false)?;
    watchdog.watch_cache(&file);
    let map = MapOptions::new()
        .method(args.method.into())
        .prefer_fiemap(true)
        .map(&file)
        .map_err(|e| match e {
            // A directory or fifo is the wrong kind of argument: exit 2.
            MapError::NotMappable { .. } => UsageError(format!("{path}: {e}")).into(),
            e => anyhow::anyhow!("{path}: {e}"),
        })?;
    for fallback in map.fallbacks() {
        crate::fallback::note(format_args!("{path}: method "), fallback);
    }
    if let Some(d) = map.degraded() {
        warning!("{path}: warning: {d}");
    }
    let header = Header {
        file: &path,
        size: map.size(),
        method: map.method(),
        fallbacks: map.fallbacks().to_vec(),
    };
    let mut out = BufWriter::with_capacity(1 << 16, Stdout::new(&watchdog));
    // The map is lazy: both renderers stream, so a million extents cost no
    // memory. Each extent found is progress for the watchdog.
    let extents = map
        .into_iter_with_size_check(&path)
        .inspect(|_| watchdog.tick());
    let written = if args.json {
        write_json(&mut out, &header, extents)
    } else {
        write_table(&mut out, &header, extents)
    };
    written
        .and_then(|()| out.flush().map_err(Into::into))
        .map_err(stdout_failed)?;
    watchdog.finish();
    Ok(ExitCode::SUCCESS)
}

/// Adds the path to errors and warns when the file changed size under us.
trait WithSizeCheck<'a> {
    fn into_iter_with_size_check(
        self,
        path: &'a str,
    ) -> Box<dyn Iterator<Item = anyhow::Result<Extent>> + 'a>;
}

impl<'a> WithSizeCheck<'a> for sparsekit_extents::ExtentMap<'a> {
    fn into_iter_with_size_check(
        mut self,
        path: &'a str,
    ) -> Box<dyn Iterator<Item = anyhow::Result<Extent>> + 'a> {
        let mut done = false;
        Box::new(std::iter::from_fn(move || {
            if done {
                return None;
            }
            match self.next() {
                Some(r) => Some(r.map_err(|e: MapError| anyhow::anyhow!("{path}: {e}"))),
                None => {
                    done = true;
                    if let Some(now) = self.size_changed() {
                        warning!(
                            "{path}: warning: size changed from {} to {now} while mapping; the map shows what was seen",
                            self.size()
                        );
                    }
                    None
                }
            }
        }))
    }
}

struct Header<'a> {
    file: &'a str,
    size: u64,
    method: Method,
    fallbacks: Vec<Fallback>,
}

#[derive(Default)]
struct Totals {
    extents: u64,
    data: u64,
    hole: u64,
    unwritten: u64,
}

impl Totals {
    fn add(&mut self, e: &Extent) {
        self.extents += 1;
        match e.kind {
            ExtentKind::Data => self.data += e.length,
            ExtentKind::Hole => self.hole += e.length,
            ExtentKind::Unwritten => self.unwritten += e.length,
        }
    }
}

fn write_table(
    out: &mut impl Write,
    header: &Header<'_>,
    extents: impl Iterator<Item = anyhow::Result<Extent>>,
) -> anyhow::Result<()> {
    writeln!(
        out,
        "{:>16}  {:>16}  {:>10}  {:<9}  FLAGS",
        "OFFSET", "END", "LENGTH", "KIND"
    )?;
    let mut totals = Totals::default();
    let mut line = Vec::with_capacity(128);
    for e in extents {
        let e = e?;
        totals.add(&e);
        // One reused line buffer and no core::fmt: formatting dominates
        // the cost of a 200,000-extent table.
        line.clear();
        push_u64(&mut line, e.offset, 16);
        line.extend_from_slice(b"  ");
        push_u64(&mut line, e.end(), 16);
        line.extend_from_slice(b"  ");
        let mut human = [0u8; 24];
        push_right(&mut line, human_bytes(e.length, &mut human), 10);
        line.extend_from_slice(b"  ");
        let kind = e.kind.as_str().as_bytes();
        line.extend_from_slice(kind);
        // Pad the kind only when flags follow: no trailing blanks.
        for (i, name) in e.flags.names().enumerate() {
            if i == 0 {
                line.extend(std::iter::repeat_n(b' ', 9 - kind.len() + 2));
            } else {
                line.push(b',');
            }
            line.extend_from_slice(name.as_bytes());
        }
        line.push(b'\n');
        out.write_all(&line)?;
    }
    let mut summary = format!(
        "{}: {} extents, {} data, {} hole",
        header.file,
        totals.extents,
        human_size(totals.data),
        human_size(totals.hole),
    );
    if totals.unwritten > 0 {
        summary += &format!(", {} unwritten", human_size(totals.unwritten));
    }
    summary += &format!(
        ", size {}, method {}",
        human_size(header.size),
        header.method
    );
    writeln!(out, "{summary}")?;
    Ok(())
}

/// Streams the JSON document of DESIGN.md. Unwritten extents read as zeros,
/// so they count towards `hole_bytes`.
fn write_json(
    out: &mut impl Write,
    header: &Header<'_>,
    extents: impl Iterator<Item = anyhow::Result<Extent>>,
) -> anyhow::Result<()> {
    write!(
        out,
        "{{\"file\":{},\"size\":{},\"method\":{},\"fallbacks\":{},\"extents\":[",
        serde_json::to_string(header.file)?,
        header.size,
        serde_json::to_string(header.method.as_str())?,
        serde_json::Value::from_iter(header.fallbacks.iter().map(crate::fallback::record))
    )?;
    let mut totals = Totals::default();
    for (i, e) in extents.enumerate() {
        let e = e?;
        totals.add(&e);
        if i > 0 {
            out.write_all(b",")?;
        }
        // Keys in the documented order; names are plain ASCII, no escaping needed.
        write!(
            out,
            "{{\"offset\":{},\"length\":{},\"kind\":\"{}\",\"flags\":[",
            e.offset,
            e.length,
            e.kind.as_str()
        )?;
        for (j, name) in e.flags.names().enumerate() {
            if j > 0 {
                out.write_all(b",")?;
            }
            write!(out, "\"{name}\"")?;
        }
        out.write_all(b"]}")?;
    }
    writeln!(
        out,
        "],\"data_bytes\":{},\"hole_bytes\":{}}}",
        totals.data,
        totals.hole + totals.unwritten
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sparsekit_extents::ExtentFlags;

    fn layout() -> Vec<Extent> {
        let mut shared = Extent::new(0..65536, ExtentKind::Data);
        shared.flags = ExtentFlags::SHARED;
        let mut last = Extent::new((5 << 20)..(5 << 20) + 1000, ExtentKind::Data);
        last.flags = ExtentFlags::LAST | ExtentFlags::NOT_ALIGNED | ExtentFlags::INLINE;
        vec![
            shared,
            Extent::new(65536..(1 << 20), ExtentKind::Hole),
            Extent::new((1 << 20)..(4 << 20), ExtentKind::Unwritten),
            Extent::new((4 << 20)..(5 << 20), ExtentKind::Hole),
            last,
        ]
    }

    fn render(json: bool, extents: Vec<Extent>) -> String {
        let header = Header {
            file: "disk.img",
            size: extents.last().map_or(0, |e| e.end()),
            method: Method::Fiemap,
            fallbacks: vec![],
        };
        let mut out = Vec::new();
        let it = extents.into_iter().map(Ok);
        if json {
            write_json(&mut out, &header, it).unwrap();
        } else {
            write_table(&mut out, &header, it).unwrap();
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn table_output() {
        insta::assert_snapshot!(render(false, layout()));
    }

    #[test]
    fn json_output() {
        let text = render(true, layout());
        // The streamed text must be one valid JSON document.
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        insta::assert_json_snapshot!(value);
    }

    #[test]
    fn json_lists_the_fallbacks() {
        // tmpfs: FIEMAP refused, SEEK_DATA answers.
        let header = Header {
            file: "disk.img",
            size: 0,
            method: Method::Seek,
            fallbacks: vec![Fallback::new(Method::Fiemap, rustix::io::Errno::OPNOTSUPP)],
        };
        let mut out = Vec::new();
        write_json(&mut out, &header, std::iter::empty()).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        insta::assert_json_snapshot!(value["fallbacks"], @r#"
        [
          {
            "errno": "EOPNOTSUPP",
            "strategy": "fiemap"
          }
        ]
        "#);
    }

    #[test]
    fn empty_file_outputs() {
        insta::assert_snapshot!(render(false, vec![]));
        let value: serde_json::Value = serde_json::from_str(&render(true, vec![])).unwrap();
        assert_eq!(value["extents"], serde_json::json!([]));
        assert_eq!(value["data_bytes"], 0);
    }

    #[test]
    fn an_error_mid_map_stops_the_output_with_the_path() {
        let header = Header {
            file: "disk.img",
            size: 8192,
            method: Method::Seek,
            fallbacks: vec![],
        };
        let items = vec![
            Ok(Extent::new(0..4096, ExtentKind::Data)),
            Err(anyhow::anyhow!(
                "disk.img: lseek(SEEK_HOLE) at offset 4096: EIO"
            )),
        ];
        let mut out = Vec::new();
        let err = write_table(&mut out, &header, items.into_iter()).unwrap_err();
        assert!(err.to_string().contains("disk.img"));
    }
}
