//! Rotation without a restart: SIGHUP reads the tokens file again (`--auth`), so a
//! token removed from it is refused from the next call on, and a new one accepted,
//! without the failover a restart would cost in the middle of an incident. A file
//! that does not parse keeps the one in force and says why. A leader writes each
//! re-read to the audit log (who was removed and added, never a token or a hash); a
//! standby re-reads too (it checks callers itself first).

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::auth::Credentials;
use crate::engine::Engine;
use crate::engine::audit::{Actor, Target};

/// Re-reads `path` into `credentials` at every SIGHUP until `done`; with `engine`,
/// each re-read (or refusal) is audited.
pub fn on_hangup(credentials: Arc<Credentials>, path: PathBuf, engine: Option<Arc<Engine>>, done: CancellationToken) {
    let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(h) => h,
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGHUP: the tokens file is read only at start");
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = done.cancelled() => return,
                got = hangups.recv() => if got.is_none() { return },
            }
            let (line, result) = match credentials.reload(&path) {
                Ok(rotation) => {
                    info!(file = %path.display(), "{rotation}");
                    (rotation.to_string(), "ok".to_string())
                }
                Err(e) => {
                    warn!(error = %e, "SIGHUP: the tokens file does not parse; the one read before stays in force");
                    (
                        format!(
                            "tokens file not re-read ({}): the one read before stays in force",
                            path.display()
                        ),
                        e.to_string(),
                    )
                }
            };
            if let Some(engine) = &engine {
                engine
                    .record_call(&Actor::controller(), Target::None, line, &result)
                    .await;
            }
        }
    });
}
