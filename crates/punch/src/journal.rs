//! [`ShiftJournal`]: the durable progress record of an emulated collapse or
//! insert, so that a crash, a `SIGKILL` or a stop at a segment boundary
//! leaves a file that can be finished to exactly the intended bytes.
//!
//! # On-disk format (all integers little-endian)
//! ```text
//! 0       header slot 0 (128 bytes used of 4096)
//! 4096    header slot 1
//! 8192    data region 0: extent list (16 bytes per data extent), then the data
//! 8192+R  data region 1                        (R = segment + segment / 16)
//! ```
//! Header `n` (its sequence number) goes to slot `n % 2` and its saved
//! segment, if any, to region `n % 2`. A header is written only after the
//! one before it is durable, so a torn write can only ever damage the
//! newest slot: the other one still holds the previous, complete record,
//! and its region is untouched (the next write goes to the other region).

use crate::{Operation, PunchError};
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{self, Mode, OFlags};
use rustix::io::{Errno, pread, pwrite};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"SKSHIFT1";
const SLOT: u64 = 4096;
const HEADER_LEN: usize = 128;
const REGIONS_AT: u64 = 2 * SLOT;

/// Where an emulated collapse or insert records its progress: a hidden
/// sidecar file beside the target, `DIR/.NAME.sparsekit-shift`.
///
/// The library works on descriptors, so the caller names the journal from
/// the target's path; [`ShiftOptions::journal`](crate::ShiftOptions::journal)
/// then makes the emulated strategy create it (and fsync it and its
/// directory) before the first byte of the target changes, update it at
/// every segment boundary, and remove it only once the target is fsynced in
/// its final state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShiftJournal {
    path: PathBuf,
}

/// What an existing journal records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Pending {
    /// The journal holds no complete record: the process stopped while
    /// creating it, before the target was touched. Resuming removes it.
    Unstarted,
    /// An unfinished operation.
    Shift {
        /// [`Operation::Collapse`] or [`Operation::Insert`].
        op: Operation,
        /// The range's offset, as asked for.
        offset: u64,
        /// The range's length, as asked for.
        length: u64,
        /// The target's size before the operation began.
        size_before: u64,
    },
}

impl ShiftJournal {
    /// The journal of the file at `target`: `.NAME.sparsekit-shift` in the
    /// same directory (so it is on the same filesystem, and a rename of the
    /// directory keeps them together). Nothing is opened yet.
    ///
    /// # Errors
    /// `None` when `target` has no file name (`/`, `..`).
    pub fn beside(target: &Path) -> Option<Self> {
        let name = target.file_name()?;
        let mut hidden = std::ffi::OsString::from(".");
        hidden.push(name);
        hidden.push(".sparsekit-shift");
        Some(ShiftJournal {
            path: target.with_file_name(hidden),
        })
    }

    /// The journal's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the journal records, or `None` when there is no journal.
    ///
    /// # Errors
    /// The journal exists but cannot be opened or read
    /// ([`PunchError::Journal`]).
    pub fn pending(&self) -> Result<Option<Pending>, PunchError> {
        let Some(open) = Open::existing(self, Operation::Collapse, OFlags::RDONLY)? else {
            return Ok(None);
        };
        Ok(Some(match open.latest()? {
            None => Pending::Unstarted,
            Some(h) => Pending::Shift {
                op: h.op,
                offset: h.offset,
                length: h.length,
                size_before: h.size_before,
            },
        }))
    }

    /// The error for a journal that cannot be used, with the call and errno.
    pub(crate) fn io(&self, op: Operation, call: &'static str, errno: Errno) -> PunchError {
        PunchError::Journal {
            op,
            path: self.path.clone(),
            call,
            errno,
        }
    }
}

