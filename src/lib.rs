pub mod agent;
pub mod engine;
pub mod error;
pub mod fleet;
pub mod plan;
pub mod proto;
pub mod server;
pub mod store;
pub use error::{Error, Result};
