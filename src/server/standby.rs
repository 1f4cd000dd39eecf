//! What this process serves while it stands by (`crate::cluster::campaign` decides
//! when): the API, whose Controller calls go to the leader through the forwarding
//! service and whose health says the Controller is not served here; its metrics; and
//! the leader's dashboard, shown through this one's.

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Options, Security, metrics};
use crate::Result;
use crate::auth::AuthLayer;
use crate::auth::refusals::{self, Refusals};
use crate::cluster::{self, Controllers, Forwarder};
use crate::standard::incoming;

/// Serves the standby's endpoints until `done`: the API on `listener` answering
/// through `forward`, `me` being this standby's advertised URL, and with `--http-listen` and `--metrics-listen` the leader's
/// dashboard and this standby's metrics.
pub fn serve(
    listener: &TcpListener,
    options: &Options,
    forward: Forwarder,
    peers: Controllers,
    me: &str,
    done: CancellationToken,
) -> Result<Vec<JoinHandle<()>>> {
    let mut standing = vec![tokio::spawn(serve_api(
        super::share(listener)?,
        super::api_server(&options.security)?,
        forward,
        options.security.clone(),
        done.clone(),
    ))];
    super::rotation::on_hangup(super::rotation::Reload::tokens(&options.security), None, done.clone());
    let metrics = metrics::Metrics::standby(peers.clone());
    if let Some(http) = &options.http {
        let security = &options.security;
        // /metrics beside the leader's pages needs a viewer's token (the sessions
        // are the leader's, and only it can check them).
        let guarded = metrics::router(metrics.clone()).route_layer(axum::middleware::from_fn_with_state(
            security.credentials.clone(),
            super::web::viewer_only,
        ));
        let app = cluster::proxy::router(cluster::proxy::leader_dashboard(peers), me.to_string())?
            .merge(guarded)
            .layer(axum::middleware::from_fn_with_state(
                security.http_hosts(http),
                super::web::host_check,
            ));
        let served = super::web::serve_http(
            super::share(http)?,
            app,
            done.clone(),
            "dashboard (standby)",
            security.http_tls.clone(),
        );
        standing.push(tokio::spawn(served));
    }
    if let Some(listener) = &options.metrics {
        let served = super::web::serve_http(
            super::share(listener)?,
            metrics::router(metrics.clone()),
            done.clone(),
            "metrics (standby)",
            None,
        );
        standing.push(tokio::spawn(served));
    }
    // Ready to serve as a standby.
    super::service::ready(&options.ready_lines, "standing by");
    Ok(standing)
}

/// A refusal at a standby, in its log.
async fn logged(line: refusals::Line) {
    let r = line.refusal;
    tracing::warn!(principal = %r.principal, role = %r.role, method = %r.method, "{}: {}", line.detail, r.message);
}

/// The API of a standby: every Controller call forwarded (or answered Unavailable,
/// naming the leader), health saying the Controller is not served here, until `done`.
async fn serve_api(
    listener: TcpListener,
    server: tonic::transport::Server,
    forward: Forwarder,
    security: Security,
    done: CancellationToken,
) {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_not_serving::<Forwarder>().await;
    // A standby writes no audit log (the leader does): its refusals, sampled alike,
    // go to its own log.
    let (refusals, refused) = Refusals::channel();
    let now_ms = || crate::clock::Clock::now_ms(&crate::clock::SystemClock);
    tokio::spawn(refusals::run(refused, now_ms, logged, done.clone()));
    let served = server
        .layer(AuthLayer::new(security.credentials.clone(), security.rate, refusals))
        .add_service(health)
        .add_service(forward.preparing(crate::auth::forwarding))
        .serve_with_incoming_shutdown(incoming(listener), done.cancelled_owned())
        .await;
    if let Err(e) = served {
        tracing::warn!(error = %e, "the standby's API stopped");
    }
}
