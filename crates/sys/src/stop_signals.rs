//! Stop signals: the first `SIGINT`/`SIGTERM`/`SIGHUP` asks for a clean
//! stop, the second ends the process.
//!
//! The first sets a flag the operation polls, and puts the signal back to
//! its default action (`sigaction(2)`, `SIG_DFL`). The second is then fatal
//! in the kernel itself, which delivers it even to a process whose every
//! thread is blocked in a killable wait: a read from a hard NFS mount whose
//! server is gone never returns to user space, so a handler that exits on
//! the second signal (what `signal-hook`'s conditional shutdown does) would
//! never run there. The status is "killed by the signal" (the shell shows
//! 128 + signal).

#![allow(unsafe_code)]

use signal_hook::SigId;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Handlers installed by [`stop_on`]; dropping it removes those not yet
/// used (a signal that came stays at its default action).
#[derive(Debug)]
pub struct StopSignals {
    ids: Vec<SigId>,
}

/// Sets `flag` when one of `signals` arrives, and from then on leaves that
/// signal to its default action (see the module docs).
pub fn stop_on(signals: &[i32], flag: &Arc<AtomicBool>) -> io::Result<StopSignals> {
    let mut installed = StopSignals { ids: Vec::new() };
    for &sig in signals {
        let flag = Arc::clone(flag);
        // SAFETY: the action only stores to an atomic and calls
        // sigaction(2), both async-signal-safe.
        let id = unsafe {
            signal_hook::low_level::register(sig, move || {
                flag.store(true, Ordering::SeqCst);
                restore_default(sig);
            })
        }?;
        installed.ids.push(id);
    }
    Ok(installed)
}

/// `sigaction(sig, SIG_DFL)`, callable from a signal handler.
fn restore_default(sig: i32) {
    // SAFETY: a zeroed sigaction with sa_sigaction = SIG_DFL is a valid
    // argument; the old action is not asked for.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(sig, &action, std::ptr::null_mut());
    }
}

impl Drop for StopSignals {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// In a child (this test binary run again, filtered to this test): the
    /// first SIGUSR1 sets the flag, the second kills it by the signal.
    #[test]
    fn the_first_signal_sets_the_flag_the_second_is_fatal() {
        if std::env::var_os("STOP_SIGNALS_CHILD").is_some() {
            let flag = Arc::new(AtomicBool::new(false));
            let _installed = stop_on(&[libc::SIGUSR1], &flag).unwrap();
            signal_hook::low_level::raise(libc::SIGUSR1).unwrap();
            assert!(flag.load(Ordering::SeqCst));
            println!("first handled");
            signal_hook::low_level::raise(libc::SIGUSR1).unwrap();
            println!("survived the second");
            return;
        }
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "stop_signals::tests::the_first_signal_sets_the_flag_the_second_is_fatal",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("STOP_SIGNALS_CHILD", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("first handled"), "{out:?}");
        assert!(!stdout.contains("survived"), "{out:?}");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(libc::SIGUSR1), "{out:?}");
    }
}
