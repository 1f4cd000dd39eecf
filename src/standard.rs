//! What every gRPC server of ours (the controller, the host agent, the simulator)
//! runs beside its own service: `grpc.health.v1.Health`, and server
//! reflection in both `v1` and `v1alpha`, because clients in the wild speak either
//! (Python's grpcio-reflection, grpcui, Postman and older grpcurl only v1alpha).
//!
//! Reflection lists exactly the services the server runs, not every service of our
//! descriptor set: an agent does not pretend to be a controller. And every server
//! accepts its connections with Nagle's algorithm off ([`incoming`]).

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;

use crate::{Error, Result};

/// The connections `listener` accepts, with Nagle's algorithm off. Left on, a small
/// answer waits for the peer's delayed ACK: an idle controller answered GetRollout in
/// 42 ms instead of well under one.
pub fn incoming(listener: TcpListener) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt;
    TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|stream| {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::warn!(error = %e, "cannot turn Nagle's algorithm off on a connection");
            }
        })
    })
}

/// What a server adds beside its own service. Add all four to the tonic router.
pub struct Standard<H, R1, R0> {
    pub health: H,
    pub reflection_v1: R1,
    pub reflection_v1alpha: R0,
}

/// The health and reflection services for a server whose own service is `S`.
/// Health says SERVING for `S` (and for the server as a whole, "") until `shutdown`
/// fires, then NOT_SERVING, so load balancers and probes learn of a stop before the
/// port closes.
pub async fn services<S: NamedService>(
    shutdown: &CancellationToken,
) -> Result<
    Standard<
        tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
        tonic_reflection::pb::v1::server_reflection_server::ServerReflectionServer<
            impl tonic_reflection::pb::v1::server_reflection_server::ServerReflection,
        >,
        tonic_reflection::pb::v1alpha::server_reflection_server::ServerReflectionServer<
            impl tonic_reflection::pb::v1alpha::server_reflection_server::ServerReflection,
        >,
    >,
> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<S>().await;
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        reporter.set_not_serving::<S>().await;
        reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
    });
    let builder = || {
        let mut b = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
            .include_reflection_service(false);
        for name in [
            S::NAME,
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ] {
            b = b.with_service_name(name);
        }
        b
    };
    let reflection_v1 = builder()
        .build_v1()
        .map_err(|e| Error::Internal(format!("reflection: {e}")))?;
    let reflection_v1alpha = builder()
        .build_v1alpha()
        .map_err(|e| Error::Internal(format!("reflection: {e}")))?;
    Ok(Standard {
        health,
        reflection_v1,
        reflection_v1alpha,
    })
}
