//! The host side of the Agent protocol.
//!
//! - [`simulator`]: `rollout agent --simulate FLEET.yaml` serves every host of a
//!   fleet file on one port, with latency and failures, for demos, tests and benchmarks.

pub mod simulator;

pub use simulator::{Simulator, SimulatorOptions};
