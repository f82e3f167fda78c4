//! Walks both extent maps at once and turns them into read jobs: ranges
//! that are holes (or unwritten) in both are skipped, the rest is packed
//! into requests of at most one buffer, read on the side(s) with data.

use super::report::{AllocationDifference, AllocationReport, Which};
use crate::plan::READ_THROUGH;
use sparsekit_extents::{Extent, ExtentKind, ExtentMap, MapError};
use std::ops::Range;

/// A stretch where neither file's extent changes kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    pub(crate) range: Range<u64>,
    pub(crate) a: ExtentKind,
    pub(crate) b: ExtentKind,
}

impl Segment {
    fn reads_a(&self) -> bool {
        self.a.needs_reading()
    }
    fn reads_b(&self) -> bool {
        self.b.needs_reading()
    }
    fn reads(&self) -> bool {
        self.reads_a() || self.reads_b()
    }
}

/// The two maps merged lazily: memory stays constant in the number of
/// extents (each map holds one batch; this holds one extent per side).
#[derive(Debug)]
pub(crate) struct Merge<'a> {
    a: ExtentMap<'a>,
    b: ExtentMap<'a>,
    cur_a: Option<Extent>,
    cur_b: Option<Extent>,
    pos: u64,
    end: u64,
}

impl<'a> Merge<'a> {
    /// `a` and `b` map the same range `0..end`.
    pub(crate) fn new(a: ExtentMap<'a>, b: ExtentMap<'a>, end: u64) -> Self {
        Merge {
            a,
            b,
            cur_a: None,
            cur_b: None,
            pos: 0,
            end,
        }
    }

    pub(crate) fn maps(&self) -> (&ExtentMap<'a>, &ExtentMap<'a>) {
        (&self.a, &self.b)
    }

    /// The extent of `map` covering `pos`. A map that ends early (the file
    /// shrank) yields data, so the read finds out and reports it.
    fn covering(
        map: &mut ExtentMap<'a>,
        cur: &mut Option<Extent>,
        pos: u64,
        end: u64,
    ) -> Result<Extent, MapError> {
        while cur.is_none_or(|e| e.end() <= pos) {
            match map.next() {
                Some(e) => *cur = Some(e?),
                None => {
                    *cur = Some(Extent::new(pos..end, ExtentKind::Data));
                }
            }
        }
        Ok(cur.expect("set above"))
    }
}

impl Iterator for Merge<'_> {
    type Item = Result<Segment, (Which, MapError)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.end {
            return None;
        }
        let (pos, end) = (self.pos, self.end);
        let ea = match Self::covering(&mut self.a, &mut self.cur_a, pos, end) {
            Ok(e) => e,
            Err(e) => {
                self.end = pos;
                return Some(Err((Which::A, e)));
            }
        };
        let eb = match Self::covering(&mut self.b, &mut self.cur_b, pos, end) {
            Ok(e) => e,
            Err(e) => {
                self.end = pos;
                return Some(Err((Which::B, e)));
            }
        };
        let stop = ea.end().min(eb.end()).min(end);
        self.pos = stop;
        Some(Ok(Segment {
            range: pos..stop,
            a: ea.kind,
            b: eb.kind,
        }))
    }
}

/// One read request: compare `logical`; read `read` (the same range
/// widened to the O_DIRECT alignment) on the sides flagged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Job {
    pub(crate) seq: u64,
    pub(crate) logical: Range<u64>,
    pub(crate) read: Range<u64>,
    pub(crate) read_a: bool,
    pub(crate) read_b: bool,
    /// Segments with data in the job: many in one request means small
    /// extents, which `O_DIRECT` turns into as many small device reads.
    pub(crate) fragments: u64,
}

/// Records where one side allocates what the other leaves as a hole.
#[derive(Debug)]
pub(crate) struct Allocation {
    pub(crate) report: AllocationReport,
    limit: usize,
}

impl Allocation {
    pub(crate) fn new(limit: usize) -> Self {
        Allocation {
            report: AllocationReport::default(),
            limit,
        }
    }

