//! The Controller service of a standby (or of a controller still looking for the
//! leader): every call is answered Unavailable, naming the leader when another one
//! leads, so that a client can go there.

use std::convert::Infallible;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::Status;
use tonic::body::Body;
use tonic::server::NamedService;

use super::ControllerService;
use crate::proto::v1::controller_server::ControllerServer;

/// Answers every Controller call that it is not served here, and why.
#[derive(Clone, Default)]
pub struct Standby {
    why: Arc<RwLock<String>>,
}

impl Standby {
    pub fn standing_by(why: impl Into<String>) -> Standby {
        let switch = Standby::default();
        switch.say(why);
        switch
    }

    /// Changes what a call is told.
    pub fn say(&self, why: impl Into<String>) {
        *self.why.write().unwrap_or_else(|p| p.into_inner()) = why.into();
    }
}

impl NamedService for Standby {
    const NAME: &'static str = <ControllerServer<ControllerService> as NamedService>::NAME;
}

impl tower::Service<http::Request<Body>> for Standby {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: http::Request<Body>) -> Self::Future {
        let why = self.why.read().unwrap_or_else(|p| p.into_inner()).clone();
        Box::pin(async move { Ok(Status::unavailable(why).into_http()) })
    }
}
