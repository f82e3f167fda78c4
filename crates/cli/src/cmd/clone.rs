//! `sparsekit clone SRC DST [--src-offset SIZE --dst-offset SIZE --length SIZE]`
//! and `sparsekit dedupe SRC DST --src-offset SIZE --dst-offset SIZE --length SIZE`.
//!
//! Both share extents or fail: nothing is ever copied. Where the filesystem
//! cannot share, the message names the filesystem and the errno, e.g.
//! `reflink not supported on ext4 (EOPNOTSUPP)`, and the exit code is 1.
//! Mistakes in the request (a directory, a range past the end, an unaligned
//! offset, overlapping ranges) exit 2 with nothing touched.

use crate::exit::UsageError;
use crate::human::{check_range, human_size, parse_size};
use crate::input::{Accept, check, open_checked};
use crate::output::print_report;
use crate::watchdog::{OnStall, TimeoutArg, Watchdog};
use rustix::io::Errno;
use sparsekit_clone::{
    CloneError, DedupeStatus, DedupeTarget, DestinationChange, FsType, PathClone, PathCloneError,
};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub(crate) struct CloneArgs {
    /// The file to clone.
    src: PathBuf,
    /// The destination. Without a range it is created, or replaced
    /// atomically if it exists; with a range it is changed in place (created
    /// if missing). A failed clone leaves no new file behind.
    dst: PathBuf,
    /// Clone a range starting here in SRC (block-aligned; default 0).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    src_offset: Option<u64>,
    /// Where the range goes in DST (block-aligned; default 0).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    dst_offset: Option<u64>,
    /// Length of the range (block-aligned unless it ends at SRC's end;
    /// default: up to SRC's end).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    length: Option<u64>,
    /// Print JSON: {"operation","source","destination","strategy","src_offset",
    /// "dst_offset","bytes","destination_change","filesystem","shared_bytes",
    /// "exclusive_bytes","fallbacks":[]}.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    timeout: TimeoutArg,
}

#[derive(Debug, clap::Args)]
pub(crate) struct DedupeArgs {
    /// The file whose extents are shared.
    src: PathBuf,
    /// The file whose equal range is made to share them (may be open
    /// read-only: the kernel allows it for the owner and for writers).
    dst: PathBuf,
    /// Start of the range in SRC (block-aligned).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    src_offset: u64,
    /// Start of the range in DST (block-aligned).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    dst_offset: u64,
    /// Length of the range (block-aligned unless it ends at both files' ends).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    length: u64,
    /// Print JSON: {"operation","source","destination","strategy","src_offset",
    /// "dst_offset","length","status":"same"|"differs","bytes_deduped","calls",
    /// "differs_from","differs_to","fallbacks":[]} (differs: exit 1).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    timeout: TimeoutArg,
}

pub(crate) fn run_clone(args: CloneArgs) -> anyhow::Result<ExitCode> {
    let ranged = args.src_offset.is_some() || args.dst_offset.is_some() || args.length.is_some();
    let src_offset = args.src_offset.unwrap_or(0);
    let dst_offset = args.dst_offset.unwrap_or(0);
    let (src_path, dst_path) = (display(&args.src), display(&args.dst));
    check_ranges(
        &src_path,
        &dst_path,
        src_offset,
        dst_offset,
        args.length,
        "omit --length to clone to the end",
    )?;
    let watchdog = Watchdog::start(
        args.timeout.timeout,
        format!("{src_path} -> {dst_path}: clone"),
    );
    check(&args.src, "clone", Accept::Regular)?;
    // A missing destination is made by the clone; an existing one must be
    // a regular file (opening a fifo would block).
    if std::fs::symlink_metadata(&args.dst).is_ok() && args.dst.exists() {
        check(&args.dst, "clone", Accept::Regular)?;
    }
    watchdog.on_stall(clone_stall(&args.dst, ranged));
    let result = if ranged {
        sparsekit_clone::clone_range_to_path(
            &args.src,
            src_offset,
            &args.dst,
            dst_offset,
            args.length,
        )
    } else {
        sparsekit_clone::clone_file_to_path(&args.src, &args.dst)
    };
    let done = result.map_err(|e| path_error(e, "reflink"))?;
    if args.json {
        let req = super::clone_json::CloneRequest {
            src: &args.src,
            dst: &args.dst,
            ranged,
            src_offset,
            dst_offset,
        };
        // FIEMAP of the destination can hang on a dead mount like the
        // clone itself: still under the watchdog.
        let sharing = sharing_of(&args.dst, dst_offset, &done);
        watchdog.finish();
        let done_line = clone_summary(&args.src, &args.dst, dst_offset, &done);
        let done = super::clone_json::CloneDone::new(&done, sharing.as_ref());
        let doc = super::clone_json::clone_document(&req, &done);
        print_report(&doc.to_string(), Some(&done_line))?;
        return Ok(ExitCode::SUCCESS);
    }
    watchdog.finish();
    let line = clone_summary(&args.src, &args.dst, dst_offset, &done);
    print_report(&line, Some(&line))?;
    Ok(ExitCode::SUCCESS)
}

