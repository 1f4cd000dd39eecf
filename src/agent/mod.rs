//! The host side of the Agent protocol.
//!
//! - [`host`]: `rollout agent --config agent.yaml`, the agent of one real host;
//!   [`config`] its file, [`command`] how it runs commands, [`state`] what it remembers.
//! - [`simulator`]: `rollout agent --simulate FLEET.yaml` serves every host of a
//!   fleet file on one port, with latency and failures, for demos, tests and benchmarks.

pub mod command;
pub mod config;
pub mod heartbeat;
pub mod host;
pub mod simulator;
pub mod state;

pub use simulator::{Simulator, SimulatorOptions};
