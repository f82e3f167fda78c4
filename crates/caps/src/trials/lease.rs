//! `write_lease`: can in-place rewriting (dig, emulated collapse/insert)
//! keep other writers out here, with `fcntl(F_SETLEASE, F_WRLCK)`?

use super::Ctx;
use crate::classify::{LeaseObservation, write_lease};
use crate::error::CapsError;
use rustix::fd::{AsFd, AsRawFd};
use rustix::io::Errno;
use sparsekit_punch::WriteLease;
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;

const HOW: &str = "sparsekit-punch WriteLease on a scratch file: refused (EAGAIN) beside a second descriptor; granted alone; a non-blocking open while held gets EWOULDBLOCK and F_GETLEASE shows the break; after release the open succeeds";

/// A new open file description of `fd`'s file, through `/proc/self/fd`
/// (scratch files may have no name). Non-blocking, so a held lease turns
/// it away (`EWOULDBLOCK`) instead of making the trial wait.
fn reopen<Fd: AsFd>(fd: &Fd) -> Result<File, Errno> {
    File::options()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
        .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))
}

pub(crate) fn run(ctx: &mut Ctx<'_>) -> Result<(), CapsError> {
    let f = ctx.file()?;
    // Without /proc nothing can be reopened: the refusal beside another
    // open is then not checked, and the break cannot be caused either.
    let beside_another_open = match reopen(&f) {
        Ok(other) => {
            let r = WriteLease::acquire(&f).map(drop).map_err(|e| e.errno);
            drop(other);
            Some(r)
        }
        Err(_) => None,
    };
    let obs = match WriteLease::acquire(&f) {
        Err(e) => LeaseObservation {
            beside_another_open,
            acquire: Err(e.errno),
            open_while_held: Err(Errno::WOULDBLOCK),
            break_seen: false,
            open_after_release: Ok(()),
        },
        Ok(lease) => {
            let open_while_held = reopen(&f).map(drop);
            let break_seen = lease.check().is_err();
            drop(lease);
            LeaseObservation {
                beside_another_open,
                acquire: Ok(()),
                open_while_held,
                break_seen,
                open_after_release: reopen(&f).map(drop),
            }
        }
    };
    ctx.set("write_lease", write_lease(&obs, HOW));
    Ok(())
}
