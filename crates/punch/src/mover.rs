//! The data mover behind [`ShiftStrategy::MoveData`](crate::ShiftStrategy):
//! segments, the journal protocol around each, and resuming.
//!
//! The order of events for one segment, with a journal:
//! 1. (source shorter than the shift's length is not saved) or: read the
//!    segment's data extents into memory;
//! 2. write the header naming the segment (and the saved source into the
//!    header's region), fsync the journal;
//! 3. move the segment (data written to the destination, holes punched);
//! 4. `fdatasync` the file.
//!
//! A crash anywhere leaves the newest durable header naming a segment that
//! is not moved, part-way moved, or moved; everything before it in the
//! direction of the move is moved and synced. Resuming re-applies that
//! segment from the journal if its saved source checks out, else redoes
//! it from the file (whose source of that segment is then intact: see
//! [`Plan::saves`]), and goes on.

use crate::file::{Target, align_down, align_up};
use crate::journal::{Header, Open, Saved, ShiftJournal};
use crate::punch::punch_in;
use crate::{Exclusion, Operation, PunchError, PunchStrategy};
use rustix::fs::{fdatasync, fstat, fsync, ftruncate};
use sparsekit_extents::{Extent, ExtentKind, ExtentMap, MapOptions};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The segment when the source must be saved in the journal first (a shift
/// shorter than this): it bounds the memory and the journal's size.
const SAVED_SEGMENT: u64 = 8 << 20;
/// The largest segment moved without saving (a shift at least this long):
/// larger segments mean fewer syncs.
const MAX_SEGMENT: u64 = 64 << 20;
/// How much an insert maps at a time (it walks down, and the extent map
/// only walks up). Mapping every segment afresh would cost a SEEK_HOLE per
/// segment that runs to the next hole: tmpfs's walks the page cache, 2.8 ms
/// per call on a 1 GiB file of data (measured), 190 calls per GiB shifted.
#[cfg(not(test))]
const INSERT_WINDOW: u64 = 64 << 20;
/// Two test segments, so unit-test inserts cross windows.
#[cfg(test)]
const INSERT_WINDOW: u64 = 32 << 10;

/// What to move where: the operation, and its grid of segments.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    op: Operation,
    offset: u64,
    length: u64,
    size_before: u64,
    segment: u64,
    dev: u64,
    ino: u64,
}

impl Plan {
    pub(crate) fn new(t: &Target<'_>, offset: u64, length: u64, segment: Option<u64>) -> Plan {
        let segment = match segment {
            Some(s) => align_down(s, t.block).max(t.block),
            // Block sizes are powers of two up to 1 MiB, so both are aligned,
            // and so is `length`.
            None if length >= SAVED_SEGMENT => length.min(MAX_SEGMENT),
            None => SAVED_SEGMENT,
        };
        Plan {
            op: t.op,
            offset,
            length,
            size_before: t.size,
            segment,
            dev: 0,
            ino: 0,
        }
    }

    /// The plan a journal recorded, if `t` is the file it was recorded for
    /// and holds a size the operation can have left.
    pub(crate) fn from_header(
        t: &Target<'_>,
        h: &Header,
        journal: &ShiftJournal,
    ) -> Result<Plan, PunchError> {
        let mismatch = |what: String| PunchError::JournalMismatch {
            op: h.op,
            path: journal.path().to_owned(),
            what,
        };
        let st = fstat(t.fd).map_err(|errno| t.io("fstat", 0, errno))?;
        if (st.st_dev as u64, st.st_ino as u64) != (h.dev, h.ino) {
            return Err(mismatch(format!(
                "it was recorded for device {:#x} inode {}, and this file is device {:#x} inode {}",
                h.dev, h.ino, st.st_dev as u64, st.st_ino as u64
            )));
        }
        let plan = Plan {
            op: h.op,
            offset: h.offset,
            length: h.length,
            size_before: h.size_before,
            segment: h.segment,
            dev: h.dev,
            ino: h.ino,
        };
        let size = t.size;
        let (lo, hi) = plan.span();
        let first = plan.first();
        let at_ends = h.start == h.end && (h.start == first || h.start == plan.last());
        let in_span = h.start >= lo && h.end <= hi && (h.start < h.end || at_ends);
        let size_fits = match h.op {
            Operation::Insert => {
                size == plan.work_size() || (size == h.size_before && h.end == first)
            }
            // Once the last header is down, the collapse's truncate may
            // have stopped part-way: btrfs removes extents from the end and,
            // when the truncate fails (a SIGKILL can end its space
            // reservation), sets the size to the on-disk size it reached. All
            // data is in place below the final size, so any size between
            // the two is finished by truncating again.
            _ => {
                size == h.size_before
                    || (h.start == hi
                        && (plan.work_size() - h.length..=h.size_before).contains(&size))
            }
        };
        if hi > i64::MAX as u64 || !in_span {
            return Err(mismatch(format!(
                "it records segment {}..{} outside the range it moves ({lo}..{hi})",
                h.start, h.end
            )));
        }
        if !size_fits {
            return Err(mismatch(format!(
                "the file is {size} bytes, a size this {} (begun on {} bytes) cannot have left: the file was changed since",
                h.op, h.size_before
            )));
        }
        Ok(plan)
    }