/// One header: which operation, on which file, and the segment that may be
/// part-way moved (everything before it, in the direction of the move, is
/// done and synced).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) seq: u64,
    pub(crate) op: Operation,
    pub(crate) offset: u64,
    pub(crate) length: u64,
    pub(crate) size_before: u64,
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    pub(crate) segment: u64,
    /// The pending segment's source range; empty at the phases before the
    /// first and after the last segment.
    pub(crate) start: u64,
    pub(crate) end: u64,
    /// Data extents saved in this slot's region (0 when nothing is saved).
    pub(crate) extents: u64,
    pub(crate) data_len: u64,
    pub(crate) data_sum: u64,
    /// Whether the region holds the segment's source.
    pub(crate) saved: bool,
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..8].copy_from_slice(MAGIC);
        let op = match self.op {
            Operation::Insert => 2u64,
            _ => 1,
        };
        let words = [
            self.seq,
            op,
            self.offset,
            self.length,
            self.size_before,
            self.dev,
            self.ino,
            self.segment,
            self.start,
            self.end,
            self.extents,
            self.data_len,
            self.data_sum,
            u64::from(self.saved),
        ];
        for (i, w) in words.iter().enumerate() {
            b[8 + 8 * i..16 + 8 * i].copy_from_slice(&w.to_le_bytes());
        }
        let sum = checksum(&[&b[..HEADER_LEN - 8]]);
        b[HEADER_LEN - 8..].copy_from_slice(&sum.to_le_bytes());
        b
    }

    fn decode(b: &[u8; HEADER_LEN]) -> Option<Header> {
        if &b[..8] != MAGIC {
            return None;
        }
        let word = |i: usize| u64::from_le_bytes(b[8 + 8 * i..16 + 8 * i].try_into().unwrap());
        let sum = u64::from_le_bytes(b[HEADER_LEN - 8..].try_into().unwrap());
        if sum != checksum(&[&b[..HEADER_LEN - 8]]) {
            return None;
        }
        let op = match word(1) {
            1 => Operation::Collapse,
            2 => Operation::Insert,
            _ => return None,
        };
        let h = Header {
            seq: word(0),
            op,
            offset: word(2),
            length: word(3),
            size_before: word(4),
            dev: word(5),
            ino: word(6),
            segment: word(7),
            start: word(8),
            end: word(9),
            extents: word(10),
            data_len: word(11),
            data_sum: word(12),
            saved: word(13) == 1,
        };
        // A checksummed header that still makes no sense was not written by
        // this code: refuse to act on it rather than guess.
        let sane = h.segment > 0
            && h.segment <= 1 << 30
            && h.start <= h.end
            && h.data_len <= h.segment
            && h.extents.saturating_mul(16) <= region_len(h.segment) - h.segment;
        sane.then_some(h)
    }

    fn slot(&self) -> u64 {
        self.seq % 2
    }
}

/// The capacity of one data region: the segment's bytes plus its extent
/// list (at most one data extent per two 512-byte blocks, 16 bytes each).
pub(crate) fn region_len(segment: u64) -> u64 {
    segment + segment / 16
}

/// A segment's source, saved before it is moved: its data extents (offsets
/// in the file) and their bytes, packed.
#[derive(Debug, Default)]
pub(crate) struct Saved {
    pub(crate) extents: Vec<(u64, u64)>,
    pub(crate) data: Vec<u8>,
}

impl Saved {
    fn list_bytes(&self) -> Vec<u8> {
        let mut list = Vec::with_capacity(self.extents.len() * 16);
        for &(off, len) in &self.extents {
            list.extend_from_slice(&off.to_le_bytes());
            list.extend_from_slice(&len.to_le_bytes());
        }
        list
    }

    fn sum(list: &[u8], data: &[u8]) -> u64 {
        checksum(&[list, data])
    }
}

/// An open journal file.
#[derive(Debug)]
pub(crate) struct Open<'j> {
    pub(crate) journal: &'j ShiftJournal,
    fd: OwnedFd,
    op: Operation,
}

