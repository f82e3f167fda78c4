//! Every scenario of the bench, one module per op crate.

use crate::scenario::Scenario;

pub mod caps;
pub mod clone;
pub mod compare;
pub mod copy;
pub mod extents;
pub mod probe;
pub mod punch;

/// All scenarios, in run order.
pub fn all() -> Vec<Scenario> {
    let mut v = Vec::new();
    v.extend(caps::scenarios());
    v.extend(extents::scenarios());
    v.extend(clone::scenarios());
    v.extend(punch::scenarios());
    v.extend(copy::scenarios());
    v.extend(compare::scenarios());
    v.extend(probe::scenarios());
    v
}
