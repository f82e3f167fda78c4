//! One module per subcommand: its clap `Args` and its `run`.

pub(crate) mod caps;
pub(crate) mod clone;
pub(crate) mod clone_json;
pub(crate) mod compare;
pub(crate) mod copy;
pub(crate) mod copy_target;
pub(crate) mod dig;
pub(crate) mod map;
pub(crate) mod punch;
pub(crate) mod shift;
pub(crate) mod stat;
