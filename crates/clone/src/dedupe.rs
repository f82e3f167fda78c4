//! `FIDEDUPERANGE` with per-destination results, split into calls the
//! kernel accepts.

use crate::check::{self, Access, FileInfo, RangeKind, RangeRequest};
use crate::error::{CloneError, Side};
use rustix::fd::{AsFd, BorrowedFd};
use sparsekit_sys::remap::{self, DEDUPE_MAX_DESTINATIONS, DedupeInfo};

/// The most bytes one `FIDEDUPERANGE` call compares: the kernel silently
/// caps each request at 1 GiB (`vfs_dedupe_file_range()`, "arbitrary 1G
/// limit"), and a filesystem may shorten it further.
pub const DEDUPE_MAX_CALL_LEN: u64 = 1 << 30;

/// One destination of [`dedupe_range`]: a file and the offset in it where
/// the range to compare with the source starts.
#[derive(Clone, Copy, Debug)]
pub struct DedupeTarget<'fd> {
    /// The destination file. It may be open read-only when the caller owns
    /// it or may write it (the kernel's rule); `O_PATH` is refused.
    pub fd: BorrowedFd<'fd>,
    /// Where the compared range starts in the destination.
    pub offset: u64,
}

impl<'fd> DedupeTarget<'fd> {
    /// The range of `fd` starting at `offset`.
    pub fn new<Fd: AsFd>(fd: &'fd Fd, offset: u64) -> Self {
        Self {
            fd: fd.as_fd(),
            offset,
        }
    }
}

/// How one destination of a dedupe ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum DedupeStatus {
    /// The whole range was equal and is now shared.
    Same,
    /// The data differ within the destination range `differs_from..differs_to`
    /// (the chunk the kernel compared); everything before it was equal and
    /// is shared, nothing from it on was changed.
    Differs {
        /// Start of the differing chunk, in the destination.
        differs_from: u64,
        /// End of that chunk, in the destination.
        differs_to: u64,
    },
    /// This destination failed (the others may have succeeded): a check
    /// before the call, or the errno the kernel put in its status.
    Failed(CloneError),
}

/// The result for one destination of [`dedupe_range`].
#[derive(Debug)]
#[non_exhaustive]
pub struct DedupeResult {
    /// Bytes now shared with the source, counted from the start of the range.
    pub bytes_deduped: u64,
    /// Same, differs, or failed.
    pub status: DedupeStatus,
    /// How many `FIDEDUPERANGE` calls covered this destination.
    pub calls: u32,
}

impl DedupeResult {
    /// Whether the whole range is now shared.
    pub fn is_same(&self) -> bool {
        matches!(self.status, DedupeStatus::Same)
    }
}

/// Tuning for [`dedupe_range_with`]. The defaults are the kernel's limits;
/// smaller values force more, shorter calls (the bench uses this to prove
/// that progress carries across calls).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DedupeOptions {
    /// Bytes compared per call, rounded down to the block size (at least one
    /// block). Default and maximum: [`DEDUPE_MAX_CALL_LEN`].
    pub chunk: u64,
    /// Destinations per call. Default and maximum: 120 (the kernel copies
    /// them in one allocation; older kernels refuse more than a page).
    pub destinations_per_call: usize,
}

impl Default for DedupeOptions {
    fn default() -> Self {
        Self {
            chunk: DEDUPE_MAX_CALL_LEN,
            destinations_per_call: DEDUPE_MAX_DESTINATIONS,
        }
    }
}

impl DedupeOptions {
    /// Sets [`chunk`](Self::chunk).
    pub fn chunk(mut self, bytes: u64) -> Self {
        self.chunk = bytes;
        self
    }

    /// Sets [`destinations_per_call`](Self::destinations_per_call).
    pub fn destinations_per_call(mut self, n: usize) -> Self {
        self.destinations_per_call = n;
        self
    }
}

