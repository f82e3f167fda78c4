//! The decisions, apart from the trials: what was observed goes in, a
//! [`Cell`] comes out.
//!
//! Every trial reduces what it saw to a [`Trial`]: the kernel call was
//! [`Observation::Refused`] with an errno, or it
//! [`Observation::Worked`] and the checks that followed found
//! [`Shortfall`]s (or none); and, where the op crates have a fallback and
//! the call was refused, how the forced fallback fared. [`classify`] turns
//! that into `native` / `degraded` / `emulated` / `unsupported`. Keeping the
//! rules here, free of syscalls, lets them be tested with injected errnos.
//!
//! The rules:
//! - worked, no shortfall → `native`;
//! - worked with shortfalls → `degraded`, the shortfalls as the reason
//!   (and the first errno a shortfall carries, e.g. `ENXIO`);
//! - refused, and a fallback ran and was verified → `emulated` by it;
//! - refused otherwise → `unsupported` with the errno; when the errno is
//!   not one that means "not supported here" ([`means_unsupported`]), the
//!   reason says the trial failed, so an `EIO` is not mistaken for a
//!   missing feature.

use crate::report::{Cell, Support};
use rustix::io::Errno;
use sparsekit_sys::ErrnoName;

/// What a trial's kernel call did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// The call failed; nothing was done.
    Refused {
        /// The call (`"fallocate(PUNCH_HOLE)"`).
        call: String,
        /// Its errno.
        errno: Errno,
    },
    /// The call succeeded; these checks of its semantics failed (none: all
    /// verified).
    Worked {
        /// The checks that failed.
        shortfalls: Vec<Shortfall>,
    },
}

impl Observation {
    /// A call refused with `errno`.
    pub fn refused(call: impl Into<String>, errno: Errno) -> Self {
        Observation::Refused {
            call: call.into(),
            errno,
        }
    }

    /// A call that worked and passed every check.
    pub fn verified() -> Self {
        Observation::Worked {
            shortfalls: Vec::new(),
        }
    }

    /// A call that worked, with the failed checks.
    pub fn worked(shortfalls: Vec<Shortfall>) -> Self {
        Observation::Worked { shortfalls }
    }
}

/// One semantic check that failed after a successful call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shortfall {
    /// What fell short, as a sentence fragment ("no blocks were freed").
    pub why: String,
    /// An errno seen by the check, if that is how it showed.
    pub errno: Option<Errno>,
}

impl Shortfall {
    /// A shortfall without an errno.
    pub fn new(why: impl Into<String>) -> Self {
        Shortfall {
            why: why.into(),
            errno: None,
        }
    }

    /// A shortfall that showed as an errno.
    pub fn with_errno(why: impl Into<String>, errno: Errno) -> Self {
        Shortfall {
            why: why.into(),
            errno: Some(errno),
        }
    }
}

/// How the op crate's fallback fared when it was forced after the native
/// call was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FallbackOutcome {
    /// It ran and its result was verified.
    Verified {
        /// The fallback, as a reason (`"move_data (sparsekit-punch)"`).
        by: String,
    },
    /// It ran (or could not) and fell short.
    Failed {
        /// The fallback.
        by: String,
        /// What went wrong.
        why: String,
    },
}

/// Everything [`classify`] needs about one capability.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trial {
    /// What the native call did.
    pub observation: Observation,
    /// The fallback's outcome, if one was tried.
    pub fallback: Option<FallbackOutcome>,
    /// How the cell is verified (becomes [`Cell::verified_by`]).
    pub verified_by: String,
    /// Observed values (becomes [`Cell::detail`]).
    pub detail: Option<String>,
}

impl Trial {
    /// A trial with no fallback and no detail.
    pub fn new(observation: Observation, verified_by: impl Into<String>) -> Self {
        Trial {
            observation,
            fallback: None,
            verified_by: verified_by.into(),
            detail: None,
        }
    }

    /// Adds the fallback's outcome.
    pub fn fallback(mut self, outcome: FallbackOutcome) -> Self {
        self.fallback = Some(outcome);
        self
    }

