//! Turns the source's extent map into jobs: runs of pieces (data to read
//! into one buffer, holes to skip or make) that a reader fills and the
//! writer applies.

use sparsekit_extents::{ExtentKind, ExtentMap, MapError};

/// The most pieces one job carries: many small extents share a buffer
/// (coalesced requests), but a job stays cheap to hand over.
const MAX_PIECES: usize = 1024;

/// The hole size worth reading through rather than splitting a request
/// (copy and compare).
pub(crate) const READ_THROUGH: u64 = 64 << 10;

/// One part of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Piece {
    /// Source bytes `off..off+len` go to `buf[buf_off..buf_off+len]`, then
    /// to the destination at `off`. With O_DIRECT the range is widened to
    /// the alignment and may run past the source's end (read as zeros,
    /// never written past it).
    Data { off: u64, len: u64, buf_off: usize },
    /// A range that reads as zeros: a hole or unwritten extent of the source
    /// (`detected` false), or an all-zero block found in data (`true`).
    Hole { off: u64, len: u64, detected: bool },
}

/// Pieces in file order, with the buffer bytes their data needs.
#[derive(Debug, Default)]
pub(crate) struct Job {
    pub(crate) pieces: Vec<Piece>,
    /// What to read: each data piece lies in one read, and a read may
    /// span several pieces and the short holes between them
    /// ([`Planner::read_through`]).
    pub(crate) reads: Vec<Read>,
    pub(crate) buf_used: usize,
}

/// One read request: source bytes `off..off+len` into
/// `buf[buf_off..buf_off+len]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Read {
    pub(crate) off: u64,
    pub(crate) len: u64,
    pub(crate) buf_off: usize,
}

impl Read {
    fn end(&self) -> u64 {
        self.off + self.len
    }
}

/// Walks an [`ExtentMap`] lazily and packs its extents into jobs.
#[derive(Debug)]
pub(crate) struct Planner<'fd> {
    map: ExtentMap<'fd>,
    /// The rest of an extent that did not fit in the last job.
    carry: Option<(u64, u64, bool)>,
    buf_size: usize,
    /// O_DIRECT alignment of offsets and lengths (1: none).
    align: u64,
    /// End of the last data piece planned, so widened pieces never overlap.
    data_end: u64,
    /// The longest hole read through to join two data pieces in one read.
    read_through: u64,
    /// Jobs handed out so far.
    jobs: u64,
}

impl<'fd> Planner<'fd> {
    pub(crate) fn new(map: ExtentMap<'fd>, buf_size: usize, align: u64) -> Self {
        debug_assert!(align.is_power_of_two() && buf_size as u64 % align == 0);
        Planner {
            map,
            carry: None,
            buf_size,
            align,
            data_end: 0,
            read_through: 0,
            jobs: 0,
        }
    }

    /// Reads through holes of up to `gap` bytes between data pieces of one
    /// job, so that small extents cost one read request per job instead
    /// of one each: with O_DIRECT every request waits for the device, and
    /// a fragmented image (4 KiB of data every 8 KiB) is bound by that
    /// latency, while the kernel submits the pieces of one request
    /// together and reads its holes as zeros without I/O. The holes stay
    /// hole pieces; the buffer bytes between are not used.
    pub(crate) fn read_through(mut self, gap: u64) -> Self {
        self.read_through = gap;
        self
    }

    /// Jobs handed out so far: the position of the next one.
    pub(crate) fn jobs_planned(&self) -> u64 {
        self.jobs
    }

