//! The Controller service as clients reach it: this controller's engine once it
//! leads and has loaded the store; until then (a standby, or a leader still loading)
//! every call is answered Unavailable, naming the leader when another one leads, so
//! that a client can go there.

use std::convert::Infallible;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::Status;
use tonic::body::Body;
use tonic::server::NamedService;

use super::ControllerService;
use crate::proto::v1::controller_server::ControllerServer;

/// Routes Controller calls to the engine, or answers that it is not here.
#[derive(Clone, Default)]
pub struct Switch {
    state: Arc<RwLock<State>>,
}

#[derive(Default)]
struct State {
    engine: Option<ControllerServer<ControllerService>>,
    /// Why calls are not served here yet.
    why: String,
}

impl Switch {
    /// Calls are answered Unavailable with `why` until [`Switch::serve`].
    pub fn standing_by(why: impl Into<String>) -> Switch {
        let switch = Switch::default();
        switch.say(why);
        switch
    }

    /// Changes what a call is told while the engine is not here.
    pub fn say(&self, why: impl Into<String>) {
        self.state.write().unwrap_or_else(|p| p.into_inner()).why = why.into();
    }

    /// From now on calls go to `engine`.
    pub fn serve(&self, engine: ControllerServer<ControllerService>) {
        self.state.write().unwrap_or_else(|p| p.into_inner()).engine = Some(engine);
    }
}

impl NamedService for Switch {
    const NAME: &'static str = <ControllerServer<ControllerService> as NamedService>::NAME;
}

impl tower::Service<http::Request<Body>> for Switch {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let (engine, why) = {
            let state = self.state.read().unwrap_or_else(|p| p.into_inner());
            (state.engine.clone(), state.why.clone())
        };
        match engine {
            Some(mut engine) => Box::pin(async move { engine.call(request).await }),
            None => Box::pin(async move { Ok(Status::unavailable(why).into_http()) }),
        }
    }
}
