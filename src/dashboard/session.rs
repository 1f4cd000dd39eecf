//! Dashboard sessions: a sign-in with a token opens one, kept on the server; the
//! browser holds only its random id, in an HttpOnly, SameSite=Strict cookie.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};

use crate::auth::Principal;

/// The cookie's name.
const COOKIE: &str = "rollout_session";
/// A session lasts a long shift.
const TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; the oldest goes first.
const MAX: usize = 10_000;

#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, (Principal, Instant)>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Principal, Instant)>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a session for `who`; returns its id (256 random bits, hex).
    pub fn open(&self, who: Principal) -> String {
        let id: String = rand::random::<[u8; 32]>().iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut open = self.lock();
        open.retain(|_, (_, at)| now.duration_since(*at) < TTL);
        if open.len() >= MAX
            && let Some(oldest) = open.iter().min_by_key(|(_, (_, at))| *at).map(|(k, _)| k.clone())
        {
            open.remove(&oldest);
        }
        open.insert(id.clone(), (who, now));
        id
    }

    /// Who an open, unexpired session belongs to.
    pub fn get(&self, id: &str) -> Option<Principal> {
        let open = self.lock();
        let (who, at) = open.get(id)?;
        (at.elapsed() < TTL).then(|| who.clone())
    }

    pub fn close(&self, id: &str) {
        self.lock().remove(id);
    }
}

/// The session id a request's cookies carry, if any.
pub fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// The cookie is the browser's only copy of the session: scripts cannot read it and
/// other sites' requests do not carry it.
const ATTRIBUTES: &str = "Path=/; HttpOnly; SameSite=Strict";

pub fn set_cookie(id: &str) -> String {
    format!("{COOKIE}={id}; Max-Age={}; {ATTRIBUTES}", TTL.as_secs())
}

pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Max-Age=0; {ATTRIBUTES}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    #[test]
    fn a_session_is_found_by_its_cookie_until_closed() {
        let sessions = Sessions::default();
        let alice = Principal::new("alice", Role::Viewer);
        let id = sessions.open(alice.clone());
        assert_eq!(id.len(), 64);
        let mut headers = HeaderMap::new();
        let value = format!("theme=dark; {COOKIE}={id}");
        headers.insert(header::COOKIE, value.parse().unwrap());
        assert_eq!(cookie(&headers), Some(id.as_str()));
        assert_eq!(sessions.get(&id), Some(alice));
        assert_eq!(sessions.get("forged"), None);
        sessions.close(&id);
        assert_eq!(sessions.get(&id), None);
        assert!(set_cookie(&id).contains("HttpOnly; SameSite=Strict"));
    }
}
