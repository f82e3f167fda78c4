//! `statx`, `statx_dont_sync`, `o_tmpfile`: metadata and scratch files.

use super::{Ctx, refused};
use crate::classify::{FallbackOutcome, Observation, Shortfall, Trial, classify};
use crate::error::CapsError;
use crate::report::Cell;
use crate::scratch::{ScratchKind, pattern};
use sparsekit_probe::{Fields, ProbeOptions, Strategy, SyncMode};

/// The optional statx fields worth listing, as the design names them.
const OPTIONAL: &[(Fields, &str)] = &[
    (Fields::BTIME, "btime"),
    (Fields::DIOALIGN, "dioalign"),
    (Fields::DIO_READ_ALIGN, "dio_read_align"),
    (Fields::MNT_ID_UNIQUE, "mnt_id_unique"),
    (Fields::SUBVOL, "subvol"),
    (Fields::WRITE_ATOMIC, "write_atomic"),
];

/// `"fields: btime, dioalign; not filled: subvol"` from a filled mask.
pub(crate) fn optional_fields(filled: Fields) -> String {
    let (have, miss): (Vec<_>, Vec<_>) = OPTIONAL.iter().partition(|(f, _)| filled.contains(*f));
    let names = |v: Vec<&(Fields, &str)>| {
        if v.is_empty() {
            "none".to_owned()
        } else {
            v.iter().map(|(_, n)| *n).collect::<Vec<_>>().join(", ")
        }
    };
    format!("fields: {}; not filled: {}", names(have), names(miss))
}

pub(crate) fn run(ctx: &mut Ctx<'_>) -> Result<(), CapsError> {
    const HOW: &str = "statx(AT_EMPTY_PATH) of a scratch file (sparsekit-probe Strategy::Statx): size and blocks match";
    const DONT_SYNC_HOW: &str = "statx(AT_STATX_DONT_SYNC) of a scratch file (sparsekit-probe SyncMode::DontSync): size matches";
    let f = ctx.file()?;
    let len = 5000;
    f.write_at(&pattern(51, len), 0)?;
    let (size, allocated) = f.size_and_allocated()?;

    let probe = ProbeOptions::new()
        .fields(Fields::KNOWN)
        .strategy(Strategy::Statx);
    let mut detail = None;
    let observation = match probe.probe_fd(&f.file) {
        Ok(meta) => {
            detail = Some(optional_fields(meta.filled()));
            let mut s = Vec::new();
            if meta.size() != Some(size) {
                s.push(Shortfall::new(format!(
                    "size {:?}, expected {size}",
                    meta.size()
                )));
            }
            if meta.allocated_bytes() != Some(allocated) {
                s.push(Shortfall::new(format!(
                    "allocated {:?}, fstat says {allocated}",
                    meta.allocated_bytes()
                )));
            }
            Observation::worked(s)
        }
        Err(e) => refused("statx", e.errno(), &e),
    };
    let mut trial = Trial::new(observation, HOW);
    if let Observation::Refused { .. } = trial.observation {
        let fallback = ProbeOptions::new()
            .fields(Fields::BASIC)
            .strategy(Strategy::Fstatat);
        trial = trial.fallback(match fallback.probe_fd(&f.file) {
            Ok(meta) if meta.size() == Some(size) => FallbackOutcome::Verified {
                by: "fstat (sparsekit-probe Strategy::Fstatat): basic fields only".to_owned(),
            },
            Ok(meta) => FallbackOutcome::Failed {
                by: "fstat".to_owned(),
                why: format!("size {:?}, expected {size}", meta.size()),
            },
            Err(e) => FallbackOutcome::Failed {
                by: "fstat".to_owned(),
                why: e.to_string(),
            },
        });
    }
    if let Some(d) = detail {
        trial = trial.detail(d);
    }
    ctx.set("statx", classify(trial));

    let probe = ProbeOptions::new()
        .fields(Fields::SIZE)
        .strategy(Strategy::Statx)
        .sync(SyncMode::DontSync);
    let observation = match probe.probe_fd(&f.file) {
        Ok(meta) if meta.size() == Some(size) => Observation::verified(),
        Ok(meta) => Observation::worked(vec![Shortfall::new(format!(
            "size {:?}, expected {size}",
            meta.size()
        ))]),
        Err(e) => refused("statx(AT_STATX_DONT_SYNC)", e.errno(), &e),
    };
    ctx.set(
        "statx_dont_sync",
        classify(Trial::new(observation, DONT_SYNC_HOW)),
    );

    let cell = match (ctx.dir.tmpfile, ctx.dir.kind) {
        (Ok(()), ScratchKind::TmpFile) => {
            Cell::native("open(dir, O_TMPFILE|O_RDWR) made every scratch file of this report")
        }
        (Ok(()), ScratchKind::Named) => Cell::native(
            "open(dir, O_TMPFILE|O_RDWR) made a file (scratch files were then named, as asked)",
        ),
        (Err(errno), _) => classify(
            Trial::new(
                Observation::refused("open(O_TMPFILE)", errno),
                "open(dir, O_TMPFILE|O_RDWR); scratch files were then named and unlinked at once",
            )
            .fallback(FallbackOutcome::Verified {
                by: "a hidden named file (sparsekit-copy Staging::Named)".to_owned(),
            }),
        ),
    };
    ctx.set("o_tmpfile", cell);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_fields_lists_both_sides() {
        assert_eq!(
            optional_fields(Fields::BASIC | Fields::BTIME | Fields::DIOALIGN),
            "fields: btime, dioalign; not filled: dio_read_align, mnt_id_unique, subvol, write_atomic"
        );
        assert_eq!(
            optional_fields(Fields::BASIC),
            "fields: none; not filled: btime, dioalign, dio_read_align, mnt_id_unique, subvol, write_atomic"
        );
    }
}
