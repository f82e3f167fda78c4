//! `sparsekit-testbench`: run with `cargo xtask testbench` (root).

use anyhow::{Context, bail};
use sparsekit_testbench::{bench, cleanup, defs, publish, runner, scenarios, selftest};
use std::process::ExitCode;

const USAGE: &str = "\
usage: sparsekit-testbench run [--fs NAME[,NAME…]] [--filter TEXT[,TEXT…]] [--no-install] [--no-selftest] [--bless]
                               [--out DIR] [--no-compare]
       sparsekit-testbench collect DIR [--bless]
       sparsekit-testbench list
       sparsekit-testbench results-sample DIR
       sparsekit-testbench matrix readme [--check] | matrix merge FILE… | matrix diff A B
       sparsekit-testbench bench [NAME…]";

fn main() -> ExitCode {
    let code = match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("testbench: {e:#}");
            ExitCode::FAILURE
        }
    };
    cleanup::settle();
    code
}

fn real_main() -> anyhow::Result<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let defs = defs::load(&defs::matrix_path())?;
    match args.first().map(String::as_str) {
        Some("run") => run(&args[1..], &defs),
        // The host's side of a VM run (xtask's kernel launcher): judge and
        // bless the column a guest wrote.
        Some("collect") => {
            let Some(dir) = args.get(1) else {
                eprintln!("{USAGE}");
                return Ok(ExitCode::from(2));
            };
            let bless = match args.get(2).map(String::as_str) {
                None => false,
                Some("--bless") => true,
                Some(other) => bail!("unknown argument {other:?}\n{USAGE}"),
            };
            let ok = publish::collect(std::path::Path::new(dir), &defs, bless)?;
            if !ok {
                println!("FAILED: a capability is less supported than the committed matrix says");
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Some("matrix") => {
            publish::matrix_command(&args[1..], &defs)?;
            Ok(ExitCode::SUCCESS)
        }
        // A run with every kind of case and hostile strings, written as the
        // bench writes its results, for `cargo xtask ci` to check with
        // readers we did not write (no root needed).
        Some("results-sample") => {
            let dir = std::path::PathBuf::from(args.get(1).context("results-sample DIR")?);
            std::fs::create_dir_all(&dir)?;
            publish::write_ci_results(&dir, &sparsekit_testbench::results::sample())?;
            Ok(ExitCode::SUCCESS)
        }
        Some("list") => {
            for d in &defs {
                println!("fs {}", d.name);
            }
            for s in scenarios::all() {
                println!("scenario {}", s.name);
            }
            Ok(ExitCode::SUCCESS)
        }
        Some("bench") => {
            require_root("the benchmarks")?;
            cleanup::install_signal_handlers()?;
            let wanted = &bench::take_loop_io(&args[1..])?;
            println!("bench: loop devices with {:?} I/O", bench::loop_io());
            for (name, f) in bench::all() {
                if wanted.is_empty() || wanted.iter().any(|w| w == name) {
                    f(wanted)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        // The frozen-FUSE daemon of the probe scenarios (scenarios/probe/fuse.rs).
        Some("probe-fuse-daemon") => {
            scenarios::probe::fuse::daemon_main(&args[1..])?;
            Ok(ExitCode::SUCCESS)
        }
        // The fault-injecting FUSE daemon (scenarios/faults/fs.rs).
        Some("faults-fuse-daemon") => {
            scenarios::faults::fs::daemon_main(&args[1..])?;
            Ok(ExitCode::SUCCESS)
        }
        // The self-test's child process (see selftest.rs).
        Some("selftest-child") => {
            let [_, mode, fs] = &args[..] else {
                bail!("selftest-child MODE FS")
            };
            let def = defs.iter().find(|d| &d.name == fs).context("no such fs")?;
            selftest::child(def, mode == "panic")?;
            Ok(ExitCode::FAILURE)
        }
        _ => {
            eprintln!("{USAGE}");
            Ok(ExitCode::from(2))
        }
    }
}

fn require_root(what: &str) -> anyhow::Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!(
            "{what} need root: they make loop devices, mkfs and mount (run as root, e.g. sudo -E cargo xtask testbench)"
        );
    }
    Ok(())
}

fn run(args: &[String], defs: &[defs::FsDef]) -> anyhow::Result<ExitCode> {
    require_root("the test bench")?;
    let mut opts = runner::RunOptions {
        install: true,
        filter: None,
    };
    let mut only: Option<Vec<String>> = None;
    let mut selftest = true;
    let mut publish_opts = publish::PublishOptions {
        out: publish::out_dir(),
        compare: true,
        bless: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--fs" => {
                only = Some(
                    it.next()
                        .context("--fs NAME")?
                        .split(',')
                        .map(String::from)
                        .collect(),
                )
            }
            "--filter" => opts.filter = Some(it.next().context("--filter TEXT")?.clone()),
            "--no-install" => opts.install = false,
            "--no-selftest" => selftest = false,
            "--bless" => publish_opts.bless = true,
            "--out" => publish_opts.out = it.next().context("--out DIR")?.into(),
            "--no-compare" => publish_opts.compare = false,
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if publish_opts.bless && !publish_opts.compare {
        bail!("--bless needs the comparison (drop --no-compare)");
    }
    if let Some(only) = &only {
        for name in only {
            if !defs.iter().any(|d| &d.name == name) {
                bail!("no filesystem {name:?} in matrix.toml");
            }
        }
    }
    cleanup::install_signal_handlers()?;
    let started = std::time::SystemTime::now();
    let all = scenarios::all();
    let mut reports = Vec::new();
    if selftest {
        let ext4 = defs
            .iter()
            .find(|d| d.name == "ext4")
            .context("matrix.toml lacks ext4")?;
        reports.push(selftest::run(ext4));
        // The NFS server's guards too, once, where NFS runs at all.
        let nfs = defs.iter().find(|d| {
            d.nfs_version().is_some() && only.as_ref().is_none_or(|o| o.contains(&d.name))
        });
        if let Some(def) = nfs {
            if sparsekit_testbench::tools::ensure(def, opts.install).is_ok() {
                reports.push(selftest::nfs(def));
            }
        }
    }
    for def in defs {
        if only.as_ref().is_some_and(|o| !o.contains(&def.name)) {
            continue;
        }
        reports.push(runner::run_fs(def, &all, &opts));
    }
    let ok = runner::print_summary(&reports);
    let no_regression = publish::after_run(&reports, defs, &publish_opts, started)?;
    let leaks = cleanup::leaks_of(std::process::id());
    if !leaks.is_empty() {
        println!("LEAKED: {leaks:?}");
        return Ok(ExitCode::FAILURE);
    }
    if !no_regression {
        println!("FAILED: a capability is less supported than the committed matrix says");
    }
    Ok(if ok && no_regression {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