/// What FIEMAP sees in the destination range after a clone, if it can tell.
fn sharing_of(dst: &Path, dst_offset: u64, done: &PathClone) -> Option<sparsekit_clone::Sharing> {
    let f = File::open(dst).ok()?;
    sparsekit_clone::sharing(&f, dst_offset..dst_offset.saturating_add(done.bytes)).ok()
}

/// Refuses `--length 0` (the kernel reads it as "to the end of the
/// source", so it would clone more than was asked) and ranges whose end
/// passes the largest file offset; both before anything is opened.
fn check_ranges(
    src: &str,
    dst: &str,
    src_offset: u64,
    dst_offset: u64,
    length: Option<u64>,
    to_the_end: &str,
) -> anyhow::Result<()> {
    if length == Some(0) {
        return Err(UsageError(format!(
            "{src} -> {dst}: --length 0 is refused (the kernel would take it as \"to the end of the source\"); {to_the_end}"
        ))
        .into());
    }
    let length = length.unwrap_or(0);
    check_range(src, src_offset, length).map_err(UsageError)?;
    check_range(dst, dst_offset, length).map_err(UsageError)?;
    Ok(())
}

/// What a clone stuck in the kernel leaves.
fn clone_stall(dst: &Path, ranged: bool) -> OnStall {
    let existed = std::fs::symlink_metadata(dst).is_ok();
    let note = match (existed, ranged) {
        (true, true) => format!(
            "{}: the range may be partly cloned (its data is then the source's)",
            dst.display()
        ),
        (true, false) => format!(
            "{} is unchanged until the clone completes; a temporary *.sparsekit-tmp file may be left beside it",
            dst.display()
        ),
        (false, _) => {
            let (path, started) = (dst.to_owned(), std::time::SystemTime::now());
            let if_stuck = format!("{} may be left, incomplete: remove it", dst.display());
            return OnStall {
                note: format!("nothing left at {}", dst.display()),
                soft_stop: None,
                cleanup: Some((Box::new(move || remove_created(&path, started)), if_stuck)),
            };
        }
    };
    OnStall {
        note,
        ..OnStall::default()
    }
}

/// Removes a destination this clone created (it did not exist when the
/// clone started; the clone creates it with `O_EXCL`): only a regular file
/// of ours whose inode changed after `started`, so a file someone else made
/// since is never touched. Returns what is left.
fn remove_created(path: &Path, started: std::time::SystemTime) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).ok()?; // nothing was created
    let changed = std::time::UNIX_EPOCH
        + std::time::Duration::new(meta.ctime().max(0) as u64, meta.ctime_nsec() as u32);
    // One second of slack for filesystems with coarse timestamps.
    let ours = meta.file_type().is_file()
        && meta.uid() == rustix::process::geteuid().as_raw()
        && changed + std::time::Duration::from_secs(1) >= started;
    if !ours {
        return Some(format!(
            "{} exists and was not made by this clone: left as it is",
            path.display()
        ));
    }
    match std::fs::remove_file(path) {
        Ok(()) => None,
        Err(e) => Some(format!(
            "{} may be incomplete: {}",
            path.display(),
            crate::exit::io_error(&path.display().to_string(), "unlink", &e)
        )),
    }
}

/// `a.img -> b.img: cloned 8.0 GiB (new file on xfs); 812.0 MiB of data now shared`
fn clone_summary(src: &Path, dst: &Path, dst_offset: u64, done: &PathClone) -> String {
    let change = match done.destination {
        DestinationChange::Created => "new file",
        DestinationChange::Replaced => "replaced",
        DestinationChange::Modified => "in place",
        _ => "done",
    };
    let mut line = format!(
        "{} -> {}: cloned {} ({change} on {})",
        src.display(),
        dst.display(),
        human_size(done.bytes),
        done.filesystem
    );
    // Say what FIEMAP sees, so the claim is checked, not assumed. Holes
    // are never shared, so this is the data part of the range.
    if let Ok(f) = File::open(dst) {
        let range = dst_offset..dst_offset.saturating_add(done.bytes);
        if let Ok(s) = sparsekit_clone::sharing(&f, range) {
            line += &format!("; {} of data now shared", human_size(s.shared));
            if s.exclusive > 0 {
                line += &format!(", {} not shared", human_size(s.exclusive));
            }
        }
    }
    line
}

