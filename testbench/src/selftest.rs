//! Proof that the guards leave nothing behind: a child bench process mounts
//! a filesystem and, on it, the fault-injecting FUSE filesystem with a file
//! frozen, then panics (or is sent SIGINT / SIGTERM); afterwards no mount,
//! loop device, directory or FUSE daemon of that child may remain.

use crate::cleanup::{self, install_signal_handlers};
use crate::defs::FsDef;
use crate::fixture::MountedFs;
use crate::runner::{FsReport, Outcome, Record};
use crate::scenarios::faults::mount::FaultMount;
use crate::scenarios::probe::fuse::{proc_state, wait_for};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How the child ends.
#[derive(Debug, Clone, Copy)]
pub enum Ending {
    /// `panic!` mid-scenario, with the filesystem mounted.
    Panic,
    /// Killed by this signal while mounted.
    Signal(i32),
}

/// The child side: mount `def` and a fault mount on it (a file frozen),
/// say where and the FUSE daemon's pid, then end as told.
pub fn child(def: &FsDef, panic: bool) -> anyhow::Result<()> {
    install_signal_handlers()?;
    let fs = MountedFs::mount(def)?;
    std::fs::write(fs.mountpoint().join("busy"), b"a scenario was here")?;
    let mut faults = FaultMount::start(
        &fs.mountpoint().join("faults-mnt"),
        &fs.mountpoint().join("faults-backing"),
    )?;
    std::fs::write(faults.backing("f"), b"frozen")?;
    faults.freeze("f")?;
    println!("READY {} {}", fs.mountpoint().display(), faults.pid());
    if panic {
        panic!(
            "selftest: deliberate panic with {} mounted",
            fs.mountpoint().display()
        );
    }
    // Wait for the signal; the handler cleans up and exits.
    std::thread::sleep(Duration::from_secs(60));
    anyhow::bail!("no signal arrived")
}

/// The parent side: run one child ending, then look for leftovers (also
/// run by the `blockdev/` scenarios on a block definition).
pub fn check(def: &FsDef, ending: Ending) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mode = match ending {
        Ending::Panic => "panic",
        Ending::Signal(_) => "wait",
    };
    let mut child = Command::new(exe)
        .args(["selftest-child", mode, &def.name])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let pid = child.id();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let ready = line
        .strip_prefix("READY ")
        .and_then(|s| s.trim().split_once(' '))
        .and_then(|(mnt, daemon)| Some((mnt.to_owned(), daemon.parse::<u32>().ok()?)));
    let Some((mnt, daemon)) = ready else {
        let _ = child.kill();
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        return Err(format!(
            "child did not mount: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    };
    if !cleanup::leaks_of(pid).iter().any(|l| l.contains(&mnt)) {
        return Err(format!(
            "leak check cannot see the child's live mount {mnt}"
        ));
    }
    if let Ending::Signal(sig) = ending {
        let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
        let sig = rustix::process::Signal::from_named_raw(sig).unwrap();
        rustix::process::kill_process(pid, sig).map_err(|e| format!("kill: {e}"))?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err("child did not exit within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if status.success() {
        return Err(format!(
            "child exited successfully ({status}); expected a failure"
        ));
    }
    // The daemon dies with its bench (PDEATHSIG) if the guard did not end it.
    if wait_for("the FUSE daemon to be gone", Duration::from_secs(5), || {
        proc_state(daemon).is_none_or(|s| s == 'Z')
    })
    .is_err()
    {
        return Err(format!(
            "FUSE daemon {daemon} still running after {ending:?}"
        ));
    }
    let leaks = cleanup::leaks_of(pid);
    if !leaks.is_empty() {
        // Do not leave them for the next run either.
        for l in &leaks {
            if let Some(m) = l.strip_prefix("mount: ").and_then(|l| l.split(' ').nth(1)) {
                let _ = cleanup::unmount(std::path::Path::new(m));
            }
        }
        return Err(format!("left behind after {ending:?}: {leaks:?}"));
    }
    Ok(())
}

/// The NFS server's own leftovers, which the leak check (by name) cannot
/// see: its daemons (reparented when their bench died) and the nfsd
/// control filesystem. Only meaningful where no other NFS server runs
/// (which [`crate::fixture::nfs::available`] made sure of).
fn nfs_leftovers() -> Vec<String> {
    let mut found = Vec::new();
    if crate::fixture::is_mounted(std::path::Path::new("/proc/fs/nfsd")) {
        found.push("/proc/fs/nfsd still mounted".to_owned());
    }
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let comm = comm.trim();
            if matches!(comm, "rpcbind" | "rpc.mountd" | "rpc.statd")
                && proc_state(pid).is_some_and(|s| s != 'Z')
            {
                found.push(format!("{comm} (pid {pid}) still running"));
            }
        }
    }
    let threads = std::fs::read_to_string("/proc/fs/nfsd/threads").unwrap_or_default();
    if !threads.trim().is_empty() && threads.trim() != "0" {
        found.push(format!("{} knfsd threads running", threads.trim()));
    }
    found
}

/// The guard proof for an NFS definition: a child bench with the server
/// and client up panics, or is sent SIGTERM; afterwards neither a mount
/// nor a daemon nor knfsd of it may remain.
pub fn nfs(def: &FsDef) -> FsReport {
    let started = Instant::now();
    println!("== selftest (guards on {})", def.name);
    let cases: [(&'static str, Ending); 2] = [
        ("selftest/nfs_panic_leaves_nothing", Ending::Panic),
        (
            "selftest/nfs_sigterm_leaves_nothing",
            Ending::Signal(rustix::process::Signal::TERM.as_raw()),
        ),
    ];
    let mut records = Vec::new();
    for (name, ending) in cases {
        let t = Instant::now();
        let outcome = match check(def, ending).and_then(|()| {
            let left = nfs_leftovers();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("left behind after {ending:?}: {left:?}"))
            }
        }) {
            Ok(()) => Outcome::Pass,
            Err(e) => Outcome::Fail(e),
        };
        match &outcome {
            Outcome::Fail(why) => println!("  FAIL {name}: {why}"),
            _ => println!("  PASS {name} ({:.2?})", t.elapsed()),
        }
        records.push(Record {
            scenario: name,
            outcome,
            elapsed: t.elapsed(),
        });
    }
    FsReport {
        fs: "selftest-nfs".into(),
        caps: None,
        faults: None,
        unmeasured: Vec::new(),
        setup: None,
        records,
        elapsed: started.elapsed(),
    }
}

