//! Benchmarks against peer tools, run by `cargo xtask bench [NAME]` (root).
//! Each prints a table of measurements and the ratios against the peers.

pub mod clone;
pub mod compare;
pub mod copy;
pub mod dig;
pub mod extents;
mod image;
pub mod measure;
pub mod nfs;
pub mod probe;

/// A benchmark: name and entry point (arguments after the name).
pub type Bench = (&'static str, fn(&[String]) -> anyhow::Result<()>);

/// All benchmarks.
pub fn all() -> Vec<Bench> {
    vec![
        ("extents", extents::run),
        ("clone", clone::run),
        ("copy", copy::run),
        ("compare", compare::run),
        ("probe", probe::run),
        ("dig", dig::run),
        ("nfs", nfs::run),
    ]
}