    /// The source range the segments tile.
    fn span(&self) -> (u64, u64) {
        match self.op {
            Operation::Collapse => (self.offset + self.length, self.size_before),
            _ => (self.offset, self.size_before),
        }
    }

    /// The cursor before the first segment, in the direction of the move.
    fn first(&self) -> u64 {
        match self.op {
            Operation::Collapse => self.offset + self.length,
            _ => self.size_before,
        }
    }

    /// The cursor after the last segment.
    fn last(&self) -> u64 {
        match self.op {
            Operation::Collapse => self.size_before,
            _ => self.offset,
        }
    }

    /// The segment to move from `cursor` on (upwards for a collapse,
    /// downwards for an insert), on a fixed grid so a resumed run cuts the
    /// same segments.
    fn segment_at(&self, cursor: u64) -> Option<Range<u64>> {
        match self.op {
            Operation::Collapse => (cursor < self.size_before)
                .then(|| cursor..(cursor + self.segment).min(self.size_before)),
            _ => (cursor > self.offset)
                .then(|| align_down(cursor - 1, self.segment).max(self.offset)..cursor),
        }
    }

    fn after(&self, seg: &Range<u64>) -> u64 {
        match self.op {
            Operation::Collapse => seg.end,
            _ => seg.start,
        }
    }

    fn before(&self, seg: &Range<u64>) -> u64 {
        match self.op {
            Operation::Collapse => seg.start,
            _ => seg.end,
        }
    }

    fn dest(&self, src: u64) -> u64 {
        match self.op {
            Operation::Collapse => src - self.length,
            _ => src + self.length,
        }
    }

    /// Whether a segment's source must be saved before it moves: when the
    /// shift is shorter than a segment, the segment's destination overlaps
    /// its own source, so a half-moved segment can no longer be redone from
    /// the file. Otherwise a destination only ever overlaps sources already
    /// moved (below the segment for a collapse, above it for an insert), and
    /// redoing from the file is exact.
    fn saves(&self) -> bool {
        self.length < self.segment
    }

    /// The file's size while segments move.
    fn work_size(&self) -> u64 {
        match self.op {
            Operation::Collapse => self.size_before,
            _ => self.size_before + self.length,
        }
    }

    fn header(&self, seq: u64, seg: &Range<u64>) -> Header {
        Header {
            seq,
            op: self.op,
            offset: self.offset,
            length: self.length,
            size_before: self.size_before,
            dev: self.dev,
            ino: self.ino,
            segment: self.segment,
            start: seg.start,
            end: seg.end,
            extents: 0,
            data_len: 0,
            data_sum: 0,
            saved: false,
        }
    }
}

/// Moves the segments of a [`Plan`], with or without a journal.
pub(crate) struct Mover<'a, 'fd> {
    t: &'a Target<'fd>,
    plan: Plan,
    chunk: u64,
    buf: Vec<u8>,
    stop: Option<&'a Arc<AtomicBool>>,
    /// Keeps other writers out (a write lease); checked with the stop flag.
    guard: Option<&'a dyn Exclusion>,
    journal: Option<Open<'a>>,
    /// The next header's sequence number.
    seq: u64,
    /// The next segment boundary, in the direction of the move.
    cursor: u64,
    /// Without a journal: the source offset up to which (collapse) or down
    /// to which (insert) everything has moved, for the error message.
    done: u64,
    written: u64,
    changed: bool,
    extents: Extents<'a>,
}