impl<'j> Open<'j> {
    /// Creates the journal (it must not exist) holding `first`, and makes
    /// it and its directory entry durable.
    pub(crate) fn create(journal: &'j ShiftJournal, first: &Header) -> Result<Self, PunchError> {
        let op = first.op;
        let fd = fs::open(
            &journal.path,
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::RUSR | Mode::WUSR,
        )
        .map_err(|errno| journal.io(op, "open(O_CREAT|O_EXCL)", errno))?;
        let open = Open { journal, fd, op };
        let created = open
            .write_at(&first.encode(), first.slot() * SLOT)
            .and_then(|()| open.sync())
            .and_then(|()| sync_dir(journal, op));
        if let Err(e) = created {
            // Nothing was changed yet: leave no journal that would block
            // the next command.
            let _ = fs::unlink(&journal.path);
            return Err(e);
        }
        Ok(open)
    }

    /// Opens an existing journal (`RDONLY` to look, `RDWR` to resume);
    /// `None` when there is none.
    pub(crate) fn existing(
        journal: &'j ShiftJournal,
        op: Operation,
        mode: OFlags,
    ) -> Result<Option<Self>, PunchError> {
        match fs::open(
            &journal.path,
            mode | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        ) {
            Ok(fd) => Ok(Some(Open { journal, fd, op })),
            Err(Errno::NOENT) => Ok(None),
            Err(errno) => Err(journal.io(op, "open", errno)),
        }
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), PunchError> {
        let mut done = 0;
        while done < buf.len() {
            match crate::file::retry(|| pwrite(&self.fd, &buf[done..], offset + done as u64)) {
                Ok(0) => return Err(self.journal.io(self.op, "pwrite", Errno::IO)),
                Ok(n) => done += n,
                Err(errno) => return Err(self.journal.io(self.op, "pwrite", errno)),
            }
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at `offset`; `false` when the file ends first.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<bool, PunchError> {
        let mut done = 0;
        while done < buf.len() {
            match crate::file::retry(|| pread(&self.fd, &mut buf[done..], offset + done as u64)) {
                Ok(0) => return Ok(false),
                Ok(n) => done += n,
                Err(errno) => return Err(self.journal.io(self.op, "pread", errno)),
            }
        }
        Ok(true)
    }

    fn sync(&self) -> Result<(), PunchError> {
        crate::file::retry(|| fs::fsync(&self.fd))
            .map_err(|errno| self.journal.io(self.op, "fsync", errno))
    }

    /// The newest complete header, if any slot holds one.
    pub(crate) fn latest(&self) -> Result<Option<Header>, PunchError> {
        let mut best: Option<Header> = None;
        for slot in 0..2 {
            let mut b = [0u8; HEADER_LEN];
            if !self.read_at(&mut b, slot * SLOT)? {
                continue;
            }
            // A header found in the other slot was not written there: ignore it.
            let found = Header::decode(&b).filter(|h| h.slot() == slot);
            if let Some(h) = found {
                if best.is_none_or(|best| h.seq > best.seq) {
                    best = Some(h);
                }
            }
        }
        Ok(best)
    }

    /// Makes `header` (and `saved`, in its region) durable. The caller
    /// moves nothing of the header's segment before this returns.
    pub(crate) fn record(
        &self,
        header: &mut Header,
        saved: Option<&Saved>,
    ) -> Result<(), PunchError> {
        header.saved = saved.is_some();
        header.extents = 0;
        header.data_len = 0;
        header.data_sum = 0;
        if let Some(saved) = saved {
            let list = saved.list_bytes();
            let region = REGIONS_AT + header.slot() * region_len(header.segment);
            self.write_at(&list, region)?;
            self.write_at(&saved.data, region + list.len() as u64)?;
            header.extents = saved.extents.len() as u64;
            header.data_len = saved.data.len() as u64;
            header.data_sum = Saved::sum(&list, &saved.data);
        }
        // One fsync covers region and header: if the header is durable but
        // the region is not, the region's checksum fails and the segment is
        // redone from the file, which is intact because its move starts
        // only after this fsync.
        self.write_at(&header.encode(), header.slot() * SLOT)?;
        #[cfg(test)]
        crate::mover::crash::point(crate::mover::crash::Point::BeforeJournalSync)?;
        self.sync()
    }

    /// The saved source of `header`'s segment, if its region checks out.
    pub(crate) fn saved(&self, header: &Header) -> Result<Option<Saved>, PunchError> {
        if !header.saved {
            return Ok(None);
        }
        let region = REGIONS_AT + header.slot() * region_len(header.segment);
        let mut list = vec![0u8; header.extents as usize * 16];
        let mut data = vec![0u8; header.data_len as usize];
        if !self.read_at(&mut list, region)?
            || !self.read_at(&mut data, region + list.len() as u64)?
            || Saved::sum(&list, &data) != header.data_sum
        {
            return Ok(None);
        }
        let extents: Vec<(u64, u64)> = list
            .chunks_exact(16)
            .map(|e| {
                (
                    u64::from_le_bytes(e[..8].try_into().unwrap()),
                    u64::from_le_bytes(e[8..].try_into().unwrap()),
                )
            })
            .collect();
        let fits = extents.iter().try_fold(0u64, |n, &(off, len)| {
            (off >= header.start && off.checked_add(len)? <= header.end).then_some(n + len)
        });
        if fits != Some(header.data_len) {
            return Ok(None);
        }
        Ok(Some(Saved { extents, data }))
    }

    /// Removes the journal and makes the removal durable: only after the
    /// target is synced in its final state.
    pub(crate) fn remove(self) -> Result<(), PunchError> {
        let journal = self.journal;
        let op = self.op;
        drop(self.fd);
        fs::unlink(&journal.path).map_err(|errno| journal.io(op, "unlink", errno))?;
        sync_dir(journal, op)
    }
}

/// Removes a journal that holds no complete record (its operation never
/// touched the target).
pub(crate) fn discard(journal: &ShiftJournal, op: Operation) -> Result<(), PunchError> {
    fs::unlink(&journal.path).map_err(|errno| journal.io(op, "unlink", errno))?;
    sync_dir(journal, op)
}

fn sync_dir(journal: &ShiftJournal, op: Operation) -> Result<(), PunchError> {
    let dir = match journal.path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let fd = fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| journal.io(op, "open(directory)", errno))?;
    crate::file::retry(|| fs::fsync(fd.as_fd()))
        .map_err(|errno| journal.io(op, "fsync(directory)", errno))
}

/// A 64-bit checksum that catches torn and stale writes (not an adversary):
/// four independent multiply-rotate lanes over 8-byte words, so checking an
/// 8 MiB segment costs a few milliseconds.
pub(crate) fn checksum(parts: &[&[u8]]) -> u64 {
    const K: [u64; 4] = [
        0x9e37_79b9_7f4a_7c15,
        0xc2b2_ae3d_27d4_eb4f,
        0x1656_67b1_9e37_79f9,
        0x85eb_ca77_c2b2_ae63,
    ];
    let mut lanes = K;
    let mut total = 0u64;
    for part in parts {
        total = total.wrapping_add(part.len() as u64);
        let mut blocks = part.chunks_exact(32);
        for block in &mut blocks {
            for (i, lane) in lanes.iter_mut().enumerate() {
                let w = u64::from_le_bytes(block[8 * i..8 * i + 8].try_into().unwrap());
                *lane = (*lane ^ w).wrapping_mul(K[i]).rotate_left(29);
            }
        }
        for (i, &byte) in blocks.remainder().iter().enumerate() {
            let lane = &mut lanes[i % 4];
            *lane = (*lane ^ u64::from(byte))
                .wrapping_mul(K[i % 4])
                .rotate_left(29);
        }
        // Mark the boundary so ("ab", "c") and ("a", "bc") differ.
        lanes[0] = (lanes[0] ^ total).wrapping_mul(K[1]);
    }
    let mut h = total;
    for (i, lane) in lanes.iter().enumerate() {
        h = (h ^ lane.rotate_left(16 * i as u32)).wrapping_mul(K[(i + 1) % 4]);
    }
    h ^ (h >> 29)
}
