//! One shared copy of each distinct string that a million hosts repeat: label keys
//! and values, customer ids, versions, agent addresses (every host of a simulated
//! fleet has the same), health details. An interned string is an `Arc<str>`: 16
//! bytes where a `String` is 24 plus its own heap copy.
//!
//! A pool forgets the strings nobody holds any more when it has doubled since it
//! last looked, so hosts that come and go (addresses, versions) do not grow it
//! for ever.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock, Mutex};

/// The distinct strings handed out, and the size after the last sweep.
#[derive(Debug, Default)]
pub struct Pool {
    strings: HashSet<Arc<str>, foldhash::fast::RandomState>,
    swept_at: usize,
}

/// A pool never sweeps below this many strings.
const MIN_SWEEP: usize = 4_096;

impl Pool {
    /// The pool's copy of `s`, added on first sight.
    pub fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(found) = self.strings.get(s) {
            return found.clone();
        }
        let new: Arc<str> = Arc::from(s);
        self.strings.insert(new.clone());
        if self.strings.len() > 2 * self.swept_at.max(MIN_SWEEP) {
            // Only the pool holds them: nobody uses them any more.
            self.strings.retain(|s| Arc::strong_count(s) > 1);
            self.swept_at = self.strings.len();
        }
        new
    }

    pub fn len(&self) -> usize {
        self.strings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }
}

/// The process-wide pool of the inventory's strings.
static SHARED: LazyLock<Mutex<Pool>> = LazyLock::new(Mutex::default);

/// The shared copy of `s`.
pub fn intern(s: &str) -> Arc<str> {
    SHARED.lock().unwrap_or_else(|p| p.into_inner()).get(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_copy_each_and_the_unused_are_forgotten() {
        let mut pool = Pool::default();
        let a = pool.get("15.20.8207.12");
        assert!(Arc::ptr_eq(&a, &pool.get("15.20.8207.12")));
        // Addresses of hosts that came and went: the pool sweeps them once it doubled.
        for i in 0..3 * MIN_SWEEP {
            pool.get(&format!("10.0.0.{i}:7070"));
        }
        assert!(pool.len() <= 2 * MIN_SWEEP + 1, "{}", pool.len());
        assert!(Arc::ptr_eq(&a, &pool.get("15.20.8207.12")), "a held string stays");
    }
}