/// Where segments get their extents: a collapse consumes one lazy map of
/// the rest of the span upwards (every write lands below the map's
/// position, so what it has yet to read is untouched source); an insert
/// maps windows downwards and consumes each from the top (every write lands
/// at or above the part consumed).
#[derive(Default)]
struct Extents<'a> {
    up: Option<ExtentMap<'a>>,
    /// Where the next segment of `up` must start.
    up_at: u64,
    /// An extent of `up` that reaches into the next segment: the rest of it.
    carry: Option<Extent>,
    window: Vec<Extent>,
    window_range: Range<u64>,
}

impl<'a, 'fd> Mover<'a, 'fd> {
    pub(crate) fn new(
        t: &'a Target<'fd>,
        plan: Plan,
        chunk: u64,
        stop: Option<&'a Arc<AtomicBool>>,
        guard: Option<&'a dyn Exclusion>,
    ) -> Self {
        Mover {
            t,
            plan,
            chunk: align_down(chunk, t.block).max(t.block),
            buf: Vec::new(),
            stop,
            guard,
            journal: None,
            seq: 1,
            cursor: plan.first(),
            done: plan.first(),
            written: 0,
            changed: false,
            extents: Extents::default(),
        }
    }

    /// Runs the operation from the start; with a journal, creates it first.
    pub(crate) fn fresh(mut self, journal: Option<&'a ShiftJournal>) -> Result<u64, PunchError> {
        self.t.require_in_place_writes()?;
        self.t.require_readable()?;
        if let Err(stopped) = self.checkpoint() {
            // Through `outcome`, which says that nothing was changed.
            return self.outcome(Err(stopped));
        }
        if let Some(journal) = journal {
            let st = fstat(self.t.fd).map_err(|errno| self.t.io("fstat", 0, errno))?;
            self.plan.dev = st.st_dev as u64;
            self.plan.ino = st.st_ino as u64;
            let first = self.plan.first();
            self.journal = Some(Open::create(
                journal,
                &self.plan.header(1, &(first..first)),
            )?);
            self.seq = 2;
        }
        let result = self.start();
        self.outcome(result)
    }

    fn start(&mut self) -> Result<(), PunchError> {
        #[cfg(test)]
        crash::point(crash::Point::JournalCreated)?;
        if self.plan.op == Operation::Insert {
            retry_truncate(self.t, self.plan.work_size())?;
        }
        self.steps()
    }

    /// Finishes what `header` (the newest in `open`) records.
    pub(crate) fn resume(mut self, open: Open<'a>, header: Header) -> Result<u64, PunchError> {
        self.t.require_in_place_writes()?;
        self.t.require_readable()?;
        let saved = open.saved(&header)?;
        self.journal = Some(open);
        self.seq = header.seq + 1;
        // The file may be part-way changed: every error from here on must
        // point at the journal.
        self.changed = true;
        let result = self.resume_steps(header.start..header.end, saved);
        self.outcome(result)
    }

    fn resume_steps(&mut self, seg: Range<u64>, saved: Option<Saved>) -> Result<(), PunchError> {
        if self.plan.op == Operation::Insert && self.t.size == self.plan.size_before {
            retry_truncate(self.t, self.plan.work_size())?;
        }
        self.cursor = match saved {
            Some(saved) => {
                self.apply(&seg, &saved)?;
                self.sync_file()?;
                self.plan.after(&seg)
            }
            // Not saved, or the save never became durable (so the move had
            // not begun): the file still holds this segment's source.
            None => self.plan.before(&seg),
        };
        self.steps()
    }

    /// The one place the segment loop asks whether it may go on, at a
    /// boundary where the file and the journal agree: the stop flag now;
    /// any other per-segment guard (say, a write lease another opener
    /// broke) belongs here too.
    fn checkpoint(&self) -> Result<(), PunchError> {
        if self.stop.is_some_and(|flag| flag.load(Ordering::Relaxed)) {
            return Err(PunchError::Stopped {
                op: self.t.op,
                changed: self.changed,
                state: String::new(),
            });
        }
        if let Some(Err(broken)) = self.guard.map(|g| g.check()) {
            // `outcome` says what the file holds, as for the stop flag.
            return Err(PunchError::LeaseBroken {
                op: self.t.op,
                offset: self.cursor,
                broken,
                state: String::new(),
                changed: self.changed,
            });
        }
        Ok(())
    }

