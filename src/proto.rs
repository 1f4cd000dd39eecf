//! The generated gRPC and record types (`proto/rollout/v1`), and the descriptor set
//! served by gRPC reflection.

/// `rollout.v1`: the Controller and Agent services and the store's records.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("rollout.v1");
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
