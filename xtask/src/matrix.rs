//! `matrix readme [--check] | merge FILE… | diff A B`: the published matrix,
//! done by the bench binary.

use crate::util::{bench_binary, run};

/// `matrix readme [--check]` / `matrix merge FILE…`, done by the bench binary.
pub(crate) fn command(args: &[String]) -> anyhow::Result<()> {
    let mut c = bench_binary("matrix", true);
    c.args(args);
    run(c)
}