    fn steps(&mut self) -> Result<(), PunchError> {
        loop {
            self.checkpoint()?;
            let Some(seg) = self.plan.segment_at(self.cursor) else {
                break;
            };
            self.segment(&seg)?;
            self.cursor = self.plan.after(&seg);
        }
        self.last_step()
    }

    fn segment(&mut self, seg: &Range<u64>) -> Result<(), PunchError> {
        if self.journal.is_some() && self.plan.saves() {
            let saved = self.load(seg)?;
            self.record(seg, Some(&saved))?;
            self.apply(seg, &saved)?;
        } else {
            if self.journal.is_some() {
                self.record(seg, None)?;
            }
            self.copy_segment(seg)?;
        }
        self.sync_file()?;
        #[cfg(test)]
        crash::point(crash::Point::AfterSegment)?;
        Ok(())
    }

    /// The step after the last segment: a collapse truncates, an insert
    /// punches its range; then, with a journal, the file is fsynced and the
    /// journal removed.
    fn last_step(&mut self) -> Result<(), PunchError> {
        let last = self.plan.last();
        if self.journal.is_some() {
            self.record(&(last..last), None)?;
        }
        let (offset, length) = (self.plan.offset, self.plan.length);
        match self.plan.op {
            Operation::Collapse => {
                retry_truncate(self.t, self.plan.size_before - length)?;
                self.changed = true;
            }
            _ => self.hole(offset, length)?,
        }
        self.done = last;
        if let Some(journal) = self.journal.take() {
            if let Err(errno) = crate::file::retry(|| fsync(self.t.fd)) {
                self.journal = Some(journal);
                return Err(self.t.io("fsync", 0, errno));
            }
            #[cfg(test)]
            if let Err(e) = crash::point(crash::Point::BeforeJournalRemove) {
                self.journal = Some(journal);
                return Err(e);
            }
            journal.remove()?;
        }
        Ok(())
    }

    fn record(&mut self, seg: &Range<u64>, saved: Option<&Saved>) -> Result<(), PunchError> {
        let mut header = self.plan.header(self.seq, seg);
        let journal = self.journal.as_ref().expect("record needs a journal");
        journal.record(&mut header, saved)?;
        self.seq += 1;
        #[cfg(test)]
        crash::point(crash::Point::AfterJournalSync)?;
        Ok(())
    }

    fn sync_file(&self) -> Result<(), PunchError> {
        if self.journal.is_some() {
            crate::file::retry(|| fdatasync(self.t.fd))
                .map_err(|errno| self.t.io("fdatasync", 0, errno))?;
        }
        Ok(())
    }

    /// The extents of `seg`, clipped to it.
    fn map(&mut self, seg: &Range<u64>) -> Result<Vec<Extent>, PunchError> {
        let op = self.t.op;
        let err = |source| PunchError::Map { op, source };
        let fd = &self.t.fd;
        let x = &mut self.extents;
        let mut out = Vec::new();
        if self.plan.op == Operation::Collapse {
            if x.up.is_none() || x.up_at != seg.start {
                let range = seg.start..self.plan.size_before;
                x.up = Some(MapOptions::new().range(range).map(fd).map_err(err)?);
                x.carry = None;
            }
            let map = x.up.as_mut().expect("mapped above");
            loop {
                let ext = match x.carry.take() {
                    Some(ext) => ext,
                    None => match map.next() {
                        Some(ext) => ext.map_err(err)?,
                        None => break,
                    },
                };
                if ext.end() > seg.end {
                    if ext.offset < seg.end {
                        out.push(Extent::new(ext.offset..seg.end, ext.kind));
                    }
                    let rest = ext.offset.max(seg.end)..ext.end();
                    x.carry = Some(Extent::new(rest, ext.kind));
                    break;
                }
                out.push(ext);
            }
            x.up_at = seg.end;
            return Ok(out);
        }
        if seg.start < x.window_range.start || seg.end > x.window_range.end {
            let lo = align_down(
                seg.end.saturating_sub(INSERT_WINDOW.max(self.plan.segment)),
                self.plan.segment,
            )
            .clamp(self.plan.offset, seg.start);
            x.window_range = lo..seg.end;
            x.window = MapOptions::new()
                .range(x.window_range.clone())
                .map(fd)
                .map_err(err)?
                .collect::<Result<_, _>>()
                .map_err(err)?;
        }
        for ext in &x.window {
            let (lo, hi) = (ext.offset.max(seg.start), ext.end().min(seg.end));
            if lo < hi {
                out.push(Extent::new(lo..hi, ext.kind));
            }
        }
        Ok(out)
    }

