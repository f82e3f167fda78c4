//! A fault-injecting FUSE filesystem: a flat directory passed through to a
//! backing directory (on the filesystem under test), whose requests fail,
//! come back short, slow or not at all, per file, as the scenario says at
//! run time.
//!
//! The daemon is this bench binary run as `faults-fuse-daemon MOUNTPOINT
//! BACKING`; [`FaultMount`](super::mount::FaultMount) starts it through the probe scenarios' guard
//! ([`FuseMount`](crate::scenarios::probe::fuse::FuseMount)), which unmounts and reaps it on drop, panics included.
//! It takes one command per line on stdin and answers `OK …` or `ERR …`:
//!
//! - `set NAME KEY=VALUE…` (NAME is a file name, or `*` for every file
//!   without a rule of its own, also files created later):
//!   `read_eio=OFFSET` / `write_eio=OFFSET` (EIO for any read / write
//!   request whose range holds the byte at OFFSET), `short_read=1` (every
//!   read answers half of what was asked), `delay_ms=N` (each request of
//!   the file waits N ms), `fallocate_eio=1`, `lseek_eio=1` (SEEK_DATA /
//!   SEEK_HOLE fail with EIO), `fsync_eio=1`, `freeze_at=OFFSET` (the first read or write
//!   request holding that byte freezes the file: a stall mid-operation);
//! - `freeze NAME` / `thaw NAME`: requests of that file (lookups of its
//!   name included) wait until thawed (`*`: every file);
//! - `clear`: no rules, nothing frozen; `stats`: the fault counters;
//! - EOF: like `clear`, so a torn-down guard never leaves a request held.
//!
//! Every file is opened with `FOPEN_DIRECT_IO` and cached for 0 s, so each
//! read, write and stat reaches the daemon (no page cache hides a fault)
//! and a short answer is what read(2) returns. `FALLOC_FL_COLLAPSE_RANGE`
//! and `INSERT_RANGE` are refused with EOPNOTSUPP (the kernel's FUSE does so
//! too), so collapse and insert take their emulated path. `O_TMPFILE` is not
//! implemented, so copy stages under a visible temporary name.
//!
//! A held request (frozen or delayed) waits on a thread of its own, never
//! on a session thread, and is answered EINTR as soon as the calling thread
//! has a SIGKILL pending: FUSE waits out a request the daemon already read
//! even for a dying caller, so a daemon that never answered would keep a
//! timed-out `sparsekit` from exiting (libfuse daemons get the same effect
//! from FUSE_INTERRUPT, which fuser does not pass on).

use super::rule::{Rule, hits};
use anyhow::{Context, bail};
use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite,
    Request, TimeOrNow, WriteFlags,
};
use rustix::fs::{FallocateFlags, Mode, OFlags, SeekFrom, Timespec, Timestamps};
use rustix::process::Signal;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::BufRead;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const ROOT: u64 = 1;
/// No caching of entries or attributes: every stat reaches the daemon.
const TTL: Duration = Duration::ZERO;

/// How many faults of each kind the daemon injected.
#[derive(Debug, Default)]
struct Counters {
    read_eio: AtomicU64,
    write_eio: AtomicU64,
    short_read: AtomicU64,
    delayed: AtomicU64,
    frozen: AtomicU64,
    fallocate_eio: AtomicU64,
    lseek_eio: AtomicU64,
    fsync_eio: AtomicU64,
    /// Requests of a frozen file abandoned by their (killed) caller.
    interrupted: AtomicU64,
}

impl Counters {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn report(&self) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "read_eio={} write_eio={} short_read={} delayed={} frozen={} fallocate_eio={} lseek_eio={} fsync_eio={} interrupted={}",
            g(&self.read_eio),
            g(&self.write_eio),
            g(&self.short_read),
            g(&self.delayed),
            g(&self.frozen),
            g(&self.fallocate_eio),
            g(&self.lseek_eio),
            g(&self.fsync_eio),
            g(&self.interrupted),
        )
    }
}

#[derive(Debug, Default)]
struct Rules {
    per_file: HashMap<String, Rule>,
    default: Rule,
    frozen: Vec<String>,
}

impl Rules {
    fn of(&self, name: &str) -> Rule {
        self.per_file
            .get(name)
            .cloned()
            .unwrap_or_else(|| self.default.clone())
    }

