//! What the service manager is told (systemd's `Type=notify`, sd_notify(3)): READY=1
//! once the controller serves (its store open, its fleet loaded, as a leader or a
//! standby), STOPPING=1 when a signal stops it, and WATCHDOG=1 at half the
//! `WatchdogSec=` interval while the engine's runtime runs, so that a wedged
//! controller is restarted. Without `NOTIFY_SOCKET` (not under systemd) nothing is
//! sent. The same moment prints the lines scripts wait for (`listening on ADDR`).

use std::sync::Once;
use std::time::Duration;

use sd_notify::NotifyState;
use tracing::{info, warn};

/// Prints `lines` (`listening on ADDR`, the dashboard's...) and tells the service
/// manager the controller is ready, once per process: when it first serves, `role`
/// being "leading" or "standing by". Starts the watchdog when one is asked for.
pub fn ready(lines: &[String], role: &str) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        for line in lines {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
        let status = format!("serving, {role}");
        tell(&[NotifyState::Ready, NotifyState::Status(&status)]);
        if let Some(interval) = sd_notify::watchdog_enabled() {
            info!(interval = %crate::text::format_duration(interval), "the service manager's watchdog is on: pinging it at half its interval");
            tokio::spawn(watchdog(interval));
        }
    });
}

/// Tells the service manager the controller is stopping (a signal came).
pub fn stopping() {
    tell(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: calls in flight finish"),
    ]);
}

/// Pings the watchdog at half `interval`, from the runtime it was started on (the
/// engine's): when that runtime stops making progress, the pings stop and the
/// service manager restarts the controller.
async fn watchdog(interval: Duration) {
    let mut tick = tokio::time::interval((interval / 2).max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        tell(&[NotifyState::Watchdog]);
    }
}

/// Sends `states`; a failure is logged (the controller serves on regardless).
fn tell(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}
