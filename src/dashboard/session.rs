//! Dashboard sessions: a sign-in (with a token, or through single sign-on) opens one,
//! kept on the server; the browser holds only its random id, in an HttpOnly,
//! SameSite=Strict cookie.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};

use crate::auth::Principal;

/// The cookie's name.
const COOKIE: &str = "rollout_session";
/// A session lasts a long shift.
const TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most, across principals: a sign-in past it is refused (it never
/// closes someone else's session).
const MAX: usize = 10_000;
/// Sessions one principal may hold; past it, that principal's oldest goes (never
/// another's): one viewer cannot sign everyone else out.
pub const PER_PRINCIPAL: usize = 16;

/// How a session's principal proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A token of the tokens file: the session ends when the token leaves it.
    Token,
    /// The identity provider (`--oidc`): the role is the one mapped at sign-in.
    Sso,
}

type Open = HashMap<String, (Principal, Instant, Origin)>;

#[derive(Default)]
pub struct Sessions {
    open: Mutex<Open>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a session for `who`; returns its id (256 random bits, hex), or None when
    /// every slot is held by others' live sessions.
    pub fn open(&self, who: Principal, origin: Origin) -> Option<String> {
        let id: String = rand::random::<[u8; 32]>().iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut open = self.lock();
        open.retain(|_, (_, at, _)| now.duration_since(*at) < TTL);
        let mut own: Vec<(Instant, String)> = open
            .iter()
            .filter(|(_, (p, _, _))| p.name == who.name)
            .map(|(k, (_, at, _))| (*at, k.clone()))
            .collect();
        own.sort();
        let over = (own.len() + 1).saturating_sub(PER_PRINCIPAL);
        for (_, oldest) in own.iter().take(over) {
            open.remove(oldest);
        }
        if open.len() >= MAX {
            return None;
        }
        open.insert(id.clone(), (who, now, origin));
        Some(id)
    }

    /// Who an open, unexpired session belongs to, and how they signed in.
    pub fn get(&self, id: &str) -> Option<(Principal, Origin)> {
        let open = self.lock();
        let (who, at, origin) = open.get(id)?;
        (at.elapsed() < TTL).then(|| (who.clone(), *origin))
    }

    pub fn close(&self, id: &str) {
        self.lock().remove(id);
    }
}

/// The session id a request's cookies carry, if any.
pub fn cookie(headers: &HeaderMap) -> Option<&str> {
    named(headers, COOKIE)
}

/// The value of the cookie `name` a request carries, if any.
pub fn named<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value)
}

/// The cookie is the browser's only copy of the session: scripts cannot read it and
/// other sites' requests do not carry it.
const ATTRIBUTES: &str = "Path=/; HttpOnly; SameSite=Strict";

/// The cookie holding session `id`; `Secure` (sent over TLS only) when served so.
pub fn set_cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; Max-Age={}; {ATTRIBUTES}{}",
        TTL.as_secs(),
        secure_flag(secure)
    )
}

pub fn clear_cookie(secure: bool) -> String {
    format!("{COOKIE}=; Max-Age=0; {ATTRIBUTES}{}", secure_flag(secure))
}

fn secure_flag(secure: bool) -> &'static str {
    if secure { "; Secure" } else { "" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    #[test]
    fn a_session_is_found_by_its_cookie_until_closed() {
        let sessions = Sessions::default();
        let alice = Principal::new("alice", Role::Viewer);
        let id = sessions.open(alice.clone(), Origin::Sso).unwrap();
        assert_eq!(id.len(), 64);
        let mut headers = HeaderMap::new();
        let value = format!("theme=dark; {COOKIE}={id}");
        headers.insert(header::COOKIE, value.parse().unwrap());
        assert_eq!(cookie(&headers), Some(id.as_str()));
        assert_eq!(sessions.get(&id), Some((alice, Origin::Sso)));
        assert_eq!(sessions.get("forged"), None);
        sessions.close(&id);
        assert_eq!(sessions.get(&id), None);
        assert!(set_cookie(&id, false).contains("HttpOnly; SameSite=Strict"));
        assert!(!set_cookie(&id, false).contains("Secure"));
        assert!(set_cookie(&id, true).ends_with("; Secure"));
    }

    #[test]
    fn one_principal_cannot_sign_others_out() {
        let sessions = Sessions::default();
        let bob = sessions
            .open(Principal::new("bob", Role::Operator), Origin::Token)
            .unwrap();
        let mallory = Principal::new("mallory", Role::Viewer);
        let first = sessions.open(mallory.clone(), Origin::Token).unwrap();
        for _ in 0..5 * PER_PRINCIPAL {
            sessions.open(mallory.clone(), Origin::Token).unwrap();
        }
        assert!(sessions.get(&bob).is_some(), "another principal's session stays");
        assert_eq!(sessions.get(&first), None, "mallory's oldest went");
        let held = sessions.lock().values().filter(|(p, _, _)| p.name == "mallory").count();
        assert_eq!(held, PER_PRINCIPAL);
    }
}
