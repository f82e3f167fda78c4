//! Property tests inside the bench: a bounded number of cases and a seed
//! printed on failure (and settable with `SPARSEKIT_BENCH_SEED`) so a failure
//! on one filesystem can be replayed.

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestError, TestRng, TestRunner};

/// Runs `test` on `cases` values of `strategy`; on failure the error names
/// the seed, the shrunk input and the reason.
pub fn run<S: Strategy>(
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), String>,
) -> anyhow::Result<()>
where
    S::Value: std::fmt::Debug,
{
    let seed: u64 = std::env::var("SPARSEKIT_BENCH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let result = runner.run(&strategy, |value| {
        test(value).map_err(proptest::test_runner::TestCaseError::fail)
    });
    match result {
        Ok(()) => Ok(()),
        Err(TestError::Fail(why, input)) => anyhow::bail!(
            "property failed (replay with SPARSEKIT_BENCH_SEED={seed}): {why}; minimal input: {input:?}"
        ),
        Err(TestError::Abort(why)) => {
            anyhow::bail!("property aborted (SPARSEKIT_BENCH_SEED={seed}): {why}")
        }
    }
}

/// One value of `strategy` (for scenarios that want a single random case).
pub fn sample<S: Strategy>(strategy: S) -> S::Value {
    let mut runner = TestRunner::deterministic();
    strategy
        .new_tree(&mut runner)
        .expect("strategy generates")
        .current()
}