/// `ioctl(src, FIDEDUPERANGE, {src_offset, length, destinations})`—Shares
/// `src[src_offset..src_offset+length]` with each destination's range
/// wherever the data are equal, and reports per destination.
///
/// Equivalent to [`dedupe_range_with`] with the default [`DedupeOptions`].
///
/// # References
/// - [`ioctl_fideduperange(2)`](https://man7.org/linux/man-pages/man2/ioctl_fideduperange.2.html)
///   (since Linux 4.5; btrfs `BTRFS_IOC_FILE_EXTENT_SAME` since 3.12)
#[doc(alias = "FIDEDUPERANGE")]
pub fn dedupe_range<S: AsFd>(
    src: S,
    src_offset: u64,
    length: u64,
    destinations: &[DedupeTarget<'_>],
) -> Result<Vec<DedupeResult>, CloneError> {
    dedupe_range_with(
        src,
        src_offset,
        length,
        destinations,
        &DedupeOptions::default(),
    )
}

/// [`dedupe_range`] with explicit [`DedupeOptions`].
///
/// The request is split into chunks of at most `options.chunk` bytes and
/// groups of at most `options.destinations_per_call` destinations. When the
/// kernel shares less than a chunk (it may shorten), the next call goes on
/// from where that destination stopped. A destination whose chunk differs
/// stops there ([`DedupeStatus::Differs`]) and is left unchanged from that
/// chunk on; an error for one destination does not stop the others.
///
/// # Errors
/// The whole call fails for problems with the source (not a regular file,
/// not readable, range past its end, unaligned offset) and for errors the
/// kernel reports for the call as a whole, e.g. [`CloneError::Unsupported`]
/// with `EOPNOTSUPP` on a filesystem without dedupe (ext4, tmpfs).
/// Problems with one destination (range past its end, overlap with the
/// source in the same file, misalignment, `EXDEV`) are that destination's
/// [`DedupeStatus::Failed`].
#[doc(alias = "FIDEDUPERANGE")]
pub fn dedupe_range_with<S: AsFd>(
    src: S,
    src_offset: u64,
    length: u64,
    destinations: &[DedupeTarget<'_>],
    options: &DedupeOptions,
) -> Result<Vec<DedupeResult>, CloneError> {
    let src = src.as_fd();
    let src_info = check::inspect(src, Side::Source, Access::Read)?;
    let block = check::block_size(src)?;
    // Problems with the source fail the whole call.
    check::check_source(&src_info, src_offset, length, block)?;

    let mut states: Vec<State<'_>> = destinations
        .iter()
        .map(|t| {
            let mut state = State {
                fd: t.fd,
                offset: t.offset,
                done: 0,
                calls: 0,
                status: None,
            };
            if let Err(e) = check_destination(t, src_info, src_offset, length, block) {
                state.status = Some(DedupeStatus::Failed(e));
            } else if length == 0 {
                state.status = Some(DedupeStatus::Same);
            }
            state
        })
        .collect();

    let chunk = (options.chunk.min(DEDUPE_MAX_CALL_LEN) / block * block).max(block);
    let per_call = options
        .destinations_per_call
        .clamp(1, DEDUPE_MAX_DESTINATIONS);
    drive(
        &mut states,
        src_offset,
        length,
        chunk,
        per_call,
        |off, len, infos| remap::fideduperange(src, off, len, infos),
    )?;
    Ok(states
        .into_iter()
        .map(|s| DedupeResult {
            bytes_deduped: s.done,
            status: s.status.unwrap_or(DedupeStatus::Same),
            calls: s.calls,
        })
        .collect())
}

/// The dedupe loop, with the ioctl passed in so that tests can play the
/// kernel (shortened results, differences in a later chunk, per-destination
/// errors, a stalled call).
fn drive<F>(
    states: &mut [State<'_>],
    src_offset: u64,
    length: u64,
    chunk: u64,
    per_call: usize,
    mut call: F,
) -> Result<(), CloneError>
where
    F: FnMut(u64, u64, &mut [DedupeInfo]) -> rustix::io::Result<()>,
{
    let mut infos = Vec::with_capacity(per_call);
    // Destinations still going, grouped by progress (the same source
    // range): usually all of them share one position.
    while let Some(done) = states
        .iter()
        .filter(|s| s.status.is_none())
        .map(|s| s.done)
        .min()
    {
        let group: Vec<usize> = states
            .iter()
            .enumerate()
            .filter(|(_, s)| s.status.is_none() && s.done == done)
            .map(|(i, _)| i)
            .take(per_call)
            .collect();
        let call_len = chunk.min(length - done);
        infos.clear();
        infos.extend(
            group
                .iter()
                .map(|&i| DedupeInfo::new(states[i].fd, states[i].offset + done)),
        );
        call(src_offset + done, call_len, &mut infos)
            .map_err(|errno| CloneError::from_errno("FIDEDUPERANGE", errno))?;
        for (&i, info) in group.iter().zip(&infos) {
            let state = &mut states[i];
            state.calls += 1;
            match info.outcome() {
                Ok(true) if info.bytes_deduped == 0 => {
                    state.status = Some(DedupeStatus::Failed(CloneError::NoProgress {
                        src_offset: src_offset + done,
                    }));
                }
                Ok(true) => {
                    state.done += info.bytes_deduped.min(call_len);
                    if state.done >= length {
                        state.status = Some(DedupeStatus::Same);
                    }
                }
                Ok(false) => {
                    let from = state.offset + done;
                    state.status = Some(DedupeStatus::Differs {
                        differs_from: from,
                        differs_to: from + call_len,
                    });
                }
                Err(errno) => {
                    // EBADF: the fd was closed; EPERM: the caller may not
                    // dedupe into that file; EXDEV: another mount.
                    state.status = Some(DedupeStatus::Failed(CloneError::from_errno(
                        "FIDEDUPERANGE",
                        errno,
                    )));
                }
            }
        }
    }
    Ok(())
}

struct State<'fd> {
    fd: BorrowedFd<'fd>,
    offset: u64,
    done: u64,
    calls: u32,
    status: Option<DedupeStatus>,
}

fn check_destination(
    t: &DedupeTarget<'_>,
    src: FileInfo,
    src_offset: u64,
    length: u64,
    block: u64,
) -> Result<(), CloneError> {
    let dst = check::inspect(t.fd, Side::Destination, Access::Any)?;
    check::check_range(&RangeRequest {
        src,
        src_offset,
        dst,
        dst_offset: t.offset,
        length,
        block,
        kind: RangeKind::Dedupe,
    })
}

#[cfg(test)]
mod tests {
    //! The loop against a simulated kernel: real fds (never passed to an
    //! ioctl), scripted answers.
    use super::*;
    use rustix::io::Errno;
    use sparsekit_sys::remap::{FILE_DEDUPE_RANGE_DIFFERS, FILE_DEDUPE_RANGE_SAME};

    const B: u64 = 4096;

    fn states<'a>(files: &'a [std::fs::File], offsets: &[u64]) -> Vec<State<'a>> {
        files
            .iter()
            .zip(offsets)
            .map(|(f, &offset)| State {
                fd: f.as_fd(),
                offset,
                done: 0,
                calls: 0,
                status: None,
            })
            .collect()
    }

    fn files(n: usize) -> Vec<std::fs::File> {
        (0..n).map(|_| tempfile::tempfile().unwrap()).collect()
    }

    #[test]
    fn splits_into_chunks_and_carries_progress() {
        let f = files(2);
        let mut st = states(&f, &[0, 1 << 20]);
        let mut seen = Vec::new();
        drive(&mut st, 8 * B, 10 * B, 4 * B, 120, |off, len, infos| {
            seen.push((off, len, infos.len(), infos[0].dest_offset));
            for i in infos.iter_mut() {
                i.bytes_deduped = len;
                i.status = FILE_DEDUPE_RANGE_SAME;
            }
            Ok(())
        })
        .unwrap();
        // 10 blocks in chunks of 4: 4 + 4 + 2, both destinations per call.
        assert_eq!(
            seen,
            vec![
                (8 * B, 4 * B, 2, 0),
                (12 * B, 4 * B, 2, 4 * B),
                (16 * B, 2 * B, 2, 8 * B)
            ]
        );
        for s in &st {
            assert_eq!(s.done, 10 * B);
            assert_eq!(s.calls, 3);
            assert!(matches!(s.status, Some(DedupeStatus::Same)));
        }
    }

    #[test]
    fn a_shortened_answer_continues_where_it_stopped() {
        let f = files(1);
        let mut st = states(&f, &[0]);
        let mut calls = Vec::new();
        drive(&mut st, 0, 8 * B, 8 * B, 120, |off, len, infos| {
            calls.push((off, len));
            // The filesystem shares at most 3 blocks per call.
            infos[0].bytes_deduped = len.min(3 * B);
            Ok(())
        })
        .unwrap();
        assert_eq!(calls, vec![(0, 8 * B), (3 * B, 5 * B), (6 * B, 2 * B)]);
        assert_eq!(st[0].done, 8 * B);
        assert!(matches!(st[0].status, Some(DedupeStatus::Same)));
    }

    #[test]
    fn a_difference_stops_only_that_destination() {
        let f = files(2);
        let mut st = states(&f, &[0, 1 << 20]);
        let differing_fd = st[1].fd.as_raw_fd_i64();
        drive(&mut st, 0, 8 * B, 2 * B, 120, |off, len, infos| {
            for i in infos.iter_mut() {
                if i.dest_fd() == differing_fd && off >= 4 * B {
                    i.status = FILE_DEDUPE_RANGE_DIFFERS;
                } else {
                    i.bytes_deduped = len;
                }
            }
            Ok(())
        })
        .unwrap();
        assert!(matches!(st[0].status, Some(DedupeStatus::Same)));
        assert_eq!(st[0].done, 8 * B);
        assert_eq!(st[1].done, 4 * B);
        assert_eq!(st[1].calls, 3);
        match &st[1].status {
            Some(DedupeStatus::Differs {
                differs_from,
                differs_to,
            }) => {
                assert_eq!(
                    (*differs_from, *differs_to),
                    ((1 << 20) + 4 * B, (1 << 20) + 6 * B)
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn per_destination_errors_and_stalls_are_reported() {
        let f = files(3);
        let mut st = states(&f, &[0, 1 << 20, 2 << 20]);
        let (xdev, stall) = (st[1].fd.as_raw_fd_i64(), st[2].fd.as_raw_fd_i64());
        drive(&mut st, 0, 4 * B, 4 * B, 120, |_, len, infos| {
            for i in infos.iter_mut() {
                if i.dest_fd() == xdev {
                    i.status = -Errno::XDEV.raw_os_error();
                } else if i.dest_fd() != stall {
                    i.bytes_deduped = len;
                }
            }
            Ok(())
        })
        .unwrap();
        assert!(matches!(st[0].status, Some(DedupeStatus::Same)));
        assert!(matches!(
            st[1].status,
            Some(DedupeStatus::Failed(CloneError::Unsupported {
                errno: Errno::XDEV
            }))
        ));
        assert!(matches!(
            st[2].status,
            Some(DedupeStatus::Failed(CloneError::NoProgress {
                src_offset: 0
            }))
        ));
    }

    #[test]
    fn destinations_are_batched_per_call() {
        let f = files(5);
        let mut st = states(&f, &[0, 1 << 20, 2 << 20, 3 << 20, 4 << 20]);
        let mut sizes = Vec::new();
        drive(&mut st, 0, B, B, 2, |_, len, infos| {
            sizes.push(infos.len());
            for i in infos.iter_mut() {
                i.bytes_deduped = len;
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(sizes, vec![2, 2, 1]);
        assert!(
            st.iter()
                .all(|s| matches!(s.status, Some(DedupeStatus::Same)))
        );
    }

    #[test]
    fn a_whole_call_error_is_returned() {
        let f = files(1);
        let mut st = states(&f, &[0]);
        let e = drive(&mut st, 0, B, B, 120, |_, _, _| Err(Errno::OPNOTSUPP)).unwrap_err();
        assert_eq!(
            e,
            CloneError::Unsupported {
                errno: Errno::OPNOTSUPP
            }
        );
        let mut st = states(&f, &[0]);
        let e = drive(&mut st, 0, B, B, 120, |_, _, _| Err(Errno::NOMEM)).unwrap_err();
        assert!(matches!(
            e,
            CloneError::Os {
                op: "FIDEDUPERANGE",
                errno: Errno::NOMEM
            }
        ));
    }

    trait RawI64 {
        fn as_raw_fd_i64(&self) -> i64;
    }

    impl RawI64 for BorrowedFd<'_> {
        fn as_raw_fd_i64(&self) -> i64 {
            use rustix::fd::AsRawFd;
            i64::from(self.as_raw_fd())
        }
    }
}