    /// The next job, `None` at the end of the range.
    pub(crate) fn next_job(&mut self) -> Option<Result<Job, MapError>> {
        let mut job = Job::default();
        while job.pieces.len() < MAX_PIECES {
            let (off, end, data) = match self.carry.take() {
                Some(c) => c,
                None => match self.map.next() {
                    None => break,
                    Some(Err(e)) => return Some(Err(e)),
                    Some(Ok(ext)) => (ext.offset, ext.end(), ext.kind == ExtentKind::Data),
                },
            };
            if !data {
                job.pieces.push(Piece::Hole {
                    off,
                    len: end - off,
                    detected: false,
                });
                continue;
            }
            let start = (off / self.align * self.align).max(self.data_end);
            let stop = end.next_multiple_of(self.align);
            if start >= stop {
                continue; // already covered by the previous widened piece
            }
            // Continue the last read across a short hole, or start one.
            let continued = job
                .reads
                .last()
                .filter(|r| start - r.end() <= self.read_through)
                .map(|r| r.buf_off + (start - r.off) as usize);
            let buf_off = continued.unwrap_or(job.buf_used.next_multiple_of(self.align as usize));
            let room = self.buf_size.saturating_sub(buf_off) as u64;
            if room == 0 {
                self.carry = Some((off, end, true));
                break;
            }
            let len = (stop - start).min(room);
            job.pieces.push(Piece::Data {
                off: start,
                len,
                buf_off,
            });
            match job.reads.last_mut() {
                Some(read) if continued.is_some() => read.len = start + len - read.off,
                _ => job.reads.push(Read {
                    off: start,
                    len,
                    buf_off,
                }),
            }
            job.buf_used = buf_off + len as usize;
            self.data_end = start + len;
            if start + len < stop {
                // The buffer is full; the rest of this extent starts the next job.
                self.carry = Some((start + len, end, true));
                break;
            }
        }
        if job.pieces.is_empty() {
            return None;
        }
        self.jobs += 1;
        Some(Ok(job))
    }
}

/// Splits the data piece `off..off+len` held in `buf` into data and
/// all-zero pieces. Only whole `granule`-aligned blocks (by file offset)
/// become holes, so the destination's holes are block aligned; a partial
/// block at either edge stays data, except the file's last block (the
/// piece ends at `eof`), which the final size covers: all zeros, it is a
/// hole too (else a tail hole the map called data would be allocated). A
/// piece widened for O_DIRECT ends past `eof`, on the alignment (512 on
/// many filesystems), not on the granule: it reaches EOF all the same.
pub(crate) fn split_zeros(
    off: u64,
    buf: &[u8],
    buf_off: usize,
    granule: u64,
    eof: u64,
    out: &mut Vec<Piece>,
) {
    let len = buf.len() as u64;
    let end = off + len;
    let first = off.next_multiple_of(granule).min(end);
    let last = if end >= eof {
        end
    } else {
        (end / granule * granule).max(first)
    };
    let mut pos = off;
    let push = |out: &mut Vec<Piece>, from: u64, to: u64, zero: bool| {
        if from >= to {
            return;
        }
        let merged = match out.last_mut() {
            Some(Piece::Data { off: o, len: l, .. }) if !zero && *o + *l == from => {
                *l += to - from;
                true
            }
            Some(Piece::Hole {
                off: o,
                len: l,
                detected: true,
            }) if zero && *o + *l == from => {
                *l += to - from;
                true
            }
            _ => false,
        };
        if !merged {
            out.push(if zero {
                Piece::Hole {
                    off: from,
                    len: to - from,
                    detected: true,
                }
            } else {
                Piece::Data {
                    off: from,
                    len: to - from,
                    buf_off: buf_off + (from - off) as usize,
                }
            });
        }
    };
    push(out, pos, first, false);
    pos = first;
    for (run, zero) in sparsekit_extents::zero_runs(
        &buf[(first - off) as usize..(last - off) as usize],
        granule as usize,
    ) {
        push(out, pos + run.start as u64, pos + run.end as u64, zero);
    }
    pos = last;
    push(out, pos, end, false);
}

#[cfg(test)]
mod tests {
    use super::*;
    use sparsekit_extents::{MapOptions, Method};
    use std::io::{Seek, SeekFrom, Write};

    fn file_with(layout: &[(u64, usize)], size: u64) -> std::fs::File {
        let mut f = tempfile::tempfile_in("/tmp").unwrap();
        for &(off, len) in layout {
            f.seek(SeekFrom::Start(off)).unwrap();
            f.write_all(&vec![0xab; len]).unwrap();
        }
        f.set_len(size).unwrap();
        f
    }

    fn plan(f: &std::fs::File, buf: usize, align: u64) -> Vec<Job> {
        let map = MapOptions::new().method(Method::Seek).map(f).unwrap();
        let mut p = Planner::new(map, buf, align);
        std::iter::from_fn(|| p.next_job().map(Result::unwrap)).collect()
    }

