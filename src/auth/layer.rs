//! The tower layer in front of every gRPC service: authenticates the caller, checks
//! its role against the method, rate-limits its changes, and hands the [`Principal`]
//! to the handlers in the request's extensions (the audit trail records it).

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

use super::refusals::{Refusal, Refusals, UNAUTHENTICATED, Why};
use super::{Credentials, Need, Principal, Role, bearer, need, subject_name};
use crate::Error;

/// Changes a principal may make: `per_second` on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            per_second: 10,
            burst: 50,
        }
    }
}

struct Shared {
    /// None: authentication is off (a loopback controller without `--auth`).
    credentials: Option<Arc<Credentials>>,
    limiter: DefaultKeyedRateLimiter<String>,
    limit: RateLimit,
    /// Where refused calls go, to be audited.
    refusals: Refusals,
}

/// Authentication, authorisation and rate limiting, as one layer.
#[derive(Clone)]
pub struct AuthLayer {
    shared: Arc<Shared>,
}

impl AuthLayer {
    /// The layer; the calls it refuses go to `refusals`.
    pub fn new(credentials: Option<Arc<Credentials>>, limit: RateLimit, refusals: Refusals) -> AuthLayer {
        let per_second = NonZeroU32::new(limit.per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(limit.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        AuthLayer {
            shared: Arc::new(Shared {
                credentials,
                limiter: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
                limit,
                refusals,
            }),
        }
    }
}

impl AuthLayer {
    /// The per-principal change limit this layer counts against, for changes made
    /// elsewhere than the gRPC API (the dashboard's actions, Slack's buttons): one
    /// budget per principal, wherever they act.
    pub fn change_limit(&self) -> ChangeLimit {
        ChangeLimit(self.shared.clone())
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            shared: self.shared.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// The per-principal change limit, handed to handlers in the request's extensions
/// for calls whose cost depends on their arguments (`ListHosts` with `probe` runs the
/// health command on every host: an operator's act, paced as a change).
#[derive(Clone)]
pub struct ChangeLimit(Arc<Shared>);

impl ChangeLimit {
    /// Counts one change of `principal` (its `method`, through `via` when not the
    /// API); ResourceExhausted past the limit, and the refusal audited.
    pub fn charge(&self, principal: &Principal, method: &str, via: Option<&'static str>) -> Result<(), Status> {
        self.0.charge(principal).inspect_err(|status| {
            self.0.refusals.report(Refusal {
                principal: principal.name.clone(),
                role: principal.role.to_string(),
                method: method.to_string(),
                why: Why::RateLimit,
                message: status.message().to_string(),
                peer: None,
                via,
            });
        })
    }

    /// Where refusals made elsewhere than this layer (the dashboard's) go.
    pub fn refusals(&self) -> &Refusals {
        &self.0.refusals
    }
}

/// A call the layer refused: what the caller is told, and what the audit log says.
struct Refused {
    status: Status,
    principal: String,
    role: String,
    why: Why,
}

impl Refused {
    fn new(why: Why, kind: fn(String) -> Error, message: impl Into<String>) -> Refused {
        Refused {
            status: refuse(kind, message),
            principal: UNAUTHENTICATED.into(),
            role: String::new(),
            why,
        }
    }

    /// The same refusal, of a caller that proved to be `principal`.
    fn of(mut self, principal: &Principal) -> Refused {
        self.principal = principal.name.clone();
        self.role = principal.role.to_string();
        self
    }
}

impl Shared {
    fn charge(&self, principal: &Principal) -> Result<(), Status> {
        if self.limiter.check_key(&principal.name).is_err() {
            return Err(refuse(
                Error::OverLimit,
                format!(
                    "`{}` is over its rate limit of {} changes per second (bursts of {}); retry in a second",
                    principal.name, self.limit.per_second, self.limit.burst
                ),
            ));
        }
        Ok(())
    }

    /// The caller, or the refusal (reported to the audit log) it gets.
    fn check<B>(&self, req: &http::Request<B>) -> Result<Principal, Status> {
        let path = req.uri().path();
        self.admit(req, path).map_err(|refused| {
            self.refusals.report(Refusal {
                principal: refused.principal,
                role: refused.role,
                method: crate::ident::escaped(method_of(path)),
                why: refused.why,
                message: refused.status.message().to_string(),
                peer: peer(req),
                via: None,
            });
            refused.status
        })
    }

    fn admit<B>(&self, req: &http::Request<B>, path: &str) -> Result<Principal, Refused> {
        let need = need(path);
        let principal = match &self.credentials {
            None => Principal::anonymous(),
            Some(_) if need == Need::Nothing => Principal::anonymous(),
            Some(credentials) => authenticate(credentials, req)?,
        };
        if !principal.role.allows(need) {
            let refused = Refused::new(
                Why::Role,
                Error::Forbidden,
                format!(
                    "`{}` has the {} role; {} needs the {} role",
                    principal.name,
                    principal.role,
                    method_of(path),
                    need.least_role()
                ),
            );
            return Err(refused.of(&principal));
        }
        if need.mutates() {
            self.charge(&principal).map_err(|status| {
                Refused {
                    status,
                    principal: String::new(),
                    role: String::new(),
                    why: Why::RateLimit,
                }
                .of(&principal)
            })?;
        }
        Ok(principal)
    }
}

/// The method of a gRPC path (`/rollout.v1.Controller/SubmitPlan`: `SubmitPlan`).
fn method_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The address a call came from.
fn peer<B>(req: &http::Request<B>) -> Option<std::net::IpAddr> {
    let ext = req.extensions();
    ext.get::<TcpConnectInfo>()
        .and_then(|i| i.remote_addr())
        .or_else(|| {
            ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|i| i.get_ref().remote_addr())
        })
        .map(|a| a.ip())
}

/// A bearer token first; else a verified client certificate's subject; a call a
/// standby forwarded for a caller known by its certificate, as that caller.
fn authenticate<B>(credentials: &Credentials, req: &http::Request<B>) -> Result<Principal, Refused> {
    let direct = authenticate_direct(credentials, req)?;
    let Some(forwarded) = req.headers().get(super::FORWARDED_SUBJECT) else {
        return Ok(direct);
    };
    if direct.role != Role::Controller || bearer(req.headers()).is_some() {
        return Err(Refused::new(
            Why::Credentials,
            Error::Forbidden,
            format!(
                "`{}` sent {}: only a controller of this site (a certificates entry with role controller) forwards a caller's identity",
                direct.name,
                super::FORWARDED_SUBJECT
            ),
        )
        .of(&direct));
    }
    let subject = forwarded.to_str().map_err(|_| {
        Refused::new(
            Why::Credentials,
            Error::Unauthenticated,
            "the forwarded subject is not text",
        )
    })?;
    credentials.by_subject(subject).ok_or_else(|| {
        Refused::new(
            Why::Credentials,
            Error::Unauthenticated,
            format!(
                "client certificate `{}` (forwarded by `{}`) has no role in the leader's tokens file",
                crate::ident::escaped(subject),
                direct.name
            ),
        )
    })
}

fn authenticate_direct<B>(credentials: &Credentials, req: &http::Request<B>) -> Result<Principal, Refused> {
    let unknown = |message: String| Refused::new(Why::Credentials, Error::Unauthenticated, message);
    if let Some(token) = bearer(req.headers()) {
        let token = token.ok_or_else(|| unknown("the authorization header is not `Bearer TOKEN`".into()))?;
        return credentials.by_token(token).ok_or_else(|| {
            unknown("the token is not known to this controller: check --token-file (or ROLLOUT_TOKEN)".into())
        });
    }
    let certs = req
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|info| info.peer_certs());
    if let Some(first) = certs.as_ref().and_then(|c| c.first()) {
        let subject =
            subject_name(first).ok_or_else(|| unknown("the client certificate has no subject common name".into()))?;
        return credentials.by_subject(&subject).ok_or_else(|| {
            unknown(format!(
                "client certificate `{}` has no role in the controller's tokens file",
                crate::ident::escaped(&subject)
            ))
        });
    }
    Err(unknown(
        "no credentials: send a token (--token-file or ROLLOUT_TOKEN) or a client certificate (--cert, --key)".into(),
    ))
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> Service<http::Request<B>> for Auth<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        match self.shared.check(&req) {
            Err(status) => Box::pin(async move { Ok(status.into_http()) }),
            Ok(principal) => {
                req.extensions_mut().insert(principal);
                req.extensions_mut().insert(ChangeLimit(self.shared.clone()));
                // The clone that was made ready goes to this call; a fresh one stays.
                let clone = self.inner.clone();
                let mut ready = std::mem::replace(&mut self.inner, clone);
                Box::pin(ready.call(req))
            }
        }
    }
}

/// A refusal as the caller gets it: its code from the one mapping (`crate::error`).
fn refuse(kind: fn(String) -> Error, message: impl Into<String>) -> Status {
    Status::from(kind(message.into()))
}