pub(crate) fn run_dedupe(args: DedupeArgs) -> anyhow::Result<ExitCode> {
    let (src_path, dst_path) = (display(&args.src), display(&args.dst));
    check_ranges(
        &src_path,
        &dst_path,
        args.src_offset,
        args.dst_offset,
        Some(args.length),
        "give the length of the range to dedupe",
    )?;
    let watchdog = Watchdog::start(
        args.timeout.timeout,
        format!("{src_path} -> {dst_path}: dedupe"),
    );
    let src = open_checked(&args.src, "dedupe", Accept::Regular, false)?;
    let dst = open_checked(&args.dst, "dedupe", Accept::Regular, false)?;
    watchdog.watch_cache(&src);
    watchdog.watch_cache(&dst);
    watchdog.on_stall(OnStall {
        note: "no data was changed (dedupe only shares ranges the kernel found equal)".into(),
        ..OnStall::default()
    });
    let fs_of = |f: &File| FsType::of(f).unwrap_or(FsType(0));
    let (src_fs, dst_fs) = (fs_of(&src), fs_of(&dst));
    let results = sparsekit_clone::dedupe_range(
        &src,
        args.src_offset,
        args.length,
        &[DedupeTarget::new(&dst, args.dst_offset)],
    )
    .map_err(|e| clone_error(&src_path, &dst_path, src_fs, dst_fs, &e, "dedupe"))?;
    watchdog.finish();
    let r = &results[0];
    if args.json {
        let differs = match &r.status {
            DedupeStatus::Differs {
                differs_from,
                differs_to,
            } => Some((*differs_from, *differs_to)),
            _ => None,
        };
        if matches!(r.status, DedupeStatus::Same | DedupeStatus::Differs { .. }) {
            let facts = super::clone_json::DedupeFacts {
                src: &src_path,
                dst: &dst_path,
                src_offset: args.src_offset,
                dst_offset: args.dst_offset,
                length: args.length,
                bytes_deduped: r.bytes_deduped,
                calls: r.calls,
                differs,
            };
            let doc = super::clone_json::dedupe_document(&facts).to_string();
            let done = format!(
                "{src_path} -> {dst_path}: deduped {}",
                human_size(r.bytes_deduped)
            );
            print_report(&doc, Some(&done))?;
            if differs.is_none() {
                return Ok(ExitCode::SUCCESS);
            }
        }
        // Differs and failures still exit 1 with the message below.
    }
    match &r.status {
        DedupeStatus::Same => {
            let line = format!(
                "{src_path} at {} -> {dst_path} at {}: deduped {} ({} call{})",
                args.src_offset,
                args.dst_offset,
                human_size(r.bytes_deduped),
                r.calls,
                if r.calls == 1 { "" } else { "s" }
            );
            print_report(&line, Some(&line))?;
            Ok(ExitCode::SUCCESS)
        }
        DedupeStatus::Differs {
            differs_from,
            differs_to,
        } => {
            let done = if r.bytes_deduped == 0 {
                "nothing changed".to_owned()
            } else {
                format!(
                    "the {} before it is now shared, nothing changed from there",
                    human_size(r.bytes_deduped)
                )
            };
            Err(anyhow::anyhow!(
                "{dst_path}: data differ from {src_path} within offsets {differs_from}..{differs_to}: {done}"
            ))
        }
        DedupeStatus::Failed(e) => {
            let err = clone_error(&src_path, &dst_path, src_fs, dst_fs, e, "dedupe");
            if r.bytes_deduped > 0 {
                Err(err.context(format!(
                    "{} deduped before the failure",
                    human_size(r.bytes_deduped)
                )))
            } else {
                Err(err)
            }
        }
        _ => Err(anyhow::anyhow!(
            "{dst_path}: dedupe ended in an unknown state"
        )),
    }
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

fn path_error(e: PathCloneError, verb: &str) -> anyhow::Error {
    match e {
        PathCloneError::Clone {
            src,
            dst,
            src_fs,
            dst_fs,
            error,
        } => clone_error(&display(&src), &display(&dst), src_fs, dst_fs, &error, verb),
        PathCloneError::NotRegular { .. } => UsageError(e.to_string()).into(),
        e => anyhow::anyhow!("{e}"),
    }
}

/// Maps a library error to the message and exit code users see.
fn clone_error(
    src: &str,
    dst: &str,
    src_fs: FsType,
    dst_fs: FsType,
    e: &CloneError,
    verb: &str,
) -> anyhow::Error {
    let errno_symbol = |errno: Errno| sparsekit_sys::ErrnoName(errno).symbolic();
    match e {
        CloneError::Unsupported { errno } if *errno == Errno::XDEV => anyhow::anyhow!(
            "{src} -> {dst}: cannot share extents across mounts ({src} is on {src_fs}, {dst} on {dst_fs}) ({})",
            errno_symbol(*errno)
        ),
        CloneError::Unsupported { errno } => anyhow::anyhow!(
            "{src} -> {dst}: {verb} not supported on {dst_fs} ({})",
            errno_symbol(*errno)
        ),
        // Each of these was found before any change: the request was wrong.
        CloneError::NotRegular { side, .. }
        | CloneError::AccessMode { side, .. }
        | CloneError::PastEof { side, .. }
        | CloneError::Misaligned { side, .. } => {
            let file = match side {
                sparsekit_clone::Side::Source => src,
                _ => dst,
            };
            UsageError(format!("{file}: {e}")).into()
        }
        CloneError::SameFile | CloneError::Overlap { .. } => {
            UsageError(format!("{src} -> {dst}: {e}")).into()
        }
        e => anyhow::anyhow!("{src} -> {dst}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sparsekit_clone::Side;

    fn ext4() -> FsType {
        FsType(0xEF53)
    }

    fn xfs() -> FsType {
        FsType(0x5846_5342)
    }

    #[test]
    fn a_stalled_clone_removes_only_the_file_it_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.img");
        let before = std::time::SystemTime::now();
        std::fs::write(&path, b"partial").unwrap();
        assert_eq!(remove_created(&path, before), None);
        assert!(!path.exists());
        assert_eq!(remove_created(&path, before), None, "nothing to remove");
        // A file that was there long before is not ours.
        std::fs::write(&path, b"someone's").unwrap();
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
        let left = remove_created(&path, later).unwrap();
        assert!(left.contains("not made by this clone"), "{left}");
        assert!(path.exists());
    }

    #[test]
    fn unsupported_names_the_filesystem_and_errno() {
        let e = CloneError::Unsupported {
            errno: Errno::OPNOTSUPP,
        };
        let err = clone_error("a.img", "b.img", ext4(), ext4(), &e, "reflink");
        assert_eq!(
            err.to_string(),
            "a.img -> b.img: reflink not supported on ext4 (EOPNOTSUPP)"
        );
        assert!(err.downcast_ref::<UsageError>().is_none(), "exit 1, not 2");
    }

    #[test]
    fn cross_mount_names_both_filesystems() {
        let e = CloneError::Unsupported { errno: Errno::XDEV };
        let err = clone_error("a", "b", ext4(), xfs(), &e, "reflink");
        assert_eq!(
            err.to_string(),
            "a -> b: cannot share extents across mounts (a is on ext4, b on xfs) (EXDEV)"
        );
    }

    #[test]
    fn request_mistakes_are_usage_errors_naming_the_file() {
        let e = CloneError::Misaligned {
            side: Side::Destination,
            what: "offset",
            value: 100,
            alignment: 4096,
        };
        let err = clone_error("a", "b", xfs(), xfs(), &e, "reflink");
        assert!(err.downcast_ref::<UsageError>().is_some());
        assert_eq!(
            err.to_string(),
            "b: destination offset 100 is not a multiple of the filesystem block size 4096"
        );
        let e = CloneError::Overlap {
            src_offset: 0,
            dst_offset: 4096,
            length: 8192,
        };
        let err = clone_error("a", "a", xfs(), xfs(), &e, "reflink");
        assert!(err.downcast_ref::<UsageError>().is_some());
        assert!(err.to_string().contains("overlap"), "{err}");
    }

    #[test]
    fn other_failures_keep_the_errno_and_exit_1() {
        let e = CloneError::Os {
            op: "FICLONE",
            errno: Errno::TXTBSY,
        };
        let err = clone_error("a", "b", xfs(), xfs(), &e, "reflink");
        assert!(err.downcast_ref::<UsageError>().is_none());
        assert!(err.to_string().contains("FICLONE: ETXTBSY"), "{err}");
    }
}