    #[test]
    fn small_extents_share_a_buffer_and_holes_ride_along() {
        let f = file_with(&[(0, 4096), (65536, 4096), (1 << 20, 8192)], 2 << 20);
        let jobs = plan(&f, 1 << 20, 1);
        assert_eq!(jobs.len(), 1);
        assert_eq!(
            jobs[0].pieces,
            vec![
                Piece::Data {
                    off: 0,
                    len: 4096,
                    buf_off: 0
                },
                Piece::Hole {
                    off: 4096,
                    len: 61440,
                    detected: false
                },
                Piece::Data {
                    off: 65536,
                    len: 4096,
                    buf_off: 4096
                },
                Piece::Hole {
                    off: 69632,
                    len: (1 << 20) - 69632,
                    detected: false
                },
                Piece::Data {
                    off: 1 << 20,
                    len: 8192,
                    buf_off: 8192
                },
                Piece::Hole {
                    off: (1 << 20) + 8192,
                    len: (1 << 20) - 8192,
                    detected: false
                },
            ]
        );
        assert_eq!(jobs[0].buf_used, 16384);
    }

    fn plan_reading_through(f: &std::fs::File, buf: usize, align: u64, gap: u64) -> Vec<Job> {
        let map = MapOptions::new().method(Method::Seek).map(f).unwrap();
        let mut p = Planner::new(map, buf, align).read_through(gap);
        std::iter::from_fn(|| p.next_job().map(Result::unwrap)).collect()
    }

    #[test]
    fn short_holes_are_read_through_and_long_ones_split_the_read() {
        // Gaps of 12 KiB (read through), 64 KiB (read through: the limit)
        // and 64 KiB + 4 KiB (not).
        let layout = [(0, 4096), (16384, 4096), (86016, 4096), (159744, 4096)];
        let f = file_with(&layout, 1 << 20);
        let jobs = plan_reading_through(&f, 1 << 20, 4096, 64 << 10);
        assert_eq!(jobs.len(), 1);
        let read = |off, len, buf_off| Read { off, len, buf_off };
        assert_eq!(
            jobs[0].reads,
            vec![read(0, 90112, 0), read(159744, 4096, 90112)]
        );
        // Each data piece sits in the buffer where its read puts it; the
        // holes between stay holes.
        let data: Vec<_> = jobs[0]
            .pieces
            .iter()
            .filter_map(|p| match *p {
                Piece::Data { off, buf_off, .. } => Some((off, buf_off)),
                Piece::Hole { .. } => None,
            })
            .collect();
        assert_eq!(
            data,
            vec![(0, 0), (16384, 16384), (86016, 86016), (159744, 90112)]
        );
        assert_eq!(jobs[0].pieces.len(), 8);
        assert_eq!(jobs[0].buf_used, 94208);
    }

    #[test]
    fn a_read_through_that_fills_the_buffer_carries_the_extent_over() {
        // 4 KiB every 8 KiB with a 16 KiB buffer: the third extent would
        // start at buffer offset 16 KiB, so it opens the next job.
        let f = file_with(&[(0, 4096), (8192, 4096), (16384, 4096)], 20480);
        let jobs = plan_reading_through(&f, 16384, 4096, 64 << 10);
        let reads: Vec<_> = jobs.iter().map(|j| j.reads.clone()).collect();
        assert_eq!(
            reads,
            vec![
                vec![Read {
                    off: 0,
                    len: 12288,
                    buf_off: 0
                }],
                vec![Read {
                    off: 16384,
                    len: 4096,
                    buf_off: 0
                }],
            ]
        );
        // Without reading through, the same plan reads each extent alone.
        let jobs = plan(&f, 16384, 4096);
        assert_eq!(jobs[0].reads.len(), 3);
    }

    #[test]
    fn a_large_extent_is_split_at_the_buffer_size() {
        let f = file_with(&[(0, 3 << 20)], 3 << 20);
        let jobs = plan(&f, 1 << 20, 1);
        let offs: Vec<_> = jobs.iter().map(|j| j.pieces.clone()).collect();
        assert_eq!(offs.len(), 3);
        assert_eq!(
            offs[2],
            vec![Piece::Data {
                off: 2 << 20,
                len: 1 << 20,
                buf_off: 0
            }]
        );
    }

