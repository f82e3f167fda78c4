//! What `sparsekit --version` says: the version every sparsekit crate of
//! this build shares (the workspace's) and the git commit it was built
//! from (see build.rs; "unknown" outside a checkout or package).

/// `-V`: `0.1.0 (git 0123456789ab)`.
pub(crate) const SHORT: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("SPARSEKIT_GIT_COMMIT"),
    ")"
);

/// `--version`: the short form, then the crates it was built with.
pub(crate) const LONG: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("SPARSEKIT_GIT_COMMIT"),
    ")\ncrates: sparsekit-cli, sparsekit-caps, sparsekit-extents, sparsekit-punch, \
     sparsekit-clone, sparsekit-copy, sparsekit-probe, sparsekit-sys, all ",
    env!("CARGO_PKG_VERSION"),
    " (one workspace version)"
);
