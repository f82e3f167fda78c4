//! Applying steps to a real file and to the model, and comparing.

use super::step::{Op, Step, fill_bytes, steps};
use super::{Effect, Model};
use crate::file::Target;
use crate::report::Strategy;
use crate::shift::{collapse_chunked, insert_chunked};
use crate::{
    DigOptions, Operation, PunchError, PunchStrategy, ShiftStrategy, ZeroStrategy, dig_holes,
    punch_hole, zero_range,
};
use proptest::test_runner::{
    Config as ProptestConfig, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner,
};
use rustix::fd::AsFd;
use rustix::io::Errno;
use sparsekit_extents::Method;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// What the model-based test runs with.
#[derive(Clone, Debug)]
pub struct Config {
    /// Strategy for punches.
    pub punch: PunchStrategy,
    /// Strategy for zeroing.
    pub zero: ZeroStrategy,
    /// Strategy for collapse and insert.
    pub shift: ShiftStrategy,
    /// Extent method for dig.
    pub dig_method: Method,
    /// Sizes stay near this (writes never reach past it; inserts may).
    pub max_size: u64,
    /// Chunk of the data mover, in blocks: small, so moves cross many chunks.
    pub move_chunk_blocks: u64,
    /// Whether to check `st_blocks` against the model.
    pub check_allocation: bool,
    /// Blocks of allocation allowed beyond the model's bound: ext4 counts
    /// extent-tree blocks in `st_blocks`, xfs may preallocate past EOF.
    pub alloc_slack_blocks: u64,
    /// Random sequences to run.
    pub cases: u32,
    /// Steps per sequence, at most.
    pub max_steps: usize,
    /// The random seed (`None`: from the clock). A failure names the seed
    /// used, so a run on one filesystem can be replayed.
    pub seed: Option<u64>,
}

impl Default for Config {
    /// `Auto` everywhere, 256 KiB files, 64 sequences of up to 24 steps.
    fn default() -> Self {
        Config {
            punch: PunchStrategy::Auto,
            zero: ZeroStrategy::Auto,
            shift: ShiftStrategy::Auto,
            dig_method: Method::Auto,
            max_size: 256 << 10,
            move_chunk_blocks: 3,
            check_allocation: true,
            alloc_slack_blocks: 4,
            cases: 64,
            max_steps: 24,
            seed: None,
        }
    }
}

impl Config {
    /// The default with these strategies forced.
    pub fn forced(punch: PunchStrategy, zero: ZeroStrategy, shift: ShiftStrategy) -> Self {
        Config {
            punch,
            zero,
            shift,
            ..Config::default()
        }
    }
}

/// The outcome of a run that found no disagreement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every sequence agreed with the model.
    Passed {
        /// Sequences run.
        cases: u32,
        /// Operations applied in all.
        ops: u64,
        /// `"operation=strategy"` for every strategy that did work, e.g.
        /// `"collapse=move_data"`, so a caller can check what `Auto` chose.
        used: BTreeSet<String>,
    },
    /// A forced strategy is not available on this filesystem: a skip, not a pass.
    Unsupported {
        /// The operation.
        op: Operation,
        /// The forced strategy.
        strategy: &'static str,
        /// The errno that showed it.
        errno: Errno,
    },
}

/// A disagreement between the file and the model (or a setup failure).
#[derive(Clone, Debug)]
pub struct ModelFailure {
    /// What differed, with the operations applied up to it.
    pub message: String,
    /// The minimal failing sequence proptest found (empty for a fixed one).
    pub steps: Vec<Step>,
}

impl fmt::Display for ModelFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if !self.steps.is_empty() {
            write!(f, "\nminimal failing steps: {:?}", self.steps)?;
        }
        Ok(())
    }
}

impl std::error::Error for ModelFailure {}

enum CaseError {
    Failed(String),
    Unsupported {
        op: Operation,
        strategy: &'static str,
        errno: Errno,
    },
}

#[derive(Default)]
struct Stats {
    ops: u64,
    used: BTreeSet<String>,
}

/// Runs the model-based test in `dir` (a scratch file is created there and
/// removed): first a fixed sequence that uses every operation, so a forced
/// strategy the filesystem lacks gives [`Verdict::Unsupported`], then
/// `config.cases` random sequences.
pub fn run(dir: &Path, config: &Config) -> Result<Verdict, ModelFailure> {
    run_with(&|| tempfile::tempfile_in(dir), config)
}