    fn is_frozen(&self, name: &str) -> bool {
        self.frozen.iter().any(|f| f == name || f == "*")
    }
}

#[derive(Debug, Default)]
struct Nodes {
    /// ino → current name (None once unlinked while still open).
    names: HashMap<u64, Option<String>>,
    inos: HashMap<String, u64>,
    next_ino: u64,
    handles: HashMap<u64, (u64, Arc<File>)>,
    next_fh: u64,
}

#[derive(Debug)]
struct Inner {
    backing: PathBuf,
    nodes: Mutex<Nodes>,
    rules: Mutex<Rules>,
    thawed: Condvar,
    counters: Counters,
    started: SystemTime,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn errno(e: std::io::Error) -> Errno {
    Errno::from(e)
}

fn rerrno(e: rustix::io::Errno) -> Errno {
    Errno::from_i32(e.raw_os_error())
}

/// Whether thread `tid` is gone or has a SIGKILL pending (it is exiting).
fn caller_dying(tid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{tid}/status")) else {
        return true;
    };
    let kill_bit = 1u64 << (Signal::KILL.as_raw() - 1);
    status.lines().any(|l| {
        let Some((key, hex)) = l.split_once(':') else {
            return false;
        };
        matches!(key, "SigPnd" | "ShdPnd")
            && u64::from_str_radix(hex.trim(), 16).is_ok_and(|m| m & kill_bit != 0)
    }) || status
        .lines()
        .any(|l| l.starts_with("State:") && (l.contains("zombie") || l.contains("dead")))
}

impl Inner {
    fn name_of(&self, ino: u64) -> Option<String> {
        lock(&self.nodes).names.get(&ino).cloned().flatten()
    }

    fn ino_for(&self, name: &str) -> u64 {
        let mut n = lock(&self.nodes);
        if let Some(&ino) = n.inos.get(name) {
            return ino;
        }
        n.next_ino += 1;
        let ino = n.next_ino;
        n.inos.insert(name.to_owned(), ino);
        n.names.insert(ino, Some(name.to_owned()));
        ino
    }

    fn handle(&self, fh: u64) -> Option<Arc<File>> {
        lock(&self.nodes).handles.get(&fh).map(|(_, f)| f.clone())
    }

    fn any_handle_of(&self, ino: u64) -> Option<Arc<File>> {
        lock(&self.nodes)
            .handles
            .values()
            .find(|(i, _)| *i == ino)
            .map(|(_, f)| f.clone())
    }

    fn add_handle(&self, ino: u64, file: File) -> u64 {
        let mut n = lock(&self.nodes);
        n.next_fh += 1;
        let fh = n.next_fh;
        n.handles.insert(fh, (ino, Arc::new(file)));
        fh
    }

    fn path(&self, name: &str) -> PathBuf {
        self.backing.join(name)
    }

    fn rule(&self, name: Option<&str>) -> Rule {
        let rules = lock(&self.rules);
        name.map_or_else(|| rules.default.clone(), |n| rules.of(n))
    }

    fn attr(&self, ino: u64, md: &std::fs::Metadata) -> FileAttr {
        let time = |s: i64, ns: i64| {
            UNIX_EPOCH + Duration::new(s.max(0) as u64, ns.clamp(0, 999_999_999) as u32)
        };
        let kind = if md.is_dir() {
            FileType::Directory
        } else {
            FileType::RegularFile
        };
        FileAttr {
            ino: INodeNo(ino),
            size: md.len(),
            blocks: md.blocks(),
            atime: time(md.atime(), md.atime_nsec()),
            mtime: time(md.mtime(), md.mtime_nsec()),
            ctime: time(md.ctime(), md.ctime_nsec()),
            crtime: self.started,
            kind,
            perm: (md.mode() & 0o7777) as u16,
            nlink: md.nlink() as u32,
            uid: md.uid(),
            gid: md.gid(),
            rdev: 0,
            blksize: md.blksize() as u32,
            flags: 0,
        }
    }

    /// The metadata of `ino`: through an open handle (also for an unlinked
    /// file), else by its name.
    fn metadata(&self, ino: u64, fh: Option<u64>) -> Result<std::fs::Metadata, Errno> {
        if ino == ROOT {
            return std::fs::metadata(&self.backing).map_err(errno);
        }
        let file = fh
            .and_then(|fh| self.handle(fh))
            .or_else(|| self.any_handle_of(ino));
        if let Some(f) = file {
            return f.metadata().map_err(errno);
        }
        let name = self.name_of(ino).ok_or(Errno::ENOENT)?;
        std::fs::symlink_metadata(self.path(&name)).map_err(errno)
    }

