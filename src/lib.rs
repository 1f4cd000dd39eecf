//! `rollout`: a mitigation rollout orchestrator.
//!
//! During an incident an operator rolls a fix (or a rollback) across a fleet in
//! cumulative percentage waves, watches health between waves, can say at any moment
//! how much of the selection has the fix, and survives a controller crash without
//! applying anything twice.
//!
//! # Layout
//!
//! Top to bottom: a module imports only modules below it, never one above
//! (`python3 ../shared/tools/module-cycles.py src` finds a circle, and CI runs it).
//!
//! - [`cli`]: the operator's commands (a gRPC client), `rollout serve` and `rollout
//!   agent` from their flags, and `rollout demo`.
//! - [`server`]: the gRPC Controller API and the wiring of one controller process
//!   (engine, API, metrics and dashboard while it leads; what it serves standing by).
//! - [`dashboard`]: the live web dashboard (`rollout serve --http-listen`), where operators
//!   act, and the answers to Slack's `Approve` buttons.
//! - [`sso`]: single sign-on for the dashboard: the OpenID Connect code flow, the
//!   `--oidc` file, claims to principals and roles.
//! - [`notify`]: telling the incident room: the sinks a controller notifies.
//! - [`agent`]: the host side of the Agent protocol; `--simulate` serves a whole fleet.
//! - [`auth`]: tokens, roles and the one table of who may call what.
//! - [`cluster`]: high availability on etcd: the election and its epoch, the
//!   campaign (standing by until leading), the forwarding service a standby's API is,
//!   the controllers' registry, the leader's dashboard through a standby's.
//! - [`tls`]: TLS from PEM files, server and client side.
//! - [`standard`]: what every gRPC server of ours runs beside its own service
//!   (health, reflection) and how it accepts connections.
//! - [`error`]: the crate's error, wrapping each module's own, and the one mapping
//!   from errors to gRPC codes.
//! - [`engine`]: the rollout state machine (a pure step function), wave selection,
//!   restart jobs, the dispatcher that sends hosts their work, and the tasks that
//!   carry decisions out.
//! - [`inventory`]: the fleet file, the inventory it holds, and `fleet generate`.
//! - [`plan`]: plan files and the structured plan message, validated strictly.
//! - [`telemetry`]: telemetry gates: a plan's checks as validated, judged, and the
//!   Prometheus client.
//! - [`reach`]: how we reach a host: the `Fleet` trait, one file per driver (gRPC to
//!   agents), and the deadlines and retry guard every driver shares.
//! - [`store`]: the domain store (rollouts, per-host intents and results, leases,
//!   restart jobs, inventory, audit log) over a backend seam: sled, or etcd.
//! - [`yamlfile`]: the YAML files people write besides plans, read strictly, errors
//!   with file:line:column.
//! - [`downtime`]: the working time customers lose while hosts wait for a restart,
//!   and its exact optimum.
//! - [`hours`]: customers and their business hours, and the priority they give hosts.
//! - [`retry`]: backoff, the retry budget and breakers: one implementation for
//!   every caller (agents, Prometheus).
//! - [`summary`]: the status text: one plain-English paragraph per rollout and
//!   restart job, made from its snapshot alone.
//! - [`intern`]: one shared copy of each string a million hosts repeat.
//! - [`ident`]: the one grammar of identifiers from outside (host and customer ids,
//!   label keys, versions), checked where they enter.
//! - [`event_type`]: the notification event types, one enum with the contract's names.
//! - [`clock`]: the wall clock every user gets injected, the drill clock, instants as
//!   people read them.
//! - [`testing`]: how a test that needs an outside program says it could not run.
//! - [`text`]: input quoted on one line, durations as people write them.
//! - [`pem`]: PEM certificate and key files checked where they are named.
//! - [`proto`]: generated protobuf and gRPC code, and the states' names.

pub mod agent;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod dashboard;
pub mod downtime;
pub mod engine;
pub mod error;
pub mod event_type;
pub mod freeze;
pub mod hours;
pub mod ident;
pub mod intern;
pub mod inventory;
pub mod notify;
pub mod pem;
pub mod plan;
pub mod proto;
pub mod reach;
pub mod retry;
pub mod server;
pub mod sso;
pub mod standard;
pub mod store;
pub mod summary;
pub mod telemetry;
pub mod testing;
pub mod text;
pub mod tls;
pub mod yamlfile;

pub use error::{Error, Result};

/// The names these modules had before (`fleet` holds the inventory files,
/// `analysis` the telemetry checks), for code outside the crate written against
/// them.
#[doc(hidden)]
pub use inventory as fleet;
#[doc(hidden)]
pub use telemetry as analysis;
