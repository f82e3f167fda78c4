//! `punch_hole`, `zero_range`, `collapse_range`, `insert_range`,
//! `allocate`, `write_zeroes`: the `fallocate(2)` modes, through
//! sparsekit-punch's forced strategies.

use super::{Ctx, expect_bytes, refused};
use crate::classify::{FallbackOutcome, Observation, Shortfall, Trial, classify};
use crate::error::CapsError;
use crate::scratch::Scratch;
use rustix::fs::FallocateFlags;
use sparsekit_extents::{ExtentKind, MapOptions, Method};
use sparsekit_punch::{
    PunchError, PunchStrategy, Report, ShiftStrategy, Strategy, ZeroStrategy, collapse_range,
    insert_range, punch_hole, zero_range,
};

pub(crate) fn run(ctx: &mut Ctx<'_>) -> Result<(), CapsError> {
    punch(ctx)?;
    zero(ctx)?;
    shift(ctx, true)?;
    shift(ctx, false)?;
    allocate(ctx)?;
    write_zeroes(ctx)?;
    Ok(())
}

/// Reads the whole 4-unit file and compares it with the expected bytes.
fn check_content(f: &Scratch, want: &[u8], what: &str) -> Result<Vec<Shortfall>, CapsError> {
    let got = f.read_at(0, want.len() as u64 + 1)?;
    let mut s = Vec::new();
    expect_bytes(&mut s, what, &got, want, 0);
    Ok(s)
}

fn punch_err(call: &str, e: &PunchError) -> Observation {
    refused(call, e.errno(), e)
}

/// What a fallback strategy did, checked: `Verified` when the content is
/// right, naming the strategy.
fn fallback_outcome<S: Strategy>(
    result: Result<Report<S>, PunchError>,
    content: Result<Vec<Shortfall>, CapsError>,
    note: impl Fn(&Report<S>) -> String,
) -> Result<FallbackOutcome, CapsError> {
    Ok(match result {
        Ok(report) => {
            let shortfalls = content?;
            let by = format!(
                "{} (sparsekit-punch fallback{})",
                report.strategy,
                note(&report)
            );
            if shortfalls.is_empty() {
                FallbackOutcome::Verified { by }
            } else {
                let why = shortfalls
                    .iter()
                    .map(|s| s.why.clone())
                    .collect::<Vec<_>>()
                    .join("; ");
                FallbackOutcome::Failed { by, why }
            }
        }
        Err(e) => FallbackOutcome::Failed {
            by: "sparsekit-punch Auto".to_owned(),
            why: e.to_string(),
        },
    })
}

fn zeroed(data: &[u8], range: std::ops::Range<u64>) -> Vec<u8> {
    let mut want = data.to_vec();
    want[range.start as usize..range.end as usize].fill(0);
    want
}

fn punch(ctx: &mut Ctx<'_>) -> Result<(), CapsError> {
    const HOW: &str = "fallocate(PUNCH_HOLE|KEEP_SIZE) (sparsekit-punch PunchStrategy::PunchHole): reads back zeros, rest intact, st_blocks falls";
    let u = ctx.unit;
    let (f, data) = ctx.data_file(21, 4 * u)?;
    let want = zeroed(&data, u..3 * u);
    let mut detail = None;
    let observation = match punch_hole(&f, u, 2 * u, PunchStrategy::PunchHole) {
        Ok(report) => {
            let mut s = check_content(&f, &want, "punched file")?;
            let freed = report.freed();
            detail = Some(format!("{freed} of {} bytes freed", 2 * u));
            if freed == 0 {
                s.push(Shortfall::new(
                    "reads as zeros but no blocks were freed (st_blocks unchanged)",
                ));
            } else if freed < u {
                s.push(Shortfall::new(format!(
                    "only {freed} of {} bytes freed",
                    2 * u
                )));
            }
            Observation::worked(s)
        }
        Err(e) => punch_err("fallocate(PUNCH_HOLE)", &e),
    };
    let mut trial = Trial::new(observation, HOW);
    if let Observation::Refused { .. } = trial.observation {
        let (g, data) = ctx.data_file(22, 4 * u)?;
        let result = punch_hole(&g, u, 2 * u, PunchStrategy::Auto);
        let content = check_content(&g, &zeroed(&data, u..3 * u), "punched file");
        trial = trial.fallback(fallback_outcome(result, content, |r| {
            format!("; reads as zeros, {} bytes freed", r.freed())
        })?);
    }
    if let Some(d) = detail {
        trial = trial.detail(d);
    }
    ctx.set("punch_hole", classify(trial));
    Ok(())
}

fn zero(ctx: &mut Ctx<'_>) -> Result<(), CapsError> {
    const HOW: &str = "fallocate(ZERO_RANGE|KEEP_SIZE) (sparsekit-punch ZeroStrategy::ZeroRange): reads back zeros, rest intact, st_blocks does not fall";
    let u = ctx.unit;
    let (f, data) = ctx.data_file(23, 4 * u)?;
    let want = zeroed(&data, u..3 * u);
    let observation = match zero_range(&f, u, 2 * u, ZeroStrategy::ZeroRange) {
        Ok(report) => {
            let mut s = check_content(&f, &want, "zeroed file")?;
            if report.allocated_after < report.allocated_before {
                s.push(Shortfall::new(format!(
                    "the range was deallocated (st_blocks fell by {} bytes)",
                    report.allocated_before - report.allocated_after
                )));
            }
            Observation::worked(s)
        }
        Err(e) => punch_err("fallocate(ZERO_RANGE)", &e),
    };
    let mut trial = Trial::new(observation, HOW);
    if let Observation::Refused { .. } = trial.observation {
        let (g, data) = ctx.data_file(24, 4 * u)?;
        let result = zero_range(&g, u, 2 * u, ZeroStrategy::Auto);
        let content = check_content(&g, &zeroed(&data, u..3 * u), "zeroed file");
        trial = trial.fallback(fallback_outcome(result, content, |_| String::new())?);
    }
    ctx.set("zero_range", classify(trial));
    Ok(())
}

