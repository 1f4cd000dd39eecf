//! Working time customers lose while their hosts wait for a restart: the cost model
//! the restart orders are measured by, and its exact optimum.
//!
//! - [`model`]: the cost model: weighted working minutes lost, and its optimum.
//! - [`optimum`]: `least-business-downtime`: the optimum re-planned at every batch.
//! - [`transport`]: the exact optimum of assigning classes of interchangeable hosts
//!   to minutes of fixed restart capacity (min-cost flow), checked against brute force.

pub mod model;
pub mod optimum;
pub mod transport;
