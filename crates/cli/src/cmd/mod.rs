//! One module per subcommand: its clap `Args` and its `run`.

pub(crate) mod caps;
pub(crate) mod clone;
pub(crate) mod clone_json;
pub(crate) mod copy;
pub(crate) mod dig;
pub(crate) mod map;
pub(crate) mod punch;
pub(crate) mod stat;