/// `collapse_range` (`collapse` true) or `insert_range`.
fn shift(ctx: &mut Ctx<'_>, collapse: bool) -> Result<(), CapsError> {
    let u = ctx.unit;
    let (name, call, how) = if collapse {
        (
            "collapse_range",
            "fallocate(COLLAPSE_RANGE)",
            "fallocate(COLLAPSE_RANGE) of one unit (sparsekit-punch ShiftStrategy::Native): size and shifted content checked",
        )
    } else {
        (
            "insert_range",
            "fallocate(INSERT_RANGE)",
            "fallocate(INSERT_RANGE) of one unit (sparsekit-punch ShiftStrategy::Native): size, inserted zeros and shifted content checked",
        )
    };
    let want_of = |data: &[u8]| -> Vec<u8> {
        let (a, b) = (u as usize, 2 * u as usize);
        if collapse {
            [&data[..a], &data[b..]].concat()
        } else {
            [&data[..a], &vec![0u8; a][..], &data[a..]].concat()
        }
    };
    let run = |f: &Scratch, strategy| {
        if collapse {
            collapse_range(f, u, u, strategy)
        } else {
            insert_range(f, u, u, strategy)
        }
    };
    let (f, data) = ctx.data_file(if collapse { 25 } else { 26 }, 4 * u)?;
    let observation = match run(&f, ShiftStrategy::Native) {
        Ok(_) => Observation::worked(check_content(&f, &want_of(&data), "shifted file")?),
        Err(e) => punch_err(call, &e),
    };
    let mut trial = Trial::new(observation, how);
    if let Observation::Refused { .. } = trial.observation {
        let (g, data) = ctx.data_file(27, 4 * u)?;
        let result = run(&g, ShiftStrategy::MoveData);
        let content = check_content(&g, &want_of(&data), "shifted file");
        trial = trial.fallback(fallback_outcome(result, content, |r| {
            format!("; moved {} bytes", r.bytes_written)
        })?);
    }
    ctx.set(name, classify(trial));
    Ok(())
}

fn allocate(ctx: &mut Ctx<'_>) -> Result<(), CapsError> {
    const HOW: &str = "fallocate(0) on an empty file: size set, st_blocks covers it, reads zeros";
    let u = ctx.unit;
    let f = ctx.file()?;
    let observation = match rustix::fs::fallocate(&f, FallocateFlags::empty(), 0, 4 * u) {
        Ok(()) => {
            let (size, allocated) = f.size_and_allocated()?;
            let mut s = check_content(&f, &vec![0u8; 4 * u as usize], "allocated file")?;
            if size != 4 * u {
                s.push(Shortfall::new(format!("size is {size}, not {}", 4 * u)));
            }
            if allocated < 4 * u {
                s.push(Shortfall::new(format!(
                    "only {allocated} of {} bytes allocated",
                    4 * u
                )));
            }
            Observation::worked(s)
        }
        Err(errno) => Observation::refused("fallocate(0)", errno),
    };
    ctx.set("allocate", classify(Trial::new(observation, HOW)));
    Ok(())
}

fn write_zeroes(ctx: &mut Ctx<'_>) -> Result<(), CapsError> {
    const HOW: &str = "fallocate(WRITE_ZEROES) over data: reads zeros, st_blocks kept, FIEMAP shows written (not unwritten) extents";
    let u = ctx.unit;
    let (f, data) = ctx.data_file(28, 4 * u)?;
    let before = f.allocated()?;
    let flags = sparsekit_sys::consts::FALLOC_FL_WRITE_ZEROES;
    let observation = match rustix::fs::fallocate(&f, flags, u, 2 * u) {
        Ok(()) => {
            let mut s = check_content(&f, &zeroed(&data, u..3 * u), "zeroed file")?;
            let after = f.allocated()?;
            if after < before {
                s.push(Shortfall::new(format!(
                    "the range was deallocated (st_blocks fell by {} bytes)",
                    before - after
                )));
            }
            if let Ok(map) = MapOptions::new()
                .method(Method::Fiemap)
                .range(u..3 * u)
                .map(&f)
            {
                let unwritten: u64 = map
                    .filter_map(Result::ok)
                    .filter(|e| e.kind == ExtentKind::Unwritten)
                    .map(|e| e.length)
                    .sum();
                if unwritten > 0 {
                    s.push(Shortfall::new(format!(
                        "{unwritten} bytes are unwritten extents, not written zeros"
                    )));
                }
            }
            Observation::worked(s)
        }
        Err(errno) => Observation::refused("fallocate(WRITE_ZEROES)", errno),
    };
    ctx.set("write_zeroes", classify(Trial::new(observation, HOW)));
    Ok(())
}
