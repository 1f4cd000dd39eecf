//! The crate's error, and the one place where errors become gRPC status codes.

use tonic::{Code, Status};

use crate::{engine, plan, store, yamlfile};

/// Anything that can go wrong in a command or a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A plan was refused.
    #[error(transparent)]
    Plan(#[from] plan::Error),
    /// A fleet file, agent config or tokens file was refused.
    #[error(transparent)]
    File(#[from] yamlfile::Error),
    /// The engine refused or failed a request.
    #[error(transparent)]
    Engine(#[from] engine::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// A file or socket operation failed; `context` says which and what to check.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server or a connection failed.
    #[error("{context}: {source}")]
    Transport {
        context: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// A request or a command line is missing something; the text says what.
    #[error("{0}")]
    Usage(String),
    /// A request names something this controller does not have; the text says what
    /// it has.
    #[error("{0}")]
    NotFound(String),
    /// A request this controller is not set up for; the text says what would do.
    #[error("{0}")]
    Unconfigured(String),
    /// A failure of the controller itself (a task that died, a piece that could not
    /// be built): not the caller's doing; the text says what.
    #[error("{0}")]
    Internal(String),
    /// The request conflicts with the state of what it names (a stale controller
    /// epoch, a host another agent serves); the text says why. Not asked again as is.
    #[error("{0}")]
    Refused(String),
    /// The caller did not say who it is, or not in a way this controller knows; the
    /// text says what credentials would do.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller may not do this; the text says what role or binding would.
    #[error("{0}")]
    Forbidden(String),
    /// The caller is over its rate limit; the text says when to try again.
    #[error("{0}")]
    OverLimit(String),
    /// This controller cannot answer now (a standby that knows no leader, or cannot
    /// reach it); the text says why. Asking again (or another controller) may work.
    #[error("{0}")]
    Unavailable(String),
    /// A client could not connect to the controller (nothing listens, the network);
    /// the text says what was tried and the fix. Trying again may work.
    #[error("{0}")]
    Unreachable(String),
    /// The controller answered a client's call with an error.
    #[error("{message}")]
    Remote { code: Code, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// How a client's broken connection to the controller starts (the CLI looks closer
/// at it: `cli::client::explain`).
pub const BROKEN_CONNECTION: &str = "the connection to the controller broke";

/// And what it says to do.
const BROKEN_FIX: &str =
    "a controller with TLS needs https:// and --ca FILE; otherwise it stopped or restarted, so try again";

/// Is `s` a status the client made for a connection that broke, rather than the
/// server's answer?
fn broken(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::Unknown | Code::Unavailable | Code::Cancelled | Code::Internal
    ) && (s.message() == "transport error"
        || s.message() == "operation was canceled"
        || s.message().starts_with("h2 protocol error"))
}

impl From<Status> for Error {
    /// A client-side view of a failed call: the controller's own message, which
    /// already names the thing and the fix.
    fn from(s: Status) -> Error {
        let message = match s.code() {
            // A gRPC server without the Controller service: most often an agent's
            // port given for the controller's.
            Code::Unimplemented if s.message().is_empty() => "the server answered, but it is not a rollout controller (a rollout agent's port?): the controller's address is its --listen, 127.0.0.1:50051 by default".to_string(),
            // The HTTP/2 connection broke: a TLS controller reached over plain HTTP
            // answers its handshake, not gRPC.
            // The HTTP/2 connection broke, as tonic, hyper or h2 say it.
            _ if broken(&s) => format!("{BROKEN_CONNECTION} ({}): {BROKEN_FIX}", s.message()),
            Code::Unavailable | Code::Unknown | Code::Cancelled if s.message().is_empty() => {
                format!("the controller stopped answering ({:?})", s.code())
            }
            Code::Unavailable => format!("the controller is unavailable: {}", s.message()),
            _ => s.message().to_string(),
        };
        Error::Remote {
            code: s.code(),
            message,
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        let code = match &e {
            Error::Plan(_) | Error::File(_) | Error::Usage(_) => Code::InvalidArgument,
            Error::Engine(engine) => match engine {
                engine::Error::NotFound(_) => Code::NotFound,
                engine::Error::AlreadyExists(_) => Code::AlreadyExists,
                engine::Error::Refused(_) => Code::FailedPrecondition,
                engine::Error::Forbidden(_) => Code::PermissionDenied,
                engine::Error::Invalid { .. } => Code::InvalidArgument,
                engine::Error::ShuttingDown => Code::Unavailable,
                engine::Error::Corrupt(_) => Code::DataLoss,
                engine::Error::Store(store) => store_code(store),
            },
            Error::NotFound(_) => Code::NotFound,
            Error::Unconfigured(_) | Error::Refused(_) => Code::FailedPrecondition,
            Error::Store(store) => store_code(store),
            Error::Io { .. } | Error::Internal(_) => Code::Internal,
            Error::Transport { .. } | Error::Unavailable(_) | Error::Unreachable(_) => Code::Unavailable,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::Forbidden(_) => Code::PermissionDenied,
            Error::OverLimit(_) => Code::ResourceExhausted,
            Error::Remote { code, .. } => *code,
        };
        Status::new(code, e.to_string())
    }
}

/// A store's failure is the controller's own (Internal), except a fenced write: a
/// deposed leader's, which the client asks again (Unavailable) and the new leader
/// answers.
fn store_code(e: &store::Error) -> Code {
    if e.is_fenced() {
        Code::Unavailable
    } else {
        Code::Internal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fenced_write_tells_the_client_to_ask_again() {
        let fenced = || store::Error::fenced(7, Some("https://rollout-b.corp:7443"));
        for e in [Error::Store(fenced()), Error::Engine(engine::Error::Store(fenced()))] {
            let status = Status::from(e);
            assert_eq!(status.code(), Code::Unavailable);
            assert!(
                status
                    .message()
                    .contains("no longer the leader (its epoch 7 is over; https://rollout-b.corp:7443 leads now)"),
                "{}",
                status.message()
            );
        }
        let between = Status::from(Error::Store(store::Error::fenced(7, None)));
        assert!(
            between.message().contains("no controller leads at this moment"),
            "{}",
            between.message()
        );
        let broken = store::Error::Conflict("rollouts/7".into());
        assert_eq!(Status::from(Error::Store(broken)).code(), Code::Internal);
        let died = Error::Internal("the gRPC server task failed: panicked".into());
        assert_eq!(Status::from(died).code(), Code::Internal);
    }
}
