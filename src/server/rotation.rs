//! Rotation without a restart: SIGHUP reads the tokens file (`--auth`), the sinks
//! file (`--notify`) and the freeze calendar (`--freeze-calendar`) again, so a token removed from it is refused from the next call
//! on, a new one accepted, and a sink whose URL or secret rotated is reached anew,
//! without the failover a restart would cost in the middle of an incident. A file
//! that does not parse keeps the one in force and says why. A leader writes each
//! re-read to the audit log (who was removed and added, which sinks; never a token,
//! a hash or a URL's secret); a standby re-reads the tokens too (it checks callers
//! itself first).

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::auth::Credentials;
use crate::engine::Engine;
use crate::engine::audit::{Actor, Target};
use crate::notify::{Notifier, Sinks};

/// What SIGHUP reads again.
#[derive(Default)]
pub struct Reload {
    /// The credentials in force and the tokens file they came from.
    pub tokens: Option<(Arc<Credentials>, PathBuf)>,
    /// The notifier and the sinks file (the leader only).
    pub sinks: Option<(Arc<Notifier>, PathBuf)>,
    /// The engine's freeze calendar (`--freeze-calendar`, the leader only).
    pub calendar: bool,
}

impl Reload {
    /// The tokens half, from the controller's security settings.
    pub fn tokens(security: &super::Security) -> Reload {
        Reload {
            tokens: security.credentials.clone().zip(security.tokens_file.clone()),
            sinks: None,
            calendar: false,
        }
    }

    /// Each re-read's line for the log and audit trail, and its result.
    fn run(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some((credentials, path)) = &self.tokens {
            out.push(match credentials.reload(path) {
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
            });
        }
        if let Some((notifier, path)) = &self.sinks {
            let reloaded = Sinks::load(path).map_err(|e| e.to_string()).and_then(|sinks| {
                notifier.reload(&sinks).map_err(|e| e.to_string())?;
                Ok(sinks)
            });
            out.push(match reloaded {
                Ok(sinks) => {
                    let names: Vec<&str> = sinks.0.iter().map(|s| s.name.as_str()).collect();
                    let line = format!("sinks file re-read: {} sinks ({})", names.len(), names.join(", "));
                    info!(file = %path.display(), "{line}");
                    (line, "ok".to_string())
                }
                Err(e) => {
                    warn!(error = %e, "SIGHUP: the sinks file was not taken; the sinks in force stay");
                    (
                        format!("sinks file not re-read ({}): the sinks in force stay", path.display()),
                        e,
                    )
                }
            });
        }
        out
    }
}

/// Reads again what `reload` names at every SIGHUP until `done`; with `engine`,
/// each re-read (or refusal) is audited.
pub fn on_hangup(reload: Reload, engine: Option<Arc<Engine>>, done: CancellationToken) {
    if reload.tokens.is_none() && reload.sinks.is_none() && !reload.calendar {
        return;
    }
    let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(h) => h,
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGHUP: the tokens and sinks files are read only at start");
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = done.cancelled() => return,
                got = hangups.recv() => if got.is_none() { return },
            }
            let mut lines = reload.run();
            if reload.calendar
                && let Some(read) = engine.as_ref().and_then(|e| e.reload_freeze_calendar())
            {
                if read.1 == "ok" {
                    info!("{}", read.0);
                } else {
                    warn!(error = %read.1, "{}", read.0);
                }
                lines.push(read);
            }
            for (line, result) in lines {
                if let Some(engine) = &engine {
                    engine
                        .record_call(&Actor::controller(), Target::None, line, &result)
                        .await;
                }
            }
        }
    });
}