/// [`run`] on scratch files made by `make_file` (an empty regular file
/// open for reading and writing each time), e.g. a `memfd` to test tmpfs
/// semantics without a mount.
pub fn run_with(
    make_file: &dyn Fn() -> std::io::Result<File>,
    config: &Config,
) -> Result<Verdict, ModelFailure> {
    let dir = make_file;
    let mut probe: Option<std::vec::IntoIter<Op>> = None;
    let outcome = case(dir, config, |_, block| {
        probe
            .get_or_insert_with(|| probe_ops(block).into_iter())
            .next()
    });
    match outcome {
        Ok(_) => {}
        Err(CaseError::Unsupported {
            op,
            strategy,
            errno,
        }) => {
            return Ok(Verdict::Unsupported {
                op,
                strategy,
                errno,
            });
        }
        Err(CaseError::Failed(message)) => {
            return Err(ModelFailure {
                message: format!("the fixed probe sequence failed: {message}"),
                steps: Vec::new(),
            });
        }
    }
    let stats = RefCell::new(Stats::default());
    let seed = config.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        ProptestConfig {
            cases: config.cases,
            failure_persistence: None,
            ..ProptestConfig::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let result = runner.run(&steps(config.max_steps), |steps| {
        let mut i = 0;
        let outcome = case(dir, config, |model, block| {
            let op = steps
                .get(i)
                .map(|s| s.resolve(model, block, config.max_size));
            i += 1;
            op
        });
        match outcome {
            Ok(s) => {
                let mut total = stats.borrow_mut();
                total.ops += s.ops;
                total.used.extend(s.used);
                Ok(())
            }
            Err(CaseError::Failed(m)) => Err(TestCaseError::fail(m)),
            Err(CaseError::Unsupported {
                op,
                strategy,
                errno,
            }) => Err(TestCaseError::fail(format!(
                "{op}: forced {strategy} became unsupported: {errno:?}"
            ))),
        }
    });
    match result {
        Ok(()) => {
            let stats = stats.into_inner();
            Ok(Verdict::Passed {
                cases: config.cases,
                ops: stats.ops,
                used: stats.used,
            })
        }
        Err(TestError::Fail(reason, steps)) => Err(ModelFailure {
            message: format!("(seed {seed}) {}", reason.message()),
            steps,
        }),
        Err(TestError::Abort(reason)) => Err(ModelFailure {
            message: format!("(seed {seed}) proptest aborted: {}", reason.message()),
            steps: Vec::new(),
        }),
    }
}

/// Runs one fixed sequence of operations against the model.
pub fn run_ops(dir: &Path, config: &Config, ops: &[Op]) -> Result<Verdict, ModelFailure> {
    let mut i = 0;
    let outcome = case(&|| tempfile::tempfile_in(dir), config, |_, _| {
        let op = ops.get(i).copied();
        i += 1;
        op
    });
    single_verdict(outcome, Vec::new())
}

/// Runs random steps (as [`run`] generates them) once, without proptest:
/// for replaying a minimal failing sequence.
pub fn run_steps(dir: &Path, config: &Config, steps: &[Step]) -> Result<Verdict, ModelFailure> {
    let mut i = 0;
    let outcome = case(&|| tempfile::tempfile_in(dir), config, |model, block| {
        let op = steps
            .get(i)
            .map(|s| s.resolve(model, block, config.max_size));
        i += 1;
        op
    });
    single_verdict(outcome, steps.to_vec())
}

/// The verdict of one fixed case (`run_ops`, `run_steps`); `steps` are
/// reported with a failure for replay.
fn single_verdict(
    outcome: Result<Stats, CaseError>,
    steps: Vec<Step>,
) -> Result<Verdict, ModelFailure> {
    match outcome {
        Ok(s) => Ok(Verdict::Passed {
            cases: 1,
            ops: s.ops,
            used: s.used,
        }),
        Err(CaseError::Unsupported {
            op,
            strategy,
            errno,
        }) => Ok(Verdict::Unsupported {
            op,
            strategy,
            errno,
        }),
        Err(CaseError::Failed(message)) => Err(ModelFailure { message, steps }),
    }
}

/// One of every operation, all valid on the 6-block file the first makes.
fn probe_ops(block: u64) -> Vec<Op> {
    use super::step::Fill;
    let b = block;
    vec![
        Op::Write {
            offset: 0,
            length: 6 * b,
            fill: Fill::Pattern(7),
        },
        Op::Punch {
            offset: b / 2,
            length: 2 * b,
        },
        Op::Zero {
            offset: 3 * b + 100,
            length: b,
        },
        Op::Collapse {
            offset: b,
            length: b,
        },
        Op::Insert {
            offset: 2 * b,
            length: 2 * b,
        },
        Op::Dig { min_hole: b },
    ]
}

fn case(
    make_file: &dyn Fn() -> std::io::Result<File>,
    config: &Config,
    mut next: impl FnMut(&Model, u64) -> Option<Op>,
) -> Result<Stats, CaseError> {
    let setup = |what: &str, e: &dyn fmt::Display| CaseError::Failed(format!("{what}: {e}"));
    let file = make_file().map_err(|e| setup("creating a scratch file", &e))?;
    let block = Target::open(file.as_fd(), Operation::Punch, false)
        .map_err(|e| setup("checking the scratch file", &e))?
        .block;
    let mut model = Model::new();
    let mut stats = Stats::default();
    let mut log: Vec<String> = Vec::new();
    while let Some(op) = next(&model, block) {
        log.push(format!("{op:?}"));
        let fail = |what: String, log: &[String]| {
            CaseError::Failed(format!(
                "{what}\nblock size {block}, operations applied (last failed):\n  {}",
                log.join("\n  ")
            ))
        };
        let expect = model.check(&op, block);
        match (expect, apply(&file, &op, config, block)) {
            (Ok(()), Ok(applied)) => {
                model.apply(&op, block, applied.effect);
                if let Some(used) = applied.used {
                    stats.used.insert(used);
                }
            }
            (Err(want), Err(ApplyError::Lib(PunchError::InvalidRange { problem, .. })))
                if want == problem => {}
            (
                Ok(()),
                Err(ApplyError::Lib(PunchError::Unsupported {
                    op,
                    strategy,
                    errno,
                })),
            ) => {
                return Err(CaseError::Unsupported {
                    op,
                    strategy,
                    errno,
                });
            }
            (_, Err(ApplyError::Broken(what))) => return Err(fail(what, &log)),
            (want, got) => {
                return Err(fail(
                    format!("the model expects {want:?}, the file gave {got:?}"),
                    &log,
                ));
            }
        }
        stats.ops += 1;
        compare(&file, &model, block, config).map_err(|what| fail(what, &log))?;
    }
    Ok(stats)
}

#[derive(Debug)]
struct Applied {
    effect: Effect,
    used: Option<String>,
}

#[derive(Debug)]
enum ApplyError {
    /// The library's answer.
    Lib(PunchError),
    /// A promise broken although the call succeeded.
    Broken(String),
}

impl From<PunchError> for ApplyError {
    fn from(e: PunchError) -> Self {
        ApplyError::Lib(e)
    }
}

/// Checks that a forced strategy is the one that ran.
fn check_forced<S: Strategy>(forced: S, used: S, op: Operation) -> Result<(), ApplyError> {
    if !forced.is_auto() && forced != used {
        return Err(ApplyError::Broken(format!(
            "{op}: forced {forced} but the report says {used}"
        )));
    }
    Ok(())
}

fn apply(file: &File, op: &Op, config: &Config, block: u64) -> Result<Applied, ApplyError> {
    let chunk = config.move_chunk_blocks.max(1) * block;
    let io = |what: &str, e: std::io::Error| ApplyError::Broken(format!("{what}: {e}"));
    let used = |op: Operation, s: &dyn fmt::Display| Some(format!("{op}={s}"));
    Ok(match *op {
        Op::Write {
            offset,
            length,
            fill,
        } => {
            file.write_all_at(&fill_bytes(fill, offset, length), offset)
                .map_err(|e| io("pwrite", e))?;
            let _ = trim_past_eof(file, block);
            Applied {
                effect: Effect::Unchanged,
                used: None,
            }
        }
        Op::Punch { offset, length } => {
            let r = punch_hole(file, offset, length, config.punch)?;
            check_forced(config.punch, r.strategy, r.operation)?;
            let effect = match r.strategy {
                PunchStrategy::PunchHole => Effect::Freed,
                PunchStrategy::ZeroRange => Effect::Allocated,
                _ => Effect::Unchanged,
            };
            Applied {
                effect,
                used: used(r.operation, &r.strategy),
            }
        }
        Op::Zero { offset, length } => {
            let r = zero_range(file, offset, length, config.zero)?;
            check_forced(config.zero, r.strategy, r.operation)?;
            Applied {
                effect: Effect::Allocated,
                used: used(r.operation, &r.strategy),
            }
        }
        Op::Collapse { offset, length } => {
            let r = collapse_chunked(file.as_fd(), offset, length, config.shift, chunk)?;
            check_forced(config.shift, r.strategy, r.operation)?;
            Applied {
                effect: Effect::Unchanged,
                used: used(r.operation, &r.strategy),
            }
        }
        Op::Insert { offset, length } => {
            let r = insert_chunked(file.as_fd(), offset, length, config.shift, chunk)?;
            check_forced(config.shift, r.strategy, r.operation)?;
            Applied {
                effect: Effect::Unchanged,
                used: used(r.operation, &r.strategy),
            }
        }
        Op::Truncate { size } => {
            file.set_len(size).map_err(|e| io("ftruncate", e))?;
            Applied {
                effect: Effect::Unchanged,
                used: None,
            }
        }
        Op::Dig { min_hole } => {
            let options = DigOptions::new()
                .min_hole(min_hole)
                .method(config.dig_method)
                .chunk_size(chunk);
            let dug = dig_holes(file, &options)?;
            // Splitting an extent may cost a metadata block (ext4 counts
            // its extent-tree blocks in st_blocks), never more than the slack.
            if dug.allocated_after > dug.allocated_before + config.alloc_slack_blocks * block {
                return Err(ApplyError::Broken(format!(
                    "dig grew the allocation from {} to {}",
                    dug.allocated_before, dug.allocated_after
                )));
            }
            if dug.holes_punched > 0 && dug.zero_bytes == 0 {
                return Err(ApplyError::Broken("dig punched runs of no bytes".into()));
            }
            Applied {
                effect: Effect::Unchanged,
                used: used(Operation::Dig, &dug.method),
            }
        }
    })
}

/// Frees blocks a filesystem preallocated past the end of the file for an
/// extending write (xfs's speculative preallocation, up to gigabytes), so
/// an allocation bound measures the operations under test, not the setup
/// writes. Best effort: a filesystem that cannot punch keeps them (NFSv3
/// over xfs: the server preallocates, the client cannot free), and says
/// why.
pub fn trim_past_eof(file: &File, block: u64) -> rustix::io::Result<()> {
    let from = (rustix::fs::fstat(file)?.st_size as u64).div_ceil(block) * block;
    rustix::fs::fallocate(
        file,
        rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
        from,
        1 << 40,
    )
}

/// Contents and size equal, allocation within the model's bound.
pub(super) fn compare(
    file: &File,
    model: &Model,
    block: u64,
    config: &Config,
) -> Result<(), String> {
    let meta = file.metadata().map_err(|e| format!("fstat: {e}"))?;
    if meta.len() != model.len() {
        return Err(format!(
            "size differs: file {}, model {}",
            meta.len(),
            model.len()
        ));
    }
    let mut content = vec![0u8; model.len() as usize];
    file.read_exact_at(&mut content, 0)
        .map_err(|e| format!("reading the file back: {e}"))?;
    if let Some(at) = content.iter().zip(model.bytes()).position(|(a, b)| a != b) {
        return Err(format!(
            "content differs at offset {at}: file {:#04x}, model {:#04x}",
            content[at],
            model.bytes()[at]
        ));
    }
    if config.check_allocation {
        use std::os::unix::fs::MetadataExt;
        let bound = model.allocation_bound(block) + config.alloc_slack_blocks * block;
        let mut allocated = meta.blocks() * 512;
        if allocated > bound {
            // Where blocks past EOF cannot be freed, the excess may be the
            // filesystem's preallocation, not the operations': no verdict.
            if trim_past_eof(file, block).is_err() {
                return Ok(());
            }
            allocated = file.metadata().map_err(|e| format!("fstat: {e}"))?.blocks() * 512;
        }
        if allocated > bound {
            return Err(format!(
                "the file has {allocated} bytes allocated, more than the model allows ({} + slack {} = {bound})",
                model.allocation_bound(block),
                config.alloc_slack_blocks * block
            ));
        }
    }
    Ok(())
}
