//! The standard gRPC services every server of ours runs beside its own (controller,
//! host agent, simulator), so that generic tools work without our .proto files:
//! grpc.health.v1 (load balancers, systemd, grpc_health_probe) and server reflection
//! in both v1 (grpcurl) and v1alpha (Python's grpcio-reflection, grpcui, Postman).

mod common;

use common::agents::HostDir;
use common::*;
use rollout::agent::SimulatorOptions;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::{v1, v1alpha};

async fn channel(url: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// `reflect_v1` and `reflect_v1alpha`: list the services through that version of
/// reflection, and ask for the file that defines `symbol` (the two versions are the
/// same protocol in two generated packages).
macro_rules! reflect {
    ($name:ident, $version:ident) => {
        async fn $name(channel: Channel, symbol: &str) -> (Vec<String>, usize) {
            use $version::server_reflection_request::MessageRequest;
            use $version::server_reflection_response::MessageResponse;
            let requests = [
                MessageRequest::ListServices(String::new()),
                MessageRequest::FileContainingSymbol(symbol.into()),
            ]
            .map(|m| $version::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(m),
            });
            let mut client = $version::server_reflection_client::ServerReflectionClient::new(channel);
            let mut responses = client
                .server_reflection_info(tokio_stream::iter(requests))
                .await
                .unwrap()
                .into_inner();
            let Some(MessageResponse::ListServicesResponse(list)) =
                responses.message().await.unwrap().unwrap().message_response
            else {
                panic!("expected a service list");
            };
            let Some(MessageResponse::FileDescriptorResponse(files)) =
                responses.message().await.unwrap().unwrap().message_response
            else {
                panic!("expected the file of {symbol}");
            };
            (
                list.service.into_iter().map(|s| s.name).collect(),
                files.file_descriptor_proto.len(),
            )
        }
    };
}

reflect!(reflect_v1, v1);
reflect!(reflect_v1alpha, v1alpha);

/// SERVING for `service`, and for the server as a whole.
async fn assert_serving(channel: Channel, service: &str) {
    let mut health = HealthClient::new(channel);
    for name in [service, ""] {
        let status = health
            .check(HealthCheckRequest { service: name.into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(status.status, 1, "`{name}` is SERVING");
    }
}

/// Reflection in v1 and v1alpha lists exactly the services each server runs (an
/// agent is not a controller) and describes them; health checks answer SERVING on
/// the controller, a real agent process and the simulator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_speaks_health_and_both_reflection_versions() {
    let sim = Sim::start(10, SimulatorOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(&dir.path().join("data"), &sim.fleet).await;
    let _ = controller.client().await;
    let host = HostDir::new(dir.path(), "h1", "true", "30s");
    let mut agent = host.start("127.0.0.1:0").await;

    let standard = [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ];
    let servers = [
        (controller.url.clone(), "rollout.v1.Controller"),
        (format!("http://{}", agent.addr), "rollout.v1.Agent"),
        (format!("http://{}", sim.addr), "rollout.v1.Agent"),
    ];
    for (url, own) in &servers {
        let mut expected: Vec<String> = standard.iter().chain([own]).map(|s| s.to_string()).collect();
        expected.sort();
        for (version, (mut names, files)) in [
            ("v1", reflect_v1(channel(url).await, own).await),
            ("v1alpha", reflect_v1alpha(channel(url).await, own).await),
        ] {
            names.sort();
            assert_eq!(names, expected, "{url} through {version}");
            assert!(files > 0, "{url} describes {own} through {version}");
        }
        assert_serving(channel(url).await, own).await;
    }

    let _ = agent.terminate(std::time::Duration::from_secs(30)).await;
    controller.stop().await;
    sim.stop().await;
}

/// A simulator that starts shutting down tells its health watchers NOT_SERVING before
/// its port closes, as the controller does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_agent_says_not_serving() {
    let sim = Sim::start(5, SimulatorOptions::default()).await;
    let mut health = HealthClient::new(channel(&format!("http://{}", sim.addr)).await);
    let mut watch = health
        .watch(HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner();
    let first = within(30, "the first health status", watch.message()).await;
    assert_eq!(first.unwrap().unwrap().status, 1, "SERVING");
    sim.begin_stop();
    let next = within(30, "the status after the stop began", watch.message()).await;
    assert_eq!(next.unwrap().unwrap().status, 2, "NOT_SERVING");
    drop(watch);
    drop(health);
    sim.stop().await;
}
