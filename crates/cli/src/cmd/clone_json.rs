//! The `--json` documents of `clone` and `dedupe`, as pure functions of
//! what the library reported (so they are pinned by snapshots).
//!
//! Shared with every other `--json` document: `strategy` (the kernel
//! interface used) and `fallbacks` (records of [`crate::fallback`]).
//! clone and dedupe never fall back — they share extents or fail — so
//! `fallbacks` is always empty here; it is present so that one reader
//! handles every command.
//!
//! clone: `{"operation":"clone","source","destination","strategy":"ficlone"|"ficlonerange",
//! "src_offset","dst_offset","bytes","destination_change":"created"|"replaced"|"modified",
//! "filesystem","shared_bytes","exclusive_bytes","fallbacks":[]}` (`shared_bytes` and
//! `exclusive_bytes`: what FIEMAP sees in the destination range afterwards; null if it
//! cannot tell).
//!
//! dedupe: `{"operation":"dedupe","source","destination","strategy":"fideduperange",
//! "src_offset","dst_offset","length","status":"same"|"differs","bytes_deduped","calls",
//! "differs_from","differs_to","fallbacks":[]}` (`differs_*`: the first differing range,
//! null when the data were the same; a `differs` document comes with exit 1).

use serde_json::{Value, json};
use sparsekit_clone::{DestinationChange, PathClone, Sharing};

/// What a clone did, as [`PathClone`] and [`Sharing`] report it (plain
/// values: those library types cannot be built outside their crate).
#[derive(Debug, Clone)]
pub(crate) struct CloneDone {
    pub(crate) bytes: u64,
    pub(crate) destination: DestinationChange,
    pub(crate) filesystem: String,
    /// `(shared, exclusive)` bytes FIEMAP sees in the destination range.
    pub(crate) sharing: Option<(u64, u64)>,
}

impl CloneDone {
    pub(crate) fn new(done: &PathClone, sharing: Option<&Sharing>) -> Self {
        CloneDone {
            bytes: done.bytes,
            destination: done.destination,
            filesystem: done.filesystem.to_string(),
            sharing: sharing.map(|s| (s.shared, s.exclusive)),
        }
    }
}
use std::path::Path;

/// A clone's facts that are not in [`PathClone`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct CloneRequest<'a> {
    pub(crate) src: &'a Path,
    pub(crate) dst: &'a Path,
    /// Whether a range was asked for (FICLONERANGE) or the whole file (FICLONE).
    pub(crate) ranged: bool,
    pub(crate) src_offset: u64,
    pub(crate) dst_offset: u64,
}

pub(crate) fn clone_document(req: &CloneRequest<'_>, done: &CloneDone) -> Value {
    let change = match done.destination {
        DestinationChange::Created => "created",
        DestinationChange::Replaced => "replaced",
        DestinationChange::Modified => "modified",
        _ => "changed",
    };
    json!({
        "operation": "clone",
        "source": req.src.display().to_string(),
        "destination": req.dst.display().to_string(),
        "strategy": if req.ranged { "ficlonerange" } else { "ficlone" },
        "src_offset": req.src_offset,
        "dst_offset": req.dst_offset,
        "bytes": done.bytes,
        "destination_change": change,
        "filesystem": done.filesystem,
        "shared_bytes": done.sharing.map(|s| s.0),
        "exclusive_bytes": done.sharing.map(|s| s.1),
        "fallbacks": [],
    })
}

/// A dedupe's request and outcome.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DedupeFacts<'a> {
    pub(crate) src: &'a str,
    pub(crate) dst: &'a str,
    pub(crate) src_offset: u64,
    pub(crate) dst_offset: u64,
    pub(crate) length: u64,
    pub(crate) bytes_deduped: u64,
    pub(crate) calls: u32,
    /// `Some((from, to))` when the data differ.
    pub(crate) differs: Option<(u64, u64)>,
}

pub(crate) fn dedupe_document(f: &DedupeFacts<'_>) -> Value {
    json!({
        "operation": "dedupe",
        "source": f.src,
        "destination": f.dst,
        "strategy": "fideduperange",
        "src_offset": f.src_offset,
        "dst_offset": f.dst_offset,
        "length": f.length,
        "status": if f.differs.is_some() { "differs" } else { "same" },
        "bytes_deduped": f.bytes_deduped,
        "calls": f.calls,
        "differs_from": f.differs.map(|d| d.0),
        "differs_to": f.differs.map(|d| d.1),
        "fallbacks": [],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_documents() {
        let req = CloneRequest {
            src: Path::new("a.img"),
            dst: Path::new("b \"img\""),
            ranged: false,
            src_offset: 0,
            dst_offset: 0,
        };
        let done = CloneDone {
            bytes: 8 << 20,
            destination: DestinationChange::Created,
            filesystem: "xfs".into(),
            sharing: Some((4 << 20, 0)),
        };
        insta::assert_json_snapshot!("clone_whole_file", clone_document(&req, &done));
        let ranged = CloneRequest {
            ranged: true,
            src_offset: 4096,
            dst_offset: 8192,
            ..req
        };
        let done = CloneDone {
            destination: DestinationChange::Modified,
            sharing: None,
            ..done
        };
        insta::assert_json_snapshot!(
            "clone_range_unknown_sharing",
            clone_document(&ranged, &done)
        );
    }

    #[test]
    fn dedupe_documents() {
        let same = DedupeFacts {
            src: "a",
            dst: "b",
            src_offset: 0,
            dst_offset: 65536,
            length: 1 << 20,
            bytes_deduped: 1 << 20,
            calls: 1,
            differs: None,
        };
        insta::assert_json_snapshot!("dedupe_same", dedupe_document(&same));
        let differs = DedupeFacts {
            bytes_deduped: 0,
            differs: Some((0, 4096)),
            ..same
        };
        insta::assert_json_snapshot!("dedupe_differs", dedupe_document(&differs));
    }
}