    /// Reads the segment's data extents into memory (at most a segment).
    fn load(&mut self, seg: &Range<u64>) -> Result<Saved, PunchError> {
        let mut saved = Saved::default();
        for ext in self.map(seg)? {
            if ext.kind == ExtentKind::Data {
                let at = saved.data.len();
                saved.data.resize(at + ext.length as usize, 0);
                self.t.read_exact(&mut saved.data[at..], ext.offset)?;
                saved.extents.push((ext.offset, ext.length));
            }
        }
        Ok(saved)
    }

    /// Writes a saved segment to its destination: its data extents, and
    /// holes punched between them. Idempotent, whatever part of it was done.
    fn apply(&mut self, seg: &Range<u64>, saved: &Saved) -> Result<(), PunchError> {
        // Counted as changed before the first write: a write that fails may
        // still have changed bytes, and then only the journal can finish.
        self.changed = true;
        let mut pos = seg.start;
        let mut at = 0usize;
        for &(off, len) in &saved.extents {
            if off > pos {
                self.hole(self.plan.dest(pos), off - pos)?;
            }
            let data = &saved.data[at..at + len as usize];
            if let Err((e, done)) = self.t.write_all(data, self.plan.dest(off)) {
                self.written += done;
                return Err(e);
            }
            self.written += len;
            at += len as usize;
            pos = off + len;
        }
        if pos < seg.end {
            self.hole(self.plan.dest(pos), seg.end - pos)?;
        }
        Ok(())
    }

    /// Moves a segment straight from the file: each extent in the direction
    /// of the move (ascending for a collapse, descending for an insert), so
    /// a write never lands on source not yet read.
    fn copy_segment(&mut self, seg: &Range<u64>) -> Result<(), PunchError> {
        let mut extents = self.map(seg)?;
        #[cfg(test)]
        lying_map::apply(&mut extents);
        if self.plan.op == Operation::Insert {
            extents.reverse();
        }
        for ext in extents {
            let dst = self.plan.dest(ext.offset);
            match ext.kind {
                ExtentKind::Data => self.copy(ext.offset, dst, ext.length)?,
                // The map is a hint, not a proof: btrfs before 6.2 reports
                // data whose write has not completed as a hole even after
                // `sync_file_range` waited (its `find_delalloc_subrange`
                // looks only two cached extents ahead; upstream
                // 8ddc8274e4be, not in 6.1.y). Punching the destination on
                // its word lost that data (the 6.1 guest's model runs), so a
                // hole is read first (holes read at memory speed) and bytes
                // that are not zeros move as data.
                ExtentKind::Hole | ExtentKind::Unwritten
                    if self.reads_as_zeros(ext.offset, ext.length)? =>
                {
                    self.hole(dst, ext.length)?;
                    self.done = self.plan.after(&ext.range());
                }
                ExtentKind::Hole | ExtentKind::Unwritten => {
                    self.copy(ext.offset, dst, ext.length)?
                }
            }
        }
        Ok(())
    }

    /// Whether `offset..offset + len` of the source reads as zeros.
    fn reads_as_zeros(&mut self, offset: u64, len: u64) -> Result<bool, PunchError> {
        let want = self.chunk.min(len) as usize;
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        let end = offset + len;
        let mut at = offset;
        while at < end {
            let n = (end - at).min(self.chunk) as usize;
            self.t.read_exact(&mut self.buf[..n], at)?;
            if !sparsekit_extents::is_zero(&self.buf[..n]) {
                return Ok(false);
            }
            at += n as u64;
        }
        Ok(true)
    }