/// A filesystem whose image is made and attached but whose mount fails
/// (an unknown type): the error comes back and nothing of it remains.
fn failed_mount(def: &FsDef) -> Result<(), String> {
    let mut bogus = def.clone();
    bogus.name = format!("{}-bogus", def.name);
    bogus.fstype = "sparsekit-no-such-fs".into();
    let before = cleanup::leaks_of(std::process::id());
    match MountedFs::mount(&bogus) {
        Ok(_) => return Err("mounting an unknown filesystem type succeeded".into()),
        Err(e) if !format!("{e:#}").contains("sparsekit-no-such-fs") => {
            return Err(format!("the error does not name the mount: {e:#}"));
        }
        Err(_) => {}
    }
    let after = cleanup::leaks_of(std::process::id());
    let new: Vec<&String> = after.iter().filter(|l| !before.contains(l)).collect();
    if new.is_empty() {
        Ok(())
    } else {
        Err(format!("left behind after a failed mount: {new:?}"))
    }
}

/// All self-tests, as a report of their own.
pub fn run(def: &FsDef) -> FsReport {
    let started = Instant::now();
    println!("== selftest (guards on {})", def.name);
    let cases: [(&'static str, Ending); 3] = [
        ("selftest/panic_mid_scenario_leaves_nothing", Ending::Panic),
        (
            "selftest/sigint_leaves_nothing",
            Ending::Signal(rustix::process::Signal::INT.as_raw()),
        ),
        (
            "selftest/sigterm_leaves_nothing",
            Ending::Signal(rustix::process::Signal::TERM.as_raw()),
        ),
    ];
    let mut records = Vec::new();
    for (name, ending) in cases {
        let t = Instant::now();
        let outcome = match check(def, ending) {
            Ok(()) => Outcome::Pass,
            Err(e) => Outcome::Fail(e),
        };
        match &outcome {
            Outcome::Fail(why) => println!("  FAIL {name}: {why}"),
            _ => println!("  PASS {name} ({:.2?})", t.elapsed()),
        }
        records.push(Record {
            scenario: name,
            outcome,
            elapsed: t.elapsed(),
        });
    }
    let t = Instant::now();
    let name = "selftest/failed_mount_leaves_nothing";
    let outcome = match failed_mount(def) {
        Ok(()) => Outcome::Pass,
        Err(e) => Outcome::Fail(e),
    };
    match &outcome {
        Outcome::Fail(why) => println!("  FAIL {name}: {why}"),
        _ => println!("  PASS {name} ({:.2?})", t.elapsed()),
    }
    records.push(Record {
        scenario: name,
        outcome,
        elapsed: t.elapsed(),
    });
    FsReport {
        fs: "selftest".into(),
        caps: None,
        faults: None,
        unmeasured: Vec::new(),
        setup: None,
        records,
        elapsed: started.elapsed(),
    }
}