    #[test]
    fn direct_widens_an_unaligned_tail_and_aligns_buffer_offsets() {
        let f = file_with(&[(0, 4096), (8192, 1000)], 9192);
        let jobs = plan(&f, 1 << 16, 4096);
        assert_eq!(
            jobs[0].pieces,
            vec![
                Piece::Data {
                    off: 0,
                    len: 4096,
                    buf_off: 0
                },
                Piece::Hole {
                    off: 4096,
                    len: 4096,
                    detected: false
                },
                Piece::Data {
                    off: 8192,
                    len: 4096,
                    buf_off: 4096
                },
            ]
        );
    }

    #[test]
    fn zero_blocks_inside_data_become_holes() {
        let mut buf = vec![0u8; 5 * 4096];
        buf[4096 + 7] = 1; // second block is data
        buf[5 * 4096 - 1] = 1; // so is the last
        let mut out = Vec::new();
        split_zeros(4096, &buf, 0, 4096, u64::MAX, &mut out);
        assert_eq!(
            out,
            vec![
                Piece::Hole {
                    off: 4096,
                    len: 4096,
                    detected: true
                },
                Piece::Data {
                    off: 8192,
                    len: 4096,
                    buf_off: 4096
                },
                Piece::Hole {
                    off: 12288,
                    len: 8192,
                    detected: true
                },
                Piece::Data {
                    off: 20480,
                    len: 4096,
                    buf_off: 16384
                },
            ]
        );
    }

    #[test]
    fn partial_edge_blocks_stay_data() {
        let buf = vec![0u8; 3 * 4096];
        let mut out = Vec::new();
        split_zeros(100, &buf, 0, 4096, u64::MAX, &mut out);
        assert_eq!(
            out,
            vec![
                Piece::Data {
                    off: 100,
                    len: 3996,
                    buf_off: 0
                },
                Piece::Hole {
                    off: 4096,
                    len: 8192,
                    detected: true
                },
                Piece::Data {
                    off: 12288,
                    len: 100,
                    buf_off: 12188
                },
            ]
        );
    }

    #[test]
    fn a_zero_tail_at_the_end_of_the_file_is_a_hole() {
        // 4 KiB of data, then 5000 bytes of zeros up to EOF: the partial
        // last block is a hole as well (found on NFSv3, whose map calls
        // every hole data).
        let mut buf = vec![0u8; 4096 + 5000];
        buf[..4096].fill(7);
        let mut out = Vec::new();
        split_zeros(0, &buf, 0, 4096, 9096, &mut out);
        assert_eq!(
            out,
            vec![
                Piece::Data {
                    off: 0,
                    len: 4096,
                    buf_off: 0
                },
                Piece::Hole {
                    off: 4096,
                    len: 5000,
                    detected: true
                },
            ]
        );
        let last_piece = |buf: &[u8], eof: u64| {
            let mut out = Vec::new();
            split_zeros(0, buf, 0, 4096, eof, &mut out);
            out.pop()
        };
        let tail_data = Some(Piece::Data {
            off: 8192,
            len: 904,
            buf_off: 8192,
        });
        // Not at EOF: the partial block stays data.
        assert_eq!(last_piece(&buf, 1 << 20), tail_data);
        // A tail with a byte of data stays data.
        buf[9095] = 1;
        assert_eq!(last_piece(&buf, 9096), tail_data);
        // Widened for O_DIRECT to a 512-byte alignment past EOF (read as
        // zeros there): a 1-byte file of a zero, and a 5000-byte one, are
        // holes (the 512-byte widening had left their last block data).
        for (size, widened) in [(1, 512), (5000, 5120)] {
            let mut out = Vec::new();
            split_zeros(0, &vec![0; widened], 0, 4096, size, &mut out);
            let hole = Piece::Hole {
                off: 0,
                len: widened as u64,
                detected: true,
            };
            assert_eq!(out, vec![hole], "{size}");
        }
    }
}
