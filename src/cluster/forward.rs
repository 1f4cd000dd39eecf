//! How a standby forwards: its Controller service sends every call to the leader, as
//! it came (the caller's credentials were checked here first, and go along for the
//! leader to check again; a caller known by its certificate goes as the subject this
//! standby checked, which the leader takes only from a controller), streams included, so that clients may be pointed at any
//! controller. Until a leader is known, or when it cannot be reached, calls are
//! answered Unavailable, saying why.

use std::convert::Infallible;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tonic::Status;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// Forwards Controller calls to the leader, or answers why it cannot.
#[derive(Clone, Default)]
pub struct Forwarder {
    state: Arc<RwLock<State>>,
    /// Readies each call for the leader (what identity goes along), or answers it
    /// here instead of forwarding it, when it says so.
    prepare: Option<Prepare>,
}

/// Readies a call for forwarding, or says why it must not be (the server says how:
/// the caller's identity is the auth module's business).
pub type Prepare = fn(&mut http::Request<Body>) -> Option<Status>;

#[derive(Default)]
struct State {
    /// TLS to an https:// leader (`--peer-ca`).
    tls: Option<ClientTlsConfig>,
    /// The leader's API, once known.
    leader: Option<(String, Channel)>,
    /// What a call is told when there is no leader to forward it to.
    why: String,
}

impl Forwarder {
    /// A standby saying `why` until it knows the leader, reaching an https:// one
    /// with `tls`.
    pub fn standing_by(why: impl Into<String>, tls: Option<ClientTlsConfig>) -> Forwarder {
        let standby = Forwarder::default();
        standby.state.write().unwrap_or_else(|p| p.into_inner()).tls = tls;
        standby.say(why);
        standby
    }

    /// Passes every call through `prepare` before forwarding it; a call it answers
    /// is answered here with what it says.
    pub fn preparing(mut self, prepare: Prepare) -> Forwarder {
        self.prepare = Some(prepare);
        self
    }

    /// Changes what a call is told while no leader is known.
    pub fn say(&self, why: impl Into<String>) {
        self.state.write().unwrap_or_else(|p| p.into_inner()).why = why.into();
    }

    /// Forwards calls to the leader at `url` from now on (connected at the first
    /// call); one that cannot be reached so leaves calls answered with why.
    pub fn follow(&self, url: &str) {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        if state.leader.as_ref().is_some_and(|(u, _)| u == url) {
            return;
        }
        match leader_channel(url, state.tls.as_ref()) {
            Ok(channel) => state.leader = Some((url.to_string(), channel)),
            Err(why) => {
                state.leader = None;
                state.why = format!("{}; it cannot be forwarded to: {why}", state.why);
            }
        }
    }
}

/// A lazily connected channel to the leader at `url`. A leader that stops answering
/// (paused, or its machine gone without a reset) is noticed by HTTP/2 pings within
/// seconds: calls then fail, not hang.
fn leader_channel(url: &str, tls: Option<&ClientTlsConfig>) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(url.to_string()).map_err(|e| format!("{url} is not a URL ({e})"))?;
    let endpoint = match (url.starts_with("https://"), tls) {
        (false, _) => endpoint,
        (true, Some(tls)) => endpoint
            .tls_config(tls.clone())
            .map_err(|e| format!("TLS to {url}: {e} (check --peer-ca, --tls-cert and --tls-key)"))?,
        (true, None) => {
            return Err(format!(
                "{url} speaks TLS: give --peer-ca (the CA of the controllers' certificates)"
            ));
        }
    };
    Ok(endpoint
        .connect_timeout(Duration::from_secs(3))
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(3))
        .keep_alive_while_idle(true)
        .connect_lazy())
}

impl NamedService for Forwarder {
    const NAME: &'static str = crate::proto::v1::controller_server::SERVICE_NAME;
}

impl tower::Service<http::Request<Body>> for Forwarder {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let (leader, why) = {
            let state = self.state.read().unwrap_or_else(|p| p.into_inner());
            (state.leader.clone(), state.why.clone())
        };
        if let Some(refusal) = self.prepare.and_then(|prepare| prepare(&mut request)) {
            return Box::pin(async move { Ok(refusal.into_http()) });
        }
        let Some((url, mut channel)) = leader else {
            return Box::pin(async move { Ok(unavailable(why).into_http()) });
        };
        Box::pin(async move {
            match tower::ServiceExt::ready(&mut channel).await {
                Ok(ready) => match tower::Service::call(ready, request).await {
                    Ok(answer) => Ok(answer),
                    Err(e) => Ok(unavailable(format!("{why}; forwarding to it failed: {e}")).into_http()),
                },
                Err(e) => Ok(unavailable(format!("{why}; the leader at {url} cannot be reached: {e}")).into_http()),
            }
        })
    }
}

/// Why a call cannot be forwarded now, as the caller gets it (`crate::error` maps it).
fn unavailable(why: impl Into<String>) -> Status {
    Status::from(crate::Error::Unavailable(why.into()))
}
