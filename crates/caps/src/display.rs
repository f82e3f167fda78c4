//! `Display` for [`CapsReport`]: a header and a table with a column that
//! says how each cell was verified.

use crate::report::{CapsReport, Cell, FsInfo};
use std::fmt;

/// Widest the wrapped text columns get.
const NOTES_WIDTH: usize = 48;
const VERIFIED_WIDTH: usize = 64;

/// Splits `text` into lines of at most `width` characters at spaces
/// (a longer word gets a line of its own).
pub(crate) fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

fn notes(cell: &Cell) -> String {
    match (&cell.reason, &cell.detail) {
        (Some(r), Some(d)) => format!("{r}; {d}"),
        (Some(r), None) => r.clone(),
        (None, Some(d)) => d.clone(),
        (None, None) => String::new(),
    }
}

fn header(f: &mut fmt::Formatter<'_>, fs: &FsInfo) -> fmt::Result {
    let kind = match &fs.mount_fs_type {
        Some(m) if *m != fs.fs_type => format!("{} ({}, {})", fs.fs_type, m, fs.magic),
        _ => format!("{} ({})", fs.fs_type, fs.magic),
    };
    writeln!(f, "filesystem: {kind} at {}", fs.directory)?;
    if let Some(mp) = &fs.mount_point {
        write!(f, "mount:      {mp}")?;
        if let Some(src) = &fs.mount_source {
            write!(f, " from {src}")?;
        }
        if let Some(opts) = &fs.mount_options {
            write!(f, " ({opts}")?;
            if let Some(sopts) = fs.super_options.as_ref().filter(|s| !s.is_empty()) {
                write!(f, "; {sopts}")?;
            }
            write!(f, ")")?;
        }
        writeln!(f)?;
    }
    write!(f, "block size: {}, device {}", fs.block_size, fs.device)?;
    if let Some(id) = fs.mount_id {
        write!(f, ", mount id {id}")?;
    }
    writeln!(f, ", kernel {}", fs.kernel_release)?;
    match (fs.dio_mem_align, fs.dio_offset_align) {
        (Some(m), Some(o)) => {
            write!(f, "direct I/O: memory alignment {m}, offset alignment {o}")?;
            if let Some(r) = fs.dio_read_offset_align {
                write!(f, ", read offset alignment {r}")?;
            }
            writeln!(f)?;
        }
        _ => writeln!(f, "direct I/O: alignment not reported (STATX_DIOALIGN)")?,
    }
    write!(f, "scratch:    {}", fs.scratch)?;
    if let Some(peer) = &fs.cross_fs_peer {
        write!(f, "; cross-filesystem peer {peer}")?;
    }
    writeln!(f)
}

impl fmt::Display for CapsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        header(f, &self.filesystem)?;
        writeln!(f)?;
        let name_w = self
            .capabilities
            .keys()
            .map(String::len)
            .max()
            .unwrap_or(0)
            .max("CAPABILITY".len());
        let errno_w = self
            .capabilities
            .values()
            .filter_map(|c| c.errno.as_ref().map(String::len))
            .max()
            .unwrap_or(0)
            .max("ERRNO".len());
        let support_w = "unsupported".len();
        let notes_w = self
            .capabilities
            .values()
            .map(|c| notes(c).chars().count())
            .max()
            .unwrap_or(0)
            .clamp("NOTES".len(), NOTES_WIDTH);
        writeln!(
            f,
            "{:name_w$}  {:support_w$}  {:errno_w$}  {:notes_w$}  VERIFIED BY",
            "CAPABILITY", "SUPPORT", "ERRNO", "NOTES"
        )?;
        for (name, cell) in &self.capabilities {
            let notes = wrap(&notes(cell), notes_w);
            let verified = wrap(&cell.verified_by, VERIFIED_WIDTH);
            let errno = cell.errno.as_deref().unwrap_or("");
            for i in 0..notes.len().max(verified.len()) {
                let n = notes.get(i).map(String::as_str).unwrap_or("");
                let v = verified.get(i).map(String::as_str).unwrap_or("");
                let line = if i == 0 {
                    format!(
                        "{name:name_w$}  {:support_w$}  {errno:errno_w$}  {n:notes_w$}  {v}",
                        cell.support.as_str()
                    )
                } else {
                    format!(
                        "{:name_w$}  {:support_w$}  {:errno_w$}  {n:notes_w$}  {v}",
                        "", "", ""
                    )
                };
                writeln!(f, "{}", line.trim_end())?;
            }
        }
        for (name, why) in &self.not_tried {
            writeln!(f, "{name:name_w$}  {:support_w$}  {why}", "not tried")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_breaks_at_spaces() {
        assert_eq!(wrap("a bb ccc dddd", 6), ["a bb", "ccc", "dddd"]);
        assert_eq!(wrap("", 6), [""]);
        assert_eq!(
            wrap("averyveryverylongword x", 6),
            ["averyveryverylongword", "x"]
        );
    }
}
