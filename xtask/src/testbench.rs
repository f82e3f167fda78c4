//! `testbench [ARGS]`: the privileged bench, here or (`--kernel`) in a VM.

use crate::util::{cargo, run};

/// Builds and runs the bench binary (release: the scenarios do real I/O).
pub(crate) fn command(args: &[String]) -> anyhow::Result<()> {
    crate::setup::ensure(&["libclang-dev"])?;
    if let Some(k) = crate::kernel::parse_args(args)? {
        return crate::kernel::run_kernels(&k);
    }
    let started = std::time::SystemTime::now();
    // Scenarios that check the CLI's exit codes (probe: `sparsekit stat
    // --timeout` on a frozen FUSE mount) run the release binary.
    let mut c = cargo();
    c.args(["build", "--release", "--locked", "-p", "sparsekit-cli"]);
    run(c)?;
    let mut c = cargo();
    c.args([
        "run",
        "--release",
        "--locked",
        "-p",
        "sparsekit-testbench",
        "--",
        "run",
    ])
    .args(args);
    let bench = run(c);
    // The documents of this very run, read back by other readers; a
    // failing bench still wrote them (unless it failed before the end).
    let dir = crate::util::root().join("target/testbench");
    let fresh = |name: &str| {
        std::fs::metadata(dir.join(name))
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= started)
    };
    let checked = if fresh("junit.xml") && fresh("kcidb.json") && fresh("counts.json") {
        crate::results::check(&dir)
    } else {
        Err(anyhow::anyhow!(
            "the bench did not write junit.xml, kcidb.json and counts.json into {}",
            dir.display()
        ))
    };
    bench.and(checked)
}