    /// Copies `src..src + len` to `dst` in chunks whose offsets stay
    /// block-aligned (except at the end of the file): ascending when moving
    /// down, descending when moving up.
    fn copy(&mut self, src: u64, dst: u64, len: u64) -> Result<(), PunchError> {
        let want = self.chunk.min(len) as usize;
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        let down = dst < src;
        let (mut lo, mut hi) = (src, src + len);
        while lo < hi {
            let (from, to) = if down {
                (lo, (lo + self.chunk).min(hi))
            } else {
                (
                    align_up(hi.saturating_sub(self.chunk), self.t.block).max(lo),
                    hi,
                )
            };
            let n = (to - from) as usize;
            self.t.read_exact(&mut self.buf[..n], from)?;
            let at = dst + (from - src);
            if let Err((e, done)) = self.t.write_all(&self.buf[..n], at) {
                self.written += done;
                self.changed |= done > 0;
                return Err(e);
            }
            self.changed = true;
            self.written += n as u64;
            if down {
                lo = to;
                self.done = to;
            } else {
                hi = from;
                self.done = from;
            }
        }
        Ok(())
    }

    /// Makes `offset..offset + length` a hole (or zeros where the
    /// filesystem cannot punch).
    fn hole(&mut self, offset: u64, length: u64) -> Result<(), PunchError> {
        let size = self.plan.work_size();
        match punch_in(self.t, offset, length, size, PunchStrategy::Auto) {
            Ok((_, _, written)) => {
                self.changed = true;
                self.written += written;
                Ok(())
            }
            Err(e) => {
                self.changed |= e.changed_file();
                Err(e)
            }
        }
    }

    /// The operation's result: on failure, undo what can be undone when
    /// nothing moved yet, else say what the file holds and how to finish.
    fn outcome(mut self, result: Result<(), PunchError>) -> Result<u64, PunchError> {
        let e = match result {
            Ok(()) => return Ok(self.written),
            Err(e) => e,
        };
        // A simulated crash leaves everything as a real one would.
        #[cfg(test)]
        if crash::is_crash(&e) {
            return Err(e);
        }
        let op = self.t.op;
        self.changed |= matches!(&e, PunchError::Partial { .. });
        if !self.changed && self.undo() {
            return Err(match e {
                PunchError::Stopped { op, .. } => PunchError::Stopped {
                    op,
                    changed: false,
                    state: "nothing was changed".into(),
                },
                PunchError::LeaseBroken {
                    op, offset, broken, ..
                } => PunchError::LeaseBroken {
                    op,
                    offset,
                    broken,
                    state: "nothing was changed".into(),
                    changed: false,
                },
                e => e,
            });
        }
        let state = self.state();
        Err(match e {
            PunchError::Stopped { op, .. } => PunchError::Stopped {
                op,
                changed: true,
                state,
            },
            PunchError::LeaseBroken {
                op, offset, broken, ..
            } => PunchError::LeaseBroken {
                op,
                offset,
                broken,
                state,
                changed: true,
            },
            e => e.partial(op, state),
        })
    }

    /// Shrinks an extended insert back and removes the journal; `false` if
    /// that failed (then the file counts as changed).
    fn undo(&mut self) -> bool {
        if self.plan.op == Operation::Insert
            && retry_truncate(self.t, self.plan.size_before).is_err()
        {
            return false;
        }
        self.journal.take().is_none_or(|j| j.remove().is_ok())
    }

    /// What the file holds now, and how to finish.
    fn state(&self) -> String {
        let (offset, length, size) = (self.plan.offset, self.plan.length, self.plan.size_before);
        if let Some(journal) = &self.journal {
            let (lo, hi) = self.plan.span();
            let moved = match self.plan.op {
                Operation::Collapse => self.cursor - lo,
                _ => hi - self.cursor,
            };
            return format!(
                "{moved} of {} bytes are moved and synced, and the journal {} records the progress; resuming from it finishes the {}",
                hi - lo,
                journal.journal.path().display(),
                self.plan.op
            );
        }
        let done = self.done;
        match self.plan.op {
            Operation::Collapse if done >= size => format!(
                "all data is in place but the file keeps its old size {size}; truncating it to {} finishes the collapse",
                size - length
            ),
            Operation::Collapse => format!(
                "the file keeps its size {size}; bytes below {} hold the collapsed content and bytes from {} on still hold the old content; collapsing offset {} length {length} finishes the job",
                done - length,
                done - length,
                done - length
            ),
            _ if done <= offset => format!(
                "all data is in place at its new offset (the file is {} bytes); punching offset {offset} length {length} finishes the insert",
                size + length
            ),
            _ => format!(
                "the file is already {} bytes long; bytes from {} on hold their final content and bytes below it still hold the old content; moving bytes {offset}..{done} up by {length} and punching offset {offset} length {length} finish the insert",
                size + length,
                done + length
            ),
        }
    }
}

