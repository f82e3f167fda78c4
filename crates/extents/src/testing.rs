//! Test support shared by this crate's tests and the privileged test bench
//! (feature `testing`): random sparse layouts, writing them to a real file,
//! and checking an extent map against them.

use crate::{Extent, ExtentKind, MapOptions, Method};
use proptest::prelude::*;
use std::fs::File;
use std::os::unix::fs::FileExt;

/// One written range of a layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Byte offset.
    pub offset: u64,
    /// Length in bytes (> 0).
    pub len: u64,
    /// Written as explicit zeros (data to SEEK_DATA and FIEMAP, a hole to Scan).
    pub zeros: bool,
}

/// A sparse file to write: its size and the ranges written, in write order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Final size (the file is truncated to it first).
    pub size: u64,
    /// Written ranges; they may overlap (later ones win).
    pub segments: Vec<Segment>,
}

/// Layouts up to `max_size` bytes with up to `max_segments` segments, sizes
/// often not multiples of the block size.
pub fn layout_strategy(max_size: u64, max_segments: usize) -> impl Strategy<Value = Layout> {
    (1u64..=max_size).prop_flat_map(move |size| {
        let seg = (0..size, 1u64..=(256 << 10), prop::bool::weighted(0.2)).prop_map(
            move |(offset, len, zeros)| Segment {
                offset,
                len: len.min(size - offset),
                zeros,
            },
        );
        prop::collection::vec(seg, 0..=max_segments)
            .prop_map(move |segments| Layout { size, segments })
    })
}

/// The byte written at `pos` by a non-zero segment: never zero, varies with
/// the offset so misplaced reads show.
pub fn pattern_byte(pos: u64) -> u8 {
    (pos % 251) as u8 + 1
}

impl Layout {
    /// The file's expected content.
    pub fn expected(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.size as usize];
        for s in &self.segments {
            for p in s.offset..s.offset + s.len {
                v[p as usize] = if s.zeros { 0 } else { pattern_byte(p) };
            }
        }
        v
    }

    /// Writes the layout into `file` (which should be empty) and fsyncs.
    pub fn write_to(&self, file: &File) -> std::io::Result<()> {
        file.set_len(self.size)?;
        for s in &self.segments {
            let buf: Vec<u8> = (s.offset..s.offset + s.len)
                .map(|p| if s.zeros { 0 } else { pattern_byte(p) })
                .collect();
            file.write_all_at(&buf, s.offset)?;
        }
        file.sync_all()
    }

    /// Blocks of `block` bytes touched by any write (`zeros_count`: also
    /// zero writes), as a bitmap.
    fn touched(&self, block: u64, zeros_count: bool) -> Vec<bool> {
        let n = self.size.div_ceil(block) as usize;
        let mut t = vec![false; n];
        if zeros_count {
            for s in &self.segments {
                for b in s.offset / block..=(s.offset + s.len - 1) / block {
                    t[b as usize] = true;
                }
            }
        } else {
            let content = self.expected();
            for (b, chunk) in content.chunks(block as usize).enumerate() {
                t[b] = !crate::is_zero(chunk);
            }
        }
        t
    }
}

/// How strictly [`check_map`] compares data extents with the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// Data extents must be exactly the touched blocks (the filesystem keeps
    /// every hole at this granularity).
    ExactBlocks(u64),
    /// Data extents must cover what was written; they may cover more (a
    /// filesystem that allocates in larger units, or has no holes).
    Covers,
}

/// Maps `file` with `method` and checks the map against `layout`: the
/// extents tile `0..size` in order; every written byte lies in a data extent
/// (for `Scan`: every non-zero byte); under `ExactBlocks` no data extent
/// covers an untouched block; and reading only the data extents
/// reconstructs the file.
pub fn check_map(
    file: &File,
    layout: &Layout,
    method: Method,
    strictness: Strictness,
) -> Result<Vec<Extent>, String> {
    let map = MapOptions::new()
        .method(method)
        .map(file)
        .map_err(|e| format!("map({method}): {e}"))?;
    let used = map.method();
    let extents: Vec<Extent> = map
        .collect::<Result<_, _>>()
        .map_err(|e| format!("map({method}): {e}"))?;
    let mut pos = 0;
    for e in &extents {
        if e.offset != pos || e.length == 0 {
            return Err(format!("gap or overlap at {pos}: {e:?}"));
        }
        pos = e.end();
    }
    if pos != layout.size {
        return Err(format!("map ends at {pos}, size is {}", layout.size));
    }
    let zeros_are_data = used != Method::Scan;
    let in_data = |p: u64| {
        extents
            .iter()
            .any(|e| e.kind == ExtentKind::Data && e.range().contains(&p))
    };
    for s in &layout.segments {
        if s.zeros && !zeros_are_data {
            continue;
        }
        for p in [s.offset, s.offset + s.len - 1] {
            if !in_data(p) && (zeros_are_data || pattern_at(layout, p)) {
                return Err(format!("written byte {p} not in a data extent ({used})"));
            }
        }
    }
    if let Strictness::ExactBlocks(block) = strictness {
        let touched = layout.touched(block, zeros_are_data);
        for e in extents.iter().filter(|e| e.kind == ExtentKind::Data) {
            for b in e.offset / block..=(e.end() - 1) / block {
                if !touched[b as usize] {
                    return Err(format!(
                        "data extent {}..{} covers block {b} (of {block} bytes) that was never written ({used})",
                        e.offset,
                        e.end()
                    ));
                }
            }
        }
    }
    let mut rebuilt = vec![0u8; layout.size as usize];
    for e in extents.iter().filter(|e| e.kind == ExtentKind::Data) {
        file.read_exact_at(&mut rebuilt[e.offset as usize..e.end() as usize], e.offset)
            .map_err(|err| format!("read {}..{}: {err}", e.offset, e.end()))?;
    }
    if rebuilt != layout.expected() {
        return Err(format!(
            "reading only the data extents ({used}) does not reconstruct the file"
        ));
    }
    Ok(extents)
}

fn pattern_at(layout: &Layout, p: u64) -> bool {
    layout
        .segments
        .iter()
        .rev()
        .find(|s| (s.offset..s.offset + s.len).contains(&p))
        .is_some_and(|s| !s.zeros)
}
