//! `matrix readme [--check] | merge FILE… | diff A B`: the published matrix,
//! done by the bench binary.

use crate::util::{cargo, run};

/// `matrix readme [--check]` / `matrix merge FILE…`, done by the bench binary.
pub(crate) fn command(args: &[String]) -> anyhow::Result<()> {
    let mut c = cargo();
    c.args([
        "run",
        "--quiet",
        "--release",
        "--locked",
        "-p",
        "sparsekit-testbench",
        "--",
        "matrix",
    ])
    .args(args);
    run(c)
}