    fn note(&mut self, seg: &Segment) {
        let (a, b) = (seg.a != ExtentKind::Hole, seg.b != ExtentKind::Hole);
        if a == b {
            return;
        }
        let which = if a { Which::A } else { Which::B };
        let len = seg.range.end - seg.range.start;
        match which {
            Which::A => self.report.only_a += len,
            Which::B => self.report.only_b += len,
        }
        let r = &mut self.report;
        if let Some(last) = r.differences.last_mut() {
            if last.allocated_in == which && last.offset + last.length == seg.range.start {
                last.length += len;
                return;
            }
        }
        if r.differences.len() >= self.limit {
            r.truncated = true;
        } else {
            r.differences.push(AllocationDifference {
                offset: seg.range.start,
                length: len,
                allocated_in: which,
            });
        }
    }
}

/// Packs segments into jobs.
#[derive(Debug)]
pub(crate) struct Planner<'a> {
    merge: Merge<'a>,
    /// The rest of a segment that did not fit the last job.
    carry: Option<Segment>,
    /// Bytes per request (a multiple of `align`).
    chunk: u64,
    align: u64,
    /// Holes in both shorter than this between data are read through: one
    /// larger request costs less than two (the kernel fills holes with
    /// zeros without I/O).
    gap: u64,
    seq: u64,
    /// Bytes of the range that no job reads.
    pub(crate) skipped: u64,
    pub(crate) allocation: Option<Allocation>,
}

impl<'a> Planner<'a> {
    pub(crate) fn new(
        merge: Merge<'a>,
        chunk: u64,
        align: u64,
        allocation: Option<Allocation>,
    ) -> Self {
        debug_assert!(align.is_power_of_two() && chunk % align == 0 && chunk > 0);
        Planner {
            merge,
            carry: None,
            chunk,
            align,
            gap: READ_THROUGH,
            seq: 0,
            skipped: 0,
            allocation,
        }
    }