    /// Adds observed values.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// Errnos that mean "this operation is not available here" rather than
/// "it failed": sparsekit's set ([`sparsekit_sys::is_unsupported`]:
/// `EOPNOTSUPP`, `ENOSYS`, `ENOTTY`, `EINVAL`), widened because caps tries
/// every kind of call on a scratch file and classifies rather than falls
/// back: `EXDEV` (remaps and copies across mounts), `ENODEV` (`fallocate`
/// on a file without it), `EBADR` (FIEMAP flags), `EPERM`/`EACCES`
/// (seccomp filters answer so). The op crates widen it less, each at its
/// call site.
pub fn means_unsupported(errno: Errno) -> bool {
    sparsekit_sys::is_unsupported(errno)
        || matches!(
            errno,
            Errno::XDEV | Errno::NODEV | Errno::BADR | Errno::PERM | Errno::ACCESS
        )
}

/// Turns a [`Trial`] into a [`Cell`] by the rules in the module docs.
pub fn classify(trial: Trial) -> Cell {
    let Trial {
        observation,
        fallback,
        verified_by,
        detail,
    } = trial;
    let mut cell = match observation {
        Observation::Worked { shortfalls } if shortfalls.is_empty() => Cell::native(verified_by),
        Observation::Worked { shortfalls } => {
            let why = shortfalls
                .iter()
                .map(|s| s.why.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            let mut cell = Cell::degraded(why, verified_by);
            cell.errno = shortfalls
                .iter()
                .find_map(|s| s.errno)
                .map(|e| ErrnoName(e).symbolic());
            cell
        }
        Observation::Refused { call, errno } => {
            let name = ErrnoName(errno).symbolic();
            match fallback {
                Some(FallbackOutcome::Verified { by }) => Cell::emulated(name, by, verified_by),
                Some(FallbackOutcome::Failed { by, why }) => {
                    Cell::unsupported(name.clone(), verified_by)
                        .with_reason(format!("{call}: {name}; fallback {by} fell short: {why}"))
                }
                None if means_unsupported(errno) => Cell::unsupported(name.clone(), verified_by)
                    .with_reason(format!("{call}: {name}")),
                None => Cell::unsupported(name.clone(), verified_by).with_reason(format!(
                    "trial failed: {call}: {} (not an errno that means unsupported)",
                    ErrnoName(errno)
                )),
            }
        }
    };
    cell.detail = detail;
    cell
}

/// `unsupported` for a capability whose trial needs another one that is
/// missing (fiemap_shared_flag without a working clone, …).
pub fn needs(other: &str, other_cell: &Cell, verified_by: impl Into<String>) -> Cell {
    Cell {
        support: Support::Unsupported,
        errno: other_cell.errno.clone(),
        reason: Some(format!(
            "cannot be tried: {other} is {}",
            other_cell.support
        )),
        detail: None,
        verified_by: verified_by.into(),
    }
}

/// The NFS client's operation counts around a `copy_file_range` trial
/// (`/proc/self/mountstats`, after the destination was written back).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OffloadObservation {
    /// `COPY` operations sent (NFSv4.2 server-side copy).
    pub copy: u64,
    /// `READ` operations sent.
    pub read: u64,
    /// `WRITE` operations sent.
    pub write: u64,
}

/// The `copy_file_range` rule on a network filesystem, where "it copied"
/// is not enough: a native cell stays native only if the copy was offloaded
/// (the server copied: `COPY` operations were sent); a copy the client's
/// kernel made itself, reading and writing every byte over the network
/// (NFSv3, or a v4.2 server without `COPY`), is `degraded`. Cells that are
/// not native, and filesystems without counters (`None`), are unchanged.
pub fn copy_offload(cell: Cell, seen: Option<&OffloadObservation>) -> Cell {
    let Some(seen) = seen else {
        return cell;
    };
    if cell.support != Support::Native {
        return cell;
    }
    let counts = format!(
        "NFS ops during the copy: COPY {}, READ {}, WRITE {}",
        seen.copy, seen.read, seen.write
    );
    let detail = Some(match &cell.detail {
        Some(d) => format!("{d}; {counts}"),
        None => counts,
    });
    let verified_by = format!(
        "{}; per-op counters in /proc/self/mountstats tell a server-side COPY from an in-kernel copy",
        cell.verified_by
    );
    if seen.copy > 0 {
        Cell {
            detail,
            verified_by,
            ..cell
        }
    } else {
        Cell {
            detail,
            ..Cell::degraded(
                "not offloaded: the client's kernel copied the data itself (NFS READ/WRITE, \
                 no server-side COPY), so every byte crosses the network twice",
                verified_by,
            )
        }
    }
}

/// What the `write_lease` trial saw (see [`write_lease`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseObservation {
    /// `F_SETLEASE(F_WRLCK)` while a second descriptor of the file was
    /// open: `Err(EAGAIN)` is right; `Ok` means other openers are not seen.
    /// `None`: not tried (no second descriptor could be opened).
    pub beside_another_open: Option<Result<(), Errno>>,
    /// `F_SETLEASE(F_WRLCK)` on the only descriptor.
    pub acquire: Result<(), Errno>,
    /// A non-blocking `open` while the lease was held: `Err(EWOULDBLOCK)`
    /// is right (the open waits for the lease); `Ok` means it got in.
    pub open_while_held: Result<(), Errno>,
    /// `F_GETLEASE` after that open: the break must show (not `F_WRLCK`).
    pub break_seen: bool,
    /// A non-blocking `open` after the lease was released must succeed.
    pub open_after_release: Result<(), Errno>,
}

