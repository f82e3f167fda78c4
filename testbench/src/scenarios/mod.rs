//! Every scenario of the bench, one module per op crate.

use crate::scenario::Scenario;

pub mod caps;
pub mod clone;
pub mod compare;
pub mod copy;
pub mod dig_writers;
pub mod extents;
pub mod faults;
pub mod nfs;
pub mod probe;
pub mod punch;
pub mod shift_kill;

/// All scenarios, in run order.
pub fn all() -> Vec<Scenario> {
    let mut v = Vec::new();
    v.extend(caps::scenarios());
    v.extend(extents::scenarios());
    v.extend(clone::scenarios());
    v.extend(punch::scenarios());
    v.extend(dig_writers::scenarios());
    v.extend(shift_kill::scenarios());
    v.extend(copy::scenarios());
    v.extend(copy::blockdev_scenarios());
    v.extend(compare::scenarios());
    v.extend(probe::scenarios());
    v.extend(faults::scenarios());
    v.extend(nfs::scenarios());
    v
}
