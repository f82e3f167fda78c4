//! `verify`: after the copy (and its fsync), the destination is read back
//! from the device and compared with the source, before a staged
//! destination gets its name.

use crate::compare::{CompareOptions, compare_files};
use crate::engine::{self, Target};
use crate::error::{CopyError, VerifyLeft};
use crate::modes::{CachePolicy, Staging};
use crate::options::CopyOptions;
use crate::report::{CopyReport, DestinationKind, Fallback};
use std::fs::File;
use std::path::Path;

/// [`engine::copy`], then, with `opts.verify`, the read-back comparison.
/// `existed`: a staged destination replaces an existing file.
pub(crate) fn copy(
    opts: &CopyOptions,
    src: &File,
    src_path: &Path,
    target: Target<'_>,
    fallbacks: Vec<Fallback>,
    existed: bool,
) -> Result<CopyReport, CopyError> {
    let (file, path, kind, staging) = (target.file, target.path, target.kind, target.staging);
    let mut report = engine::copy(opts, src, src_path, target, fallbacks)?;
    if !opts.verify {
        return Ok(report);
    }
    let left = match (staging, kind) {
        (Staging::InPlace, DestinationKind::BlockDevice) => VerifyLeft::HeaderZeroed,
        // A new file made in place is removed by the caller on failure.
        (Staging::InPlace, DestinationKind::NewFile) if !existed => VerifyLeft::NotCreated,
        (Staging::InPlace, _) => VerifyLeft::Truncated,
        _ if existed => VerifyLeft::Unchanged,
        _ => VerifyLeft::NotCreated,
    };
    let size = report.size;
    let fail = |e: CopyError| -> Result<CopyReport, CopyError> {
        if staging == Staging::InPlace {
            let target = Target {
                file,
                path,
                kind,
                staging,
            };
            engine::cleanup_in_place(&target, size);
        }
        Err(e)
    };
    #[cfg(any(test, feature = "fault-injection"))]
    crate::fault::corrupt(rustix::fd::AsFd::as_fd(file));
    if !opts.sync {
        // Read back what the device holds, not dirty pages.
        if let Err(errno) = rustix::fs::fdatasync(file) {
            return fail(CopyError::Io {
                path: path.to_owned(),
                op: "fdatasync",
                offset: None,
                errno,
            });
        }
    }
    let mut cmp = CompareOptions::new();
    // The source side reads as the copy did; the destination always with
    // the Auto chain (O_DIRECT first) after its pages are dropped.
    cmp.cache = opts.cache;
    cmp.cache_b = Some(CachePolicy::Auto);
    cmp.fresh_b = true;
    let cmp = match &opts.interrupt {
        Some(i) => cmp.interrupt(i.clone()),
        None => cmp,
    };
    // A block device is usually larger than the image written to it: the
    // copy is its first `size` bytes, and what lies beyond is not the copy's
    // (and must not turn a good copy into a failed one that zeroes the
    // device's header).
    let verified = |r: &crate::compare::CompareReport| match kind {
        DestinationKind::BlockDevice => r.content_equal && r.b.size >= r.a.size,
        _ => r.equal(),
    };
    match compare_files(&cmp, src, src_path, file, path) {
        Ok(r) if verified(&r) => {
            report.elapsed += r.elapsed;
            report.verified = Some(r);
            Ok(report)
        }
        Ok(r) => fail(CopyError::VerifyMismatch {
            src: src_path.to_owned(),
            dst: path.to_owned(),
            offset: r.first_difference.unwrap_or(0),
            left,
        }),
        Err(crate::compare::CompareError::Interrupted { .. }) => fail(CopyError::Interrupted {
            path: path.to_owned(),
        }),
        Err(source) => fail(CopyError::Verify {
            dst: path.to_owned(),
            source,
            left,
        }),
    }
}