/// The `write_lease` rule: what protection `dig` (and any read-then-write
/// in place) gets here.
/// - the lease is refused on a lone descriptor → `unsupported` with the
///   errno (`EINVAL`: no leases, or `leases-enable` 0; `ENOLCK`; `EACCES`:
///   no `CAP_LEASE`); dig then refuses without `--force`;
/// - granted, and every check held (refused beside another open, an open
///   waits and shows as a break, released it lets openers in) → `native`;
/// - granted but a check fell short → `degraded`, naming it: the lease does
///   not keep writers out here.
pub fn write_lease(obs: &LeaseObservation, verified_by: impl Into<String>) -> Cell {
    let verified_by = verified_by.into();
    if let Err(errno) = obs.acquire {
        let name = ErrnoName(errno).symbolic();
        let why = match errno {
            Errno::INVAL | Errno::NOLCK | Errno::OPNOTSUPP | Errno::NOSYS => {
                "no leases on this filesystem (or /proc/sys/fs/leases-enable is 0)"
            }
            Errno::ACCESS | Errno::PERM => "not the owner and no CAP_LEASE",
            // Nothing else had the file open: the filesystem holds back
            // leases itself (the NFSv4 client grants one only under a
            // write delegation from the server).
            Errno::AGAIN => "refused on the only descriptor (NFSv4: no write delegation)",
            _ => "trial failed (not an errno that means unsupported)",
        };
        return Cell::unsupported(name.clone(), verified_by)
            .with_reason(format!("fcntl(F_SETLEASE, F_WRLCK): {name}: {why}"));
    }
    let mut shortfalls = Vec::new();
    match obs.beside_another_open {
        Some(Ok(())) => {
            shortfalls.push(Shortfall::new("granted while another descriptor was open"))
        }
        Some(Err(Errno::AGAIN)) | None => {}
        Some(Err(e)) => shortfalls.push(Shortfall::with_errno(
            format!(
                "beside another descriptor, refused with {} instead of EAGAIN",
                ErrnoName(e).symbolic()
            ),
            e,
        )),
    }
    match obs.open_while_held {
        Ok(()) => shortfalls.push(Shortfall::new(
            "an open while the lease was held got in at once",
        )),
        Err(Errno::WOULDBLOCK) => {}
        Err(e) => shortfalls.push(Shortfall::with_errno(
            format!(
                "an open while the lease was held failed with {} instead of waiting",
                ErrnoName(e).symbolic()
            ),
            e,
        )),
    }
    if !obs.break_seen {
        shortfalls.push(Shortfall::new("F_GETLEASE did not show the break"));
    }
    if let Err(e) = obs.open_after_release {
        shortfalls.push(Shortfall::with_errno(
            format!(
                "after release an open still failed with {}",
                ErrnoName(e).symbolic()
            ),
            e,
        ));
    }
    let detail = match obs.beside_another_open {
        None => Some("not checked: refusal beside another open (no second descriptor)".to_owned()),
        Some(_) => None,
    };
    let mut cell = classify(Trial::new(Observation::worked(shortfalls), verified_by));
    cell.detail = detail;
    cell
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(observation: Observation) -> Trial {
        Trial::new(observation, "test")
    }

    #[test]
    fn verified_call_is_native() {
        let cell = classify(trial(Observation::verified()).detail("freed 8192 bytes"));
        assert_eq!(cell.support, Support::Native);
        assert_eq!(cell.errno, None);
        assert_eq!(cell.reason, None);
        assert_eq!(cell.detail.as_deref(), Some("freed 8192 bytes"));
        assert_eq!(cell.verified_by, "test");
    }

    #[test]
    fn shortfalls_make_it_degraded_with_reasons_joined() {
        let cell = classify(trial(Observation::worked(vec![
            Shortfall::new("no blocks were freed"),
            Shortfall::new("took long"),
        ])));
        assert_eq!(cell.support, Support::Degraded);
        assert_eq!(
            cell.reason.as_deref(),
            Some("no blocks were freed; took long")
        );
        assert_eq!(cell.errno, None);
    }

    #[test]
    fn a_shortfall_errno_is_kept() {
        let cell = classify(trial(Observation::worked(vec![Shortfall::with_errno(
            "SEEK_DATA misses dirty data",
            Errno::NXIO,
        )])));
        assert_eq!(cell.support, Support::Degraded);
        assert_eq!(cell.errno.as_deref(), Some("ENXIO"));
    }

    #[test]
    fn refused_without_fallback_is_unsupported_with_errno() {
        for (errno, name) in [
            (Errno::OPNOTSUPP, "EOPNOTSUPP"),
            (Errno::NOSYS, "ENOSYS"),
            (Errno::NOTTY, "ENOTTY"),
            (Errno::XDEV, "EXDEV"),
            (Errno::INVAL, "EINVAL"),
        ] {
            let cell = classify(trial(Observation::refused("FICLONE", errno)));
            assert_eq!(cell.support, Support::Unsupported, "{name}");
            assert_eq!(cell.errno.as_deref(), Some(name));
            assert_eq!(cell.reason.as_deref(), Some(&*format!("FICLONE: {name}")));
        }
    }

    #[test]
    fn refused_with_a_verified_fallback_is_emulated() {
        let cell = classify(
            trial(Observation::refused(
                "fallocate(COLLAPSE_RANGE)",
                Errno::OPNOTSUPP,
            ))
            .fallback(FallbackOutcome::Verified {
                by: "move_data".into(),
            }),
        );
        assert_eq!(cell.support, Support::Emulated);
        assert_eq!(cell.errno.as_deref(), Some("EOPNOTSUPP"));
        assert_eq!(cell.reason.as_deref(), Some("move_data"));
    }

    #[test]
    fn refused_with_a_failed_fallback_is_unsupported_and_says_why() {
        let cell = classify(
            trial(Observation::refused(
                "pwritev2(RWF_DONTCACHE)",
                Errno::OPNOTSUPP,
            ))
            .fallback(FallbackOutcome::Failed {
                by: "drop".into(),
                why: "4 pages stay cached".into(),
            }),
        );
        assert_eq!(cell.support, Support::Unsupported);
        assert_eq!(cell.errno.as_deref(), Some("EOPNOTSUPP"));
        let reason = cell.reason.unwrap();
        assert!(reason.contains("drop"), "{reason}");
        assert!(reason.contains("4 pages stay cached"), "{reason}");
    }

    #[test]
    fn an_io_error_is_not_passed_off_as_a_missing_feature() {
        let cell = classify(trial(Observation::refused(
            "fallocate(PUNCH_HOLE)",
            Errno::IO,
        )));
        assert_eq!(cell.support, Support::Unsupported);
        assert_eq!(cell.errno.as_deref(), Some("EIO"));
        assert!(cell.reason.unwrap().starts_with("trial failed"));
        assert!(!means_unsupported(Errno::IO));
        assert!(!means_unsupported(Errno::NOSPC));
        assert!(means_unsupported(Errno::BADR));
        assert_eq!(ErrnoName(Errno::BADR).symbolic(), "EBADR");
    }

    #[test]
    fn needs_carries_the_other_capabilitys_errno() {
        let ficlone = Cell::unsupported("EOPNOTSUPP", "FICLONE");
        let cell = needs("ficlone", &ficlone, "FIEMAP after FICLONE");
        assert_eq!(cell.support, Support::Unsupported);
        assert_eq!(cell.errno.as_deref(), Some("EOPNOTSUPP"));
        assert_eq!(
            cell.reason.as_deref(),
            Some("cannot be tried: ficlone is unsupported")
        );
        let degraded = Cell::degraded("no SHARED", "x");
        assert_eq!(needs("ficlone", &degraded, "y").errno, None);
    }

    fn lease_ok() -> LeaseObservation {
        LeaseObservation {
            beside_another_open: Some(Err(Errno::AGAIN)),
            acquire: Ok(()),
            open_while_held: Err(Errno::WOULDBLOCK),
            break_seen: true,
            open_after_release: Ok(()),
        }
    }

    #[test]
    fn a_lease_that_excludes_breaks_and_releases_is_native() {
        let cell = write_lease(&lease_ok(), "t");
        assert_eq!(cell.support, Support::Native);
        assert_eq!(cell.detail, None);
        let cell = write_lease(
            &LeaseObservation {
                beside_another_open: None,
                ..lease_ok()
            },
            "t",
        );
        assert_eq!(cell.support, Support::Native);
        assert!(cell.detail.unwrap().contains("not checked"));
    }

    #[test]
    fn a_refused_lease_is_unsupported_with_the_errno_and_why() {
        for (errno, name, why) in [
            (Errno::INVAL, "EINVAL", "no leases"),
            (Errno::NOLCK, "ENOLCK", "no leases"),
            (Errno::ACCESS, "EACCES", "CAP_LEASE"),
            (Errno::AGAIN, "EAGAIN", "no write delegation"),
            (Errno::IO, "EIO", "trial failed"),
        ] {
            let cell = write_lease(
                &LeaseObservation {
                    acquire: Err(errno),
                    ..lease_ok()
                },
                "t",
            );
            assert_eq!(cell.support, Support::Unsupported);
            assert_eq!(cell.errno.as_deref(), Some(name));
            assert!(cell.reason.unwrap().contains(why), "{name}");
        }
    }

    #[test]
    fn a_lease_that_does_not_keep_openers_out_is_degraded_saying_how() {
        let cases = [
            (
                LeaseObservation {
                    beside_another_open: Some(Ok(())),
                    ..lease_ok()
                },
                "granted while another descriptor was open",
            ),
            (
                LeaseObservation {
                    open_while_held: Ok(()),
                    ..lease_ok()
                },
                "got in at once",
            ),
            (
                LeaseObservation {
                    break_seen: false,
                    ..lease_ok()
                },
                "did not show the break",
            ),
            (
                LeaseObservation {
                    open_after_release: Err(Errno::WOULDBLOCK),
                    ..lease_ok()
                },
                "after release",
            ),
            (
                LeaseObservation {
                    beside_another_open: Some(Err(Errno::INVAL)),
                    ..lease_ok()
                },
                "instead of EAGAIN",
            ),
        ];
        for (obs, why) in cases {
            let cell = write_lease(&obs, "t");
            assert_eq!(cell.support, Support::Degraded, "{why}");
            assert!(cell.reason.unwrap().contains(why), "{why}");
        }
    }

    #[test]
    fn copy_file_range_on_nfs_is_native_only_when_the_server_copied() {
        let copied = || Cell::native("cfr").with_detail("262144 bytes in 1 call(s)");
        let offloaded = OffloadObservation {
            copy: 1,
            read: 0,
            write: 0,
        };
        let cell = copy_offload(copied(), Some(&offloaded));
        assert_eq!(cell.support, Support::Native);
        assert!(cell.detail.unwrap().contains("COPY 1"));
        assert!(cell.verified_by.contains("mountstats"));
        let spliced = OffloadObservation {
            copy: 0,
            read: 0,
            write: 4,
        };
        let cell = copy_offload(copied(), Some(&spliced));
        assert_eq!(cell.support, Support::Degraded);
        assert!(cell.reason.unwrap().contains("not offloaded"));
        assert!(cell.detail.unwrap().contains("WRITE 4"));
        // No counters (a local filesystem): unchanged.
        assert_eq!(copy_offload(copied(), None), copied());
        // A cell that is not native is left alone.
        let refused = Cell::unsupported("EXDEV", "cfr");
        assert_eq!(copy_offload(refused.clone(), Some(&spliced)), refused);
    }
}
