//! The client side: what a CLI or an agent sends to prove who it is.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;

use crate::tls::ClientFiles;
use crate::{Error, Result};

/// How a client proves itself: TLS material and a bearer token.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub tls: ClientFiles,
    pub token: Option<String>,
}

impl Credentials {
    /// The token from `--token-file` (first line), else `ROLLOUT_TOKEN`.
    pub fn with_token_file(mut self, file: Option<&std::path::Path>) -> Result<Credentials> {
        self.token = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| Error::io(format!("cannot read the token file {}", path.display()), e))?;
                let token = text.lines().next().unwrap_or("").trim().to_string();
                if token.is_empty() {
                    return Err(Error::Usage(format!("{}: the token file is empty", path.display())));
                }
                Some(token)
            }
            None => std::env::var("ROLLOUT_TOKEN").ok().filter(|t| !t.trim().is_empty()),
        };
        Ok(self)
    }
}

/// Adds `authorization: Bearer TOKEN` to every call.
#[derive(Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

impl Bearer {
    pub fn new(token: Option<&str>) -> Result<Bearer> {
        token
            .map(|t| {
                format!("Bearer {}", t.trim())
                    .parse::<MetadataValue<Ascii>>()
                    .map_err(|_| Error::Usage("the token has characters a header cannot carry".into()))
            })
            .transpose()
            .map(Bearer)
    }
}
