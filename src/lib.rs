pub mod fleet;
pub mod plan;
pub mod proto;
pub mod store;
