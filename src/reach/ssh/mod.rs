//! The SSH driver: hosts whose fleet address is `ssh://USER@HOST[:PORT]`, reached
//! with nothing installed on them. The controller runs a small POSIX sh program
//! over the session ([`host`]) that keeps an operation exactly once on the host and
//! fences deposed controllers by their epoch.

pub mod config;
pub mod fleet;
pub mod host;
pub mod known_hosts;
pub use fleet::SshFleet;