    pub(crate) fn merge(&self) -> &Merge<'a> {
        &self.merge
    }

    /// The next segment: the carried rest, or a new one (noted for the
    /// allocation comparison exactly once).
    fn pull(&mut self) -> Option<Result<Segment, (Which, MapError)>> {
        if let Some(c) = self.carry.take() {
            return Some(Ok(c));
        }
        let seg = self.merge.next()?;
        if let (Ok(s), Some(alloc)) = (&seg, &mut self.allocation) {
            alloc.note(s);
        }
        Some(seg)
    }

    /// The next job, `None` when the range is done.
    pub(crate) fn next_job(&mut self) -> Option<Result<Job, (Which, MapError)>> {
        let first = loop {
            match self.pull()? {
                Err(e) => return Some(Err(e)),
                Ok(s) if s.reads() => break s,
                Ok(s) => self.skipped += s.range.end - s.range.start,
            }
        };
        let start = first.range.start;
        let read_start = start / self.align * self.align;
        let limit = read_start + self.chunk;
        let (mut read_a, mut read_b) = (false, false);
        let mut fragments = 0;
        // End of the last segment with data taken, and of everything taken.
        let mut data_end = start;
        let mut taken_end = start;
        let mut seg = first;
        loop {
            let long_hole = !seg.reads() && seg.range.end - seg.range.start >= self.gap;
            if long_hole || seg.range.start >= limit {
                self.carry = Some(seg);
                break;
            }
            let take_end = seg.range.end.min(limit);
            if seg.reads() {
                read_a |= seg.reads_a();
                read_b |= seg.reads_b();
                data_end = take_end;
                fragments += 1;
            }
            taken_end = take_end;
            if take_end < seg.range.end {
                self.carry = Some(Segment {
                    range: take_end..seg.range.end,
                    ..seg
                });
                break;
            }
            seg = match self.pull() {
                None => break,
                Some(Ok(s)) => s,
                Some(Err(e)) => return Some(Err(e)),
            };
        }
        // A short hole taken at the end leads to no data: not read.
        self.skipped += taken_end - data_end;
        let job = Job {
            seq: self.seq,
            logical: start..data_end,
            read: read_start..data_end.next_multiple_of(self.align),
            read_a,
            read_b,
            fragments,
        };
        self.seq += 1;
        Some(Ok(job))
    }

    /// Walks the rest of the maps without reading (the content comparison
    /// stopped early; the allocation comparison still wants the whole map).
    pub(crate) fn drain(&mut self) -> Result<(), (Which, MapError)> {
        self.carry = None;
        if self.allocation.is_none() {
            return Ok(());
        }
        while let Some(seg) = self.pull() {
            seg?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sparsekit_extents::{MapOptions, Method};
    use std::os::unix::fs::FileExt;

    fn file(data: &[Range<u64>], size: u64) -> std::fs::File {
        let f = tempfile::tempfile_in("/tmp").unwrap();
        for r in data {
            f.write_all_at(&vec![0xa5; (r.end - r.start) as usize], r.start)
                .unwrap();
        }
        f.set_len(size).unwrap();
        f
    }

    fn jobs(a: &std::fs::File, b: &std::fs::File, size: u64, chunk: u64) -> (Vec<Job>, u64) {
        let map = |f| MapOptions::new().method(Method::Seek).map(f).unwrap();
        let mut p = Planner::new(Merge::new(map(a), map(b), size), chunk, 4096, None);
        let jobs = std::iter::from_fn(|| p.next_job().map(Result::unwrap)).collect();
        (jobs, p.skipped)
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // one data range per file
    fn holes_in_both_are_skipped_and_one_sided_data_read_on_that_side() {
        let size = 8 << 20;
        let a = file(&[0..(1 << 20)], size);
        let b = file(&[(4 << 20)..(5 << 20)], size);
        let (jobs, skipped) = jobs(&a, &b, size, 2 << 20);
        assert_eq!(
            jobs,
            vec![
                Job {
                    seq: 0,
                    logical: 0..1 << 20,
                    read: 0..1 << 20,
                    read_a: true,
                    read_b: false,
                    fragments: 1
                },
                Job {
                    seq: 1,
                    logical: 4 << 20..5 << 20,
                    read: 4 << 20..5 << 20,
                    read_a: false,
                    read_b: true,
                    fragments: 1
                },
            ]
        );
        assert_eq!(skipped, 6 << 20);
    }

    #[test]
    fn small_holes_are_read_through_and_requests_split_at_the_chunk() {
        // 4 KiB of data every 16 KiB: one request per chunk.
        let size = 4 << 20;
        let data: Vec<_> = (0..size / 16384)
            .map(|i| i * 16384..i * 16384 + 4096)
            .collect();
        let a = file(&data, size);
        let b = file(&data, size);
        let (jobs, skipped) = jobs(&a, &b, size, 1 << 20);
        assert_eq!(jobs.len(), 4);
        // Each request ends with the last data before the chunk boundary;
        // the hole after it is not read.
        assert_eq!(jobs[0].logical, 0..(1 << 20) - 12288);
        assert!(
            jobs.iter()
                .all(|j| j.read_a && j.read_b && j.fragments == 64)
        );
        assert_eq!(jobs[3].logical, 3 << 20..(4 << 20) - 12288);
        assert_eq!(skipped, 4 * 12288);
    }

    #[test]
    fn allocation_differences_are_merged_and_limited() {
        let size = 1 << 20;
        let a = file(&[0..8192, 65536..69632, 131072..135168], size);
        let b = file(&[], size);
        let map = |f| MapOptions::new().method(Method::Seek).map(f).unwrap();
        let mut p = Planner::new(
            Merge::new(map(&a), map(&b), size),
            1 << 20,
            4096,
            Some(Allocation::new(2)),
        );
        p.drain().unwrap();
        let r = p.allocation.unwrap().report;
        assert_eq!(r.only_a, 16384);
        assert_eq!(r.only_b, 0);
        assert_eq!(r.differences.len(), 2);
        assert!(r.truncated);
        assert_eq!(r.differences[0].length, 8192);
    }
}