fn retry_truncate(t: &Target<'_>, size: u64) -> Result<(), PunchError> {
    crate::file::retry(|| ftruncate(t.fd, size)).map_err(|errno| t.io("ftruncate", size, errno))
}

/// Test-only crash points: the n-th time a point is reached, the operation
/// returns at once with a "simulated crash" error and cleans nothing up,
/// leaving the file and journal as a `SIGKILL` there would.
/// Test switch: the map calls every extent a hole, as btrfs before 6.2
/// does for data whose write has not completed.
#[cfg(test)]
pub(crate) mod lying_map {
    use sparsekit_extents::{Extent, ExtentKind};
    use std::cell::Cell;

    thread_local! {
        static ON: Cell<bool> = const { Cell::new(false) };
    }

    /// Every extent a hole while the returned guard lives.
    pub(crate) fn every_extent_a_hole() -> Reset {
        ON.with(|c| c.set(true));
        Reset
    }

    pub(crate) struct Reset;

    impl Drop for Reset {
        fn drop(&mut self) {
            ON.with(|c| c.set(false));
        }
    }

    pub(super) fn apply(extents: &mut [Extent]) {
        if ON.with(Cell::get) {
            for e in extents {
                *e = Extent::new(e.range(), ExtentKind::Hole);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod crash {
    use crate::{Operation, PunchError};
    use rustix::io::Errno;
    use std::cell::{Cell, RefCell};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    const CALL: &str = "simulated crash";

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum Point {
        /// The journal was created; nothing else happened.
        JournalCreated,
        /// A header (and its region) was written but not fsynced.
        BeforeJournalSync,
        /// A header is durable; its segment has not begun to move.
        AfterJournalSync,
        /// A segment moved and was synced.
        AfterSegment,
        /// The file is final and synced; the journal is still there.
        BeforeJournalRemove,
    }

    thread_local! {
        static ARMED: Cell<Option<(Point, u64)>> = const { Cell::new(None) };
        static FIRED: Cell<bool> = const { Cell::new(false) };
        static STOP: RefCell<Option<(Arc<AtomicBool>, u64)>> = const { RefCell::new(None) };
    }

    /// Set `flag` once `skip + 1` segments have moved, as a signal handler
    /// would between two segments.
    pub(crate) fn stop_after_segments(flag: Arc<AtomicBool>, skip: u64) {
        STOP.with(|c| *c.borrow_mut() = Some((flag, skip)));
    }

    /// Disarms everything when dropped, so a failing test leaves nothing armed.
    pub(crate) struct Reset;

    impl Drop for Reset {
        fn drop(&mut self) {
            ARMED.with(|c| c.set(None));
            STOP.with(|c| *c.borrow_mut() = None);
        }
    }

    /// Crash the `(skip + 1)`-th time `point` is reached.
    pub(crate) fn arm(point: Point, skip: u64) {
        ARMED.with(|c| c.set(Some((point, skip))));
        FIRED.with(|c| c.set(false));
    }

    /// Whether the armed crash happened (and disarms it).
    pub(crate) fn fired() -> bool {
        ARMED.with(|c| c.set(None));
        FIRED.with(|c| c.replace(false))
    }

    pub(crate) fn point(point: Point) -> Result<(), PunchError> {
        if point == Point::AfterSegment {
            STOP.with(|c| {
                let mut stop = c.borrow_mut();
                match stop.as_mut() {
                    Some((flag, 0)) => {
                        flag.store(true, Ordering::Relaxed);
                        *stop = None;
                    }
                    Some((_, n)) => *n -= 1,
                    None => {}
                }
            });
        }
        ARMED.with(|c| match c.get() {
            Some((p, 0)) if p == point => {
                c.set(None);
                FIRED.with(|f| f.set(true));
                Err(PunchError::Io {
                    op: Operation::Collapse,
                    call: CALL,
                    offset: 0,
                    errno: Errno::CANCELED,
                })
            }
            Some((p, n)) if p == point => {
                c.set(Some((p, n - 1)));
                Ok(())
            }
            _ => Ok(()),
        })
    }

    pub(crate) fn is_crash(e: &PunchError) -> bool {
        matches!(e, PunchError::Io { call, .. } if *call == CALL)
    }
}
