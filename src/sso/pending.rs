//! Sign-ins under way: what the controller must remember between sending a browser
//! to the identity provider and its return (the state, the nonce and the PKCE
//! verifier), under a random id the browser holds in a cookie. Each is taken once,
//! lives ten minutes, and at most [`MAX`] are kept: past it the oldest goes (one
//! client's flood cannot stop everyone else from starting one), and that sign-in is
//! told to start again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a sign-in at the provider may take.
pub const TTL: Duration = Duration::from_secs(600);
/// Sign-ins kept at most.
pub const MAX: usize = 10_000;

/// Sign-ins under way, by the id their browser holds.
pub struct Pending<T> {
    open: Mutex<HashMap<String, (Instant, T)>>,
}

impl<T> Default for Pending<T> {
    fn default() -> Self {
        Pending {
            open: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> Pending<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, T)>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `value` from `now`; returns its id (256 random bits, hex) and whether
    /// an unexpired sign-in had to go to make room.
    pub fn insert(&self, value: T, now: Instant) -> (String, bool) {
        let id: String = rand::random::<[u8; 32]>().iter().map(|b| format!("{b:02x}")).collect();
        let mut open = self.lock();
        open.retain(|_, (at, _)| now.saturating_duration_since(*at) < TTL);
        let mut pushed_out = false;
        if open.len() >= MAX
            && let Some(oldest) = open.iter().min_by_key(|(_, (at, _))| *at).map(|(k, _)| k.clone())
        {
            open.remove(&oldest);
            pushed_out = true;
        }
        open.insert(id.clone(), (now, value));
        (id, pushed_out)
    }

    /// The sign-in under `id`, taken (a second return with the same id finds
    /// nothing), if it has not expired.
    pub fn take(&self, id: &str, now: Instant) -> Option<T> {
        let (at, value) = self.lock().remove(id)?;
        (now.saturating_duration_since(at) < TTL).then_some(value)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sign_in_is_taken_once_within_its_time() {
        let p = Pending::default();
        let t0 = Instant::now();
        let (id, pushed) = p.insert("a", t0);
        assert!(!pushed);
        assert_eq!(id.len(), 64);
        assert_eq!(p.take("forged", t0), None);
        assert_eq!(p.take(&id, t0 + Duration::from_secs(5)), Some("a"));
        assert_eq!(p.take(&id, t0 + Duration::from_secs(6)), None, "used once");
        let (late, _) = p.insert("b", t0);
        assert_eq!(p.take(&late, t0 + TTL), None, "ten minutes is too late");
    }

    #[test]
    fn a_flood_pushes_out_the_oldest_not_the_newest() {
        let p = Pending::default();
        let t0 = Instant::now();
        let (first, _) = p.insert(0, t0);
        let (second, _) = p.insert(1, t0 + Duration::from_millis(1));
        let mut last = (String::new(), false);
        for i in 0..MAX - 1 {
            last = p.insert(i + 2, t0 + Duration::from_millis(2));
        }
        assert!(last.1, "the last insert had to push one out");
        assert_eq!(p.len(), MAX);
        assert_eq!(p.take(&first, t0 + Duration::from_secs(1)), None, "the oldest went");
        assert_eq!(p.take(&second, t0 + Duration::from_secs(1)), Some(1));
        assert_eq!(p.take(&last.0, t0 + Duration::from_secs(1)), Some(MAX));
        // Expired ones go first, before anyone live is pushed out.
        let (_, pushed) = p.insert(7, t0 + TTL + Duration::from_secs(1));
        assert!(!pushed);
        assert_eq!(p.len(), 1);
    }
}
