//! The generated gRPC and record types (`proto/rollout/v1`), their states' names as
//! people read them (one definition for the CLI, the dashboard and metrics), and the
//! descriptor set served by gRPC reflection.

/// `rollout.v1`: the Controller and Agent services and the store's records.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("rollout.v1");
}

/// `etcdserverpb`: the part of etcd's v3 API the etcd store backend calls
/// (`proto/etcd/rpc.proto`).
pub mod etcd {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("etcdserverpb");
}

impl v1::RolloutState {
    /// True once the rollout will change nothing more by itself (only `rollout retry`
    /// or a new plan can). One definition for the API, the CLI, metrics and pages.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            v1::RolloutState::Succeeded
                | v1::RolloutState::CompletedWithFailures
                | v1::RolloutState::Failed
                | v1::RolloutState::Aborted
        )
    }

    /// The state as people and scripts read it (`rollout status`, metrics labels).
    pub fn label(self) -> &'static str {
        match self {
            v1::RolloutState::Unspecified => "unknown",
            v1::RolloutState::Pending => "pending",
            v1::RolloutState::Running => "running",
            v1::RolloutState::Baking => "baking",
            v1::RolloutState::Paused => "paused",
            v1::RolloutState::Halted => "halted",
            v1::RolloutState::RollingBack => "rolling-back",
            v1::RolloutState::Succeeded => "succeeded",
            v1::RolloutState::CompletedWithFailures => "completed-with-failures",
            v1::RolloutState::Failed => "failed",
            v1::RolloutState::Aborted => "aborted",
            v1::RolloutState::AwaitingApproval => "awaiting-approval",
        }
    }
}

impl v1::WaveState {
    /// The wave's state as people and scripts read it (CLI, JSON, dashboard).
    pub fn label(self) -> &'static str {
        match self {
            v1::WaveState::Unspecified => "unknown",
            v1::WaveState::Pending => "pending",
            v1::WaveState::Running => "running",
            v1::WaveState::Baking => "baking",
            v1::WaveState::Done => "done",
            v1::WaveState::Halted => "halted",
        }
    }
}

impl v1::RestartJobState {
    /// The restart job's state as people and scripts read it (CLI, metrics labels,
    /// the audit log).
    pub fn label(self) -> &'static str {
        match self {
            v1::RestartJobState::Unspecified => "unknown",
            v1::RestartJobState::Running => "running",
            v1::RestartJobState::Succeeded => "succeeded",
            v1::RestartJobState::Failed => "failed",
            v1::RestartJobState::Cancelled => "cancelled",
            v1::RestartJobState::CompletedWithFailures => "completed-with-failures",
        }
    }
}

/// Encoded `FileDescriptorSet` of every `.proto` file, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/rollout_descriptor.bin"));

/// The codec of every generated client and server: prost's, except that a message
/// that does not decode (a string that is not UTF-8, a truncated field) is the
/// sender's fault and answered with InvalidArgument, not Internal.
pub mod codec {
    use prost::Message;
    use tonic::Status;
    use tonic::codec::{BufferSettings, DecodeBuf};
    use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

    pub struct Codec<T, U>(ProstCodec<T, U>);

    impl<T, U> Default for Codec<T, U> {
        fn default() -> Self {
            Codec(ProstCodec::default())
        }
    }

    impl<T, U> tonic::codec::Codec for Codec<T, U>
    where
        T: Message + Send + 'static,
        U: Message + Default + Send + 'static,
    {
        type Encode = T;
        type Decode = U;
        type Encoder = ProstEncoder<T>;
        type Decoder = Decoder<U>;

        fn encoder(&mut self) -> Self::Encoder {
            self.0.encoder()
        }

        fn decoder(&mut self) -> Self::Decoder {
            Decoder(self.0.decoder())
        }
    }

    pub struct Decoder<U>(ProstDecoder<U>);

    impl<U: Message + Default> tonic::codec::Decoder for Decoder<U> {
        type Item = U;
        type Error = Status;

        fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
            // The one Status built outside `crate::error`: tonic's codec wants one, and
            // this module is below the crate's error (which imports the engine).
            self.0.decode(buf).map_err(|status| {
                Status::invalid_argument(format!(
                    "the message does not decode ({}); every string must be UTF-8",
                    status.message()
                ))
            })
        }

        fn buffer_settings(&self) -> BufferSettings {
            self.0.buffer_settings()
        }
    }
}
