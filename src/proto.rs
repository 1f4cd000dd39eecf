//! The generated gRPC and record types (`proto/rollout/v1`), and the descriptor set
//! served by gRPC reflection.

/// `rollout.v1`: the Controller and Agent services and the store's records.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("rollout.v1");
}

/// Encoded `FileDescriptorSet` of every `.proto` file, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/rollout_descriptor.bin"));
