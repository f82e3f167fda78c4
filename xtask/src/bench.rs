//! `bench [NAME…]`: benchmarks against peer tools.

use crate::util::{cargo, run};

/// Builds the CLI and runs the benchmarks (and the zero-detector microbenchmark).
pub(crate) fn command(args: &[String]) -> anyhow::Result<()> {
    crate::setup::ensure(&["libclang-dev", "time"])?;
    let mut c = cargo();
    c.args(["build", "--release", "--locked", "-p", "sparsekit-cli"]);
    run(c)?;
    if args.is_empty() || args.iter().any(|a| a == "zero") {
        let mut c = cargo();
        c.args([
            "bench",
            "--locked",
            "-p",
            "sparsekit-extents",
            "--bench",
            "zero_detect",
        ]);
        run(c)?;
    }
    let rest: Vec<&String> = args.iter().filter(|a| *a != "zero").collect();
    if !args.is_empty() && rest.is_empty() {
        return Ok(());
    }
    let mut c = cargo();
    c.args([
        "run",
        "--release",
        "--locked",
        "-p",
        "sparsekit-testbench",
        "--",
        "bench",
    ])
    .args(rest);
    run(c)
}
