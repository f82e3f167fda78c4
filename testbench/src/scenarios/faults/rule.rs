//! What the fault-injecting filesystem does to one file's requests, and
//! the words of the `set` command that carry it.

use anyhow::{Context, bail};
use std::time::Duration;

/// What to do to one file's requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    /// EIO for a read request whose range holds this byte.
    pub read_eio: Option<u64>,
    /// EIO for a write request whose range holds this byte.
    pub write_eio: Option<u64>,
    /// Reads answer half of what was asked.
    pub short_read: bool,
    /// Each request waits this long first.
    pub delay: Duration,
    /// fallocate fails with EIO.
    pub fallocate_eio: bool,
    /// SEEK_DATA / SEEK_HOLE fail with EIO.
    pub lseek_eio: bool,
    /// fsync / fdatasync fail with EIO (the write-back error a copy must
    /// not take for success).
    pub fsync_eio: bool,
    /// The first read or write request whose range holds this byte
    /// freezes the file (a stall in the middle of an operation).
    pub freeze_at: Option<u64>,
}

impl Rule {
    /// The `KEY=VALUE…` words of a `set` command.
    pub fn to_words(&self) -> String {
        let mut w = Vec::new();
        if let Some(o) = self.read_eio {
            w.push(format!("read_eio={o}"));
        }
        if let Some(o) = self.write_eio {
            w.push(format!("write_eio={o}"));
        }
        if self.short_read {
            w.push("short_read=1".into());
        }
        if !self.delay.is_zero() {
            w.push(format!("delay_ms={}", self.delay.as_millis()));
        }
        if self.fallocate_eio {
            w.push("fallocate_eio=1".into());
        }
        if self.lseek_eio {
            w.push("lseek_eio=1".into());
        }
        if self.fsync_eio {
            w.push("fsync_eio=1".into());
        }
        if let Some(o) = self.freeze_at {
            w.push(format!("freeze_at={o}"));
        }
        w.join(" ")
    }

    /// Parses the words [`to_words`](Self::to_words) writes.
    pub fn parse<'a>(words: impl Iterator<Item = &'a str>) -> anyhow::Result<Rule> {
        let mut r = Rule::default();
        for word in words {
            let (k, v) = word.split_once('=').context("KEY=VALUE")?;
            let n: u64 = v.parse().with_context(|| format!("{k}: {v:?}"))?;
            match k {
                "read_eio" => r.read_eio = Some(n),
                "write_eio" => r.write_eio = Some(n),
                "short_read" => r.short_read = n != 0,
                "delay_ms" => r.delay = Duration::from_millis(n),
                "fallocate_eio" => r.fallocate_eio = n != 0,
                "lseek_eio" => r.lseek_eio = n != 0,
                "freeze_at" => r.freeze_at = Some(n),
                "fsync_eio" => r.fsync_eio = n != 0,
                _ => bail!("unknown key {k:?}"),
            }
        }
        Ok(r)
    }
}

/// Whether the request `[offset, offset + len)` holds byte `at`.
pub(super) fn hits(at: Option<u64>, offset: u64, len: u64) -> bool {
    at.is_some_and(|at| offset <= at && at - offset < len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_round_trip_through_their_words() {
        let r = Rule {
            read_eio: Some(1 << 20),
            write_eio: Some(7),
            short_read: true,
            delay: Duration::from_millis(30),
            fallocate_eio: true,
            lseek_eio: true,
            freeze_at: Some(3),
            fsync_eio: true,
        };
        assert_eq!(Rule::parse(r.to_words().split_whitespace()).unwrap(), r);
        assert_eq!(Rule::parse("".split_whitespace()).unwrap(), Rule::default());
        assert!(Rule::parse("bogus=1".split_whitespace()).is_err());
        assert!(Rule::parse("read_eio=x".split_whitespace()).is_err());
    }

    #[test]
    fn a_request_hits_the_fault_offset_only_inside_its_range() {
        assert!(hits(Some(4096), 4096, 1));
        assert!(hits(Some(8191), 4096, 4096));
        assert!(!hits(Some(8192), 4096, 4096));
        assert!(!hits(Some(4095), 4096, 4096));
        assert!(!hits(None, 0, u64::MAX));
        assert!(!hits(Some(0), 0, 0));
    }
}