    /// Runs `op` now, or (frozen or delayed) on a thread of its own once
    /// thawed and the delay is over; `op` gets `Err(EINTR)` if the caller
    /// died meanwhile.
    fn gate(
        self: &Arc<Self>,
        req: &Request,
        name: Option<String>,
        op: impl FnOnce(&Inner, Result<(), Errno>) + Send + 'static,
    ) {
        let rule = self.rule(name.as_deref());
        let frozen = name
            .as_deref()
            .is_some_and(|n| lock(&self.rules).is_frozen(n));
        if rule.delay.is_zero() && !frozen {
            return op(self, Ok(()));
        }
        let me = self.clone();
        let tid = req.pid();
        std::thread::spawn(move || {
            if !rule.delay.is_zero() {
                Counters::bump(&me.counters.delayed);
                std::thread::sleep(rule.delay);
            }
            if frozen {
                Counters::bump(&me.counters.frozen);
            }
            let mut rules = lock(&me.rules);
            loop {
                let still = name.as_deref().is_some_and(|n| rules.is_frozen(n));
                if !still {
                    drop(rules);
                    return op(&me, Ok(()));
                }
                if caller_dying(tid) {
                    drop(rules);
                    Counters::bump(&me.counters.interrupted);
                    return op(&me, Err(Errno::EINTR));
                }
                rules = me
                    .thawed
                    .wait_timeout(rules, Duration::from_millis(20))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        });
    }

    /// Freezes `name` when a request hit its `freeze_at` byte (once: the
    /// rule is spent, so a thaw really thaws).
    fn freeze_if(&self, name: Option<&str>, hit: bool) {
        let (Some(name), true) = (name, hit) else {
            return;
        };
        let mut rules = lock(&self.rules);
        if let Some(r) = rules.per_file.get_mut(name) {
            r.freeze_at = None;
        } else {
            // A default rule: this file gets the rest of it as its own.
            let mut r = rules.default.clone();
            r.freeze_at = None;
            rules.per_file.insert(name.to_owned(), r);
        }
        rules.frozen.push(name.to_owned());
    }

    fn command(&self, line: &str) -> anyhow::Result<String> {
        let mut words = line.split_whitespace();
        let reply = match words.next() {
            Some("set") => {
                let name = words.next().context("set NAME …")?.to_owned();
                let rule = Rule::parse(words)?;
                let mut rules = lock(&self.rules);
                if name == "*" {
                    rules.default = rule;
                } else {
                    rules.per_file.insert(name, rule);
                }
                String::new()
            }
            Some("freeze") => {
                let name = words.next().context("freeze NAME")?.to_owned();
                lock(&self.rules).frozen.push(name);
                String::new()
            }
            Some("thaw") => {
                let name = words.next().context("thaw NAME")?;
                lock(&self.rules)
                    .frozen
                    .retain(|f| name != "*" && f != name);
                self.thawed.notify_all();
                String::new()
            }
            Some("clear") => {
                self.clear();
                String::new()
            }
            Some("stats") => self.counters.report(),
            other => bail!("unknown command {other:?}"),
        };
        Ok(reply)
    }

    fn clear(&self) {
        *lock(&self.rules) = Rules::default();
        self.thawed.notify_all();
    }
}

/// The filesystem (a cheap handle on the shared state).
#[derive(Debug, Clone)]
struct FaultFs(Arc<Inner>);

fn name_str(name: &OsStr) -> Result<&str, Errno> {
    let s = name.to_str().ok_or(Errno::EINVAL)?;
    if s.contains('/') || s == "." || s == ".." {
        return Err(Errno::EINVAL);
    }
    Ok(s)
}

fn systime(t: TimeOrNow) -> Timespec {
    match t {
        TimeOrNow::Now => Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
        TimeOrNow::SpecificTime(t) => {
            let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
            Timespec {
                tv_sec: d.as_secs() as i64,
                tv_nsec: i64::from(d.subsec_nanos()),
            }
        }
    }
}

const OMIT: Timespec = Timespec {
    tv_sec: 0,
    tv_nsec: rustix::fs::UTIME_OMIT,
};

impl Filesystem for FaultFs {
    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if u64::from(parent) != ROOT {
            return reply.error(Errno::ENOENT);
        }
        let Ok(name) = name_str(name) else {
            return reply.error(Errno::ENOENT);
        };
        let name = name.to_owned();
        self.0.gate(req, Some(name.clone()), move |fs, gate| {
            if let Err(e) = gate {
                return reply.error(e);
            }
            match std::fs::symlink_metadata(fs.path(&name)) {
                Ok(md) if md.is_file() => {
                    let ino = fs.ino_for(&name);
                    reply.entry(&TTL, &fs.attr(ino, &md), Generation(0))
                }
                // A flat filesystem of regular files only.
                Ok(_) => reply.error(Errno::ENOENT),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let ino = u64::from(ino);
        let name = self.0.name_of(ino);
        self.0.gate(req, name, move |fs, gate| {
            match gate.and_then(|()| fs.metadata(ino, fh.map(u64::from))) {
                Ok(md) => reply.attr(&TTL, &fs.attr(ino, &md)),
                Err(e) => reply.error(e),
            }
        });
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let ino = u64::from(ino);
        let name = self.0.name_of(ino);
        self.0.gate(req, name.clone(), move |fs, gate| {
            let result = (|| -> Result<std::fs::Metadata, Errno> {
                gate?;
                let file = match fh.and_then(|fh| fs.handle(u64::from(fh))) {
                    Some(f) => f,
                    None => {
                        let name = name.ok_or(Errno::ENOENT)?;
                        Arc::new(
                            std::fs::OpenOptions::new()
                                .write(size.is_some())
                                .read(true)
                                .open(fs.path(&name))
                                .map_err(errno)?,
                        )
                    }
                };
                if let Some(mode) = mode {
                    rustix::fs::fchmod(&*file, Mode::from_raw_mode(mode & 0o7777))
                        .map_err(rerrno)?;
                }
                if uid.is_some() || gid.is_some() {
                    rustix::fs::fchown(
                        &*file,
                        uid.map(rustix::fs::Uid::from_raw),
                        gid.map(rustix::fs::Gid::from_raw),
                    )
                    .map_err(rerrno)?;
                }
                if let Some(size) = size {
                    file.set_len(size).map_err(errno)?;
                }
                if atime.is_some() || mtime.is_some() {
                    let times = Timestamps {
                        last_access: atime.map_or(OMIT, systime),
                        last_modification: mtime.map_or(OMIT, systime),
                    };
                    rustix::fs::futimens(&*file, &times).map_err(rerrno)?;
                }
                file.metadata().map_err(errno)
            })();
            match result {
                Ok(md) => reply.attr(&TTL, &fs.attr(ino, &md)),
                Err(e) => reply.error(e),
            }
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if u64::from(parent) != ROOT {
            return reply.error(Errno::ENOENT);
        }
        let Ok(name) = name_str(name) else {
            return reply.error(Errno::ENOENT);
        };
        match std::fs::remove_file(self.0.path(name)) {
            Ok(()) => {
                let mut n = lock(&self.0.nodes);
                if let Some(ino) = n.inos.remove(name) {
                    n.names.insert(ino, None);
                }
                reply.ok()
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if u64::from(parent) != ROOT || u64::from(newparent) != ROOT {
            return reply.error(Errno::ENOENT);
        }
        let (Ok(from), Ok(to)) = (name_str(name), name_str(newname)) else {
            return reply.error(Errno::EINVAL);
        };
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return reply.error(Errno::EINVAL);
        }
        let rflags = if flags.contains(RenameFlags::RENAME_NOREPLACE) {
            rustix::fs::RenameFlags::NOREPLACE
        } else {
            rustix::fs::RenameFlags::empty()
        };
        let cwd = rustix::fs::CWD;
        match rustix::fs::renameat_with(cwd, self.0.path(from), cwd, self.0.path(to), rflags) {
            Ok(()) => {
                let mut n = lock(&self.0.nodes);
                if let Some(old) = n.inos.remove(to) {
                    n.names.insert(old, None);
                }
                if let Some(ino) = n.inos.remove(from) {
                    n.inos.insert(to.to_owned(), ino);
                    n.names.insert(ino, Some(to.to_owned()));
                }
                reply.ok()
            }
            Err(e) => reply.error(rerrno(e)),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let ino = u64::from(ino);
        let name = self.0.name_of(ino);
        self.0.gate(req, name.clone(), move |fs, gate| {
            let result = gate.and_then(|()| {
                let name = name.ok_or(Errno::ENOENT)?;
                // Root opens read-write whatever the caller asked: the
                // kernel checked the caller's access already.
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(fs.path(&name))
                    .map_err(errno)
            });
            match result {
                Ok(file) => {
                    let fh = fs.add_handle(ino, file);
                    reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO)
                }
                Err(e) => reply.error(e),
            }
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        if u64::from(parent) != ROOT {
            return reply.error(Errno::ENOENT);
        }
        let Ok(name) = name_str(name) else {
            return reply.error(Errno::EINVAL);
        };
        let name = name.to_owned();
        self.0.gate(req, Some(name.clone()), move |fs, gate| {
            let result = gate.and_then(|()| {
                let oflags = OFlags::from_bits_retain(flags as u32);
                let mut o = OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC;
                o |= oflags & (OFlags::EXCL | OFlags::TRUNC);
                let fd = rustix::fs::open(
                    fs.path(&name),
                    o,
                    Mode::from_raw_mode(mode & !umask & 0o7777),
                )
                .map_err(rerrno)?;
                let file = File::from(fd);
                let md = file.metadata().map_err(errno)?;
                Ok((file, md))
            });
            match result {
                Ok((file, md)) => {
                    let ino = fs.ino_for(&name);
                    let fh = fs.add_handle(ino, file);
                    reply.created(
                        &TTL,
                        &fs.attr(ino, &md),
                        Generation(0),
                        FileHandle(fh),
                        FopenFlags::FOPEN_DIRECT_IO,
                    )
                }
                Err(e) => reply.error(e),
            }
        });
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let ino = u64::from(ino);
        let name = self.0.name_of(ino);
        let rule = self.0.rule(name.as_deref());
        self.0.freeze_if(
            name.as_deref(),
            hits(rule.freeze_at, offset, u64::from(size)),
        );
        self.0.gate(req, name, move |fs, gate| {
            if let Err(e) = gate {
                return reply.error(e);
            }
            if hits(rule.read_eio, offset, u64::from(size)) {
                Counters::bump(&fs.counters.read_eio);
                return reply.error(Errno::EIO);
            }
            let Some(file) = fs.handle(u64::from(fh)) else {
                return reply.error(Errno::EBADF);
            };
            let want = if rule.short_read && size > 1 {
                size / 2
            } else {
                size
            };
            let mut buf = vec![0u8; want as usize];
            let mut got = 0;
            while got < buf.len() {
                match file.read_at(&mut buf[got..], offset + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return reply.error(errno(e)),
                }
            }
            // A short answer that is not the end of the file is the fault.
            if want < size && got == want as usize {
                Counters::bump(&fs.counters.short_read);
            }
            reply.data(&buf[..got]);
        });
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let ino = u64::from(ino);
        let name = self.0.name_of(ino);
        let rule = self.0.rule(name.as_deref());
        self.0.freeze_if(
            name.as_deref(),
            hits(rule.freeze_at, offset, data.len() as u64),
        );
        let data = data.to_vec();
        self.0.gate(req, name, move |fs, gate| {
            if let Err(e) = gate {
                return reply.error(e);
            }
            if hits(rule.write_eio, offset, data.len() as u64) {
                Counters::bump(&fs.counters.write_eio);
                return reply.error(Errno::EIO);
            }
            let Some(file) = fs.handle(u64::from(fh)) else {
                return reply.error(Errno::EBADF);
            };
            match file.write_all_at(&data, offset) {
                Ok(()) => reply.written(data.len() as u32),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        lock(&self.0.nodes).handles.remove(&u64::from(fh));
        reply.ok();
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let name = self.0.name_of(u64::from(ino));
        let rule = self.0.rule(name.as_deref());
        self.0.gate(req, name, move |fs, gate| {
            let result = gate.and_then(|()| {
                if rule.fsync_eio {
                    Counters::bump(&fs.counters.fsync_eio);
                    return Err(Errno::EIO);
                }
                let file = fs.handle(u64::from(fh)).ok_or(Errno::EBADF)?;
                if datasync {
                    file.sync_data().map_err(errno)
                } else {
                    file.sync_all().map_err(errno)
                }
            });
            match result {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match File::open(&self.0.backing).and_then(|d| d.sync_all()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if u64::from(ino) != ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let mut entries = vec![
            (ROOT, FileType::Directory, OsString::from(".")),
            (ROOT, FileType::Directory, OsString::from("..")),
        ];
        match std::fs::read_dir(&self.0.backing) {
            Ok(dir) => {
                for e in dir.flatten() {
                    let name = e.file_name();
                    if let (Some(s), Ok(t)) = (name.to_str(), e.file_type()) {
                        if t.is_file() {
                            entries.push((self.0.ino_for(s), FileType::RegularFile, name));
                        }
                    }
                }
            }
            Err(e) => return reply.error(errno(e)),
        }
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match rustix::fs::statvfs(&self.0.backing) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(rerrno(e)),
        }
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let name = self.0.name_of(u64::from(ino));
        let rule = self.0.rule(name.as_deref());
        self.0.gate(req, name, move |fs, gate| {
            let result = gate.and_then(|()| {
                let flags = FallocateFlags::from_bits_retain(mode as u32);
                // The emulated shift is what the fault scenarios exercise.
                if flags.intersects(FallocateFlags::COLLAPSE_RANGE | FallocateFlags::INSERT_RANGE) {
                    return Err(Errno::EOPNOTSUPP);
                }
                if rule.fallocate_eio {
                    Counters::bump(&fs.counters.fallocate_eio);
                    return Err(Errno::EIO);
                }
                let file = fs.handle(u64::from(fh)).ok_or(Errno::EBADF)?;
                rustix::fs::fallocate(&*file, flags, offset, length).map_err(rerrno)
            });
            match result {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn lseek(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let name = self.0.name_of(u64::from(ino));
        let rule = self.0.rule(name.as_deref());
        self.0.gate(req, name, move |fs, gate| {
            let result = gate.and_then(|()| {
                let pos = u64::try_from(offset).map_err(|_| Errno::EINVAL)?;
                let how = match whence {
                    libc_seek::DATA => SeekFrom::Data(pos),
                    libc_seek::HOLE => SeekFrom::Hole(pos),
                    // The kernel answers SEEK_SET/CUR/END itself.
                    _ => return Err(Errno::EINVAL),
                };
                if rule.lseek_eio {
                    Counters::bump(&fs.counters.lseek_eio);
                    return Err(Errno::EIO);
                }
                let file = fs.handle(u64::from(fh)).ok_or(Errno::EBADF)?;
                rustix::fs::seek(&*file, how).map_err(rerrno)
            });
            match result {
                Ok(o) => reply.offset(o as i64),
                Err(e) => reply.error(e),
            }
        });
    }
}

/// `SEEK_DATA` / `SEEK_HOLE` (lseek(2); stable Linux ABI values).
mod libc_seek {
    pub(super) const DATA: i32 = 3;
    pub(super) const HOLE: i32 = 4;
}

/// The daemon side (`faults-fuse-daemon MOUNTPOINT BACKING`): mounts, says
/// `READY`, takes commands on stdin, serves until unmounted.
pub fn daemon_main(args: &[String]) -> anyhow::Result<()> {
    let [mnt, backing] = args else {
        bail!("usage: faults-fuse-daemon MOUNTPOINT BACKING");
    };
    // Never outlive the bench.
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
    let inner = Arc::new(Inner {
        backing: PathBuf::from(backing),
        nodes: Mutex::new(Nodes {
            next_ino: ROOT,
            ..Nodes::default()
        }),
        rules: Mutex::new(Rules::default()),
        thawed: Condvar::new(),
        counters: Counters::default(),
        started: SystemTime::now(),
    });
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("sparsekit-faults".to_owned()),
        MountOption::Subtype("sparsekit".to_owned()),
    ];
    config.n_threads = Some(4);
    let session = fuser::spawn_mount(FaultFs(inner.clone()), mnt, &config)
        .context("mount the fault-injecting FUSE filesystem")?;
    let control = inner.clone();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            let answer = match control.command(&line) {
                Ok(r) => format!("OK {r}"),
                Err(e) => format!("ERR {e:#}"),
            };
            println!("{}", answer.trim_end());
        }
        // The guard closed our stdin: hold nothing any more.
        control.clear();
    });
    println!("READY");
    std::io::Write::flush(&mut std::io::stdout())?;
    session.join().context("FUSE session")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dying_or_missing_thread_counts_as_gone() {
        assert!(caller_dying(u32::MAX - 1));
        assert!(!caller_dying(std::process::id()));
    }
}
