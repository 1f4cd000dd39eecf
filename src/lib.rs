//! `rollout`: a mitigation rollout orchestrator.
//!
//! During an incident an operator rolls a fix (or a rollback) across a fleet in
//! cumulative percentage waves, watches health between waves, can say at any moment
//! how much of the selection has the fix, and survives a controller crash without
//! applying anything twice.
//!
//! # Layout
//!
//! - [`plan`]: plan files and the structured plan message, validated strictly.
//! - [`fleet`]: the fleet file, the inventory, and `fleet generate`.
//! - [`hours`]: customers' business hours and the priority they give hosts.
//! - [`store`]: the domain store (rollouts, per-host intents and results, leases,
//!   restart jobs, inventory, audit log) over a backend seam; sled is its backend.
//! - [`engine`]: the rollout state machine (a pure step function), wave selection,
//!   the `Fleet` trait to reach agents, and the driver that carries decisions out.
//! - [`agent`]: the host side of the Agent protocol; `--simulate` serves a whole fleet.
//! - [`server`]: the gRPC Controller service, health and reflection, `rollout serve`.
//! - [`cli`]: the operator's commands, a gRPC client, and `rollout demo`.
//! - [`dashboard`]: the live read-only web dashboard (`rollout serve --http-listen`).
//! - [`error`]: the crate's error, and the one mapping from errors to gRPC codes.
//! - [`proto`]: generated protobuf and gRPC code.

pub mod agent;
pub mod analysis;
pub mod auth;
pub mod cli;
pub mod dashboard;
pub mod engine;
pub mod error;
pub mod fleet;
pub mod hours;
pub mod intern;
pub mod plan;
pub mod proto;
pub mod reach;
pub mod retry;
pub mod server;
pub mod standard;
pub mod store;
pub mod text;
pub mod tls;
pub mod yamlfile;

pub use error::{Error, Result};
