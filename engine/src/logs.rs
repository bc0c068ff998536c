//! Keeping a fault from flooding the log: the same failure (the same model and traceback, the
//! same answer to a request) is logged at warn once a minute, and at debug the rest of the
//! time.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How often one failure is logged at warn.
pub const SAME_FAILURE_EVERY: Duration = Duration::from_secs(60);

/// Distinct failures remembered: past it the older half is forgotten (bounded memory when
/// every failure differs).
const KEPT: usize = 256;

/// Whether the failure `key` names was not logged at warn in the last [`SAME_FAILURE_EVERY`]
/// (and is now counted as logged).
pub fn first_in_a_while(key: &impl Hash) -> bool {
    first_at(key, Instant::now())
}

fn first_at(key: &impl Hash, now: Instant) -> bool {
    static SEEN: OnceLock<Mutex<HashMap<u64, Instant>>> = OnceLock::new();
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    let key = hasher.finish();
    let mut seen = SEEN
        .get_or_init(Default::default)
        .lock()
        .expect("not poisoned");
    if seen
        .get(&key)
        .is_some_and(|at| now.saturating_duration_since(*at) < SAME_FAILURE_EVERY)
    {
        return false;
    }
    if seen.len() >= KEPT {
        let mut ages: Vec<Instant> = seen.values().copied().collect();
        ages.sort_unstable();
        let cut = ages[ages.len() / 2];
        seen.retain(|_, at| *at > cut);
    }
    seen.insert(key, now);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_failure_is_logged_once_a_minute() {
        let t0 = Instant::now();
        assert!(first_at(&("logs-a", "boom"), t0));
        assert!(!first_at(&("logs-a", "boom"), t0 + Duration::from_secs(59)));
        assert!(first_at(&("logs-b", "boom"), t0), "another model's");
        assert!(first_at(&("logs-a", "bang"), t0), "another failure");
        assert!(first_at(&("logs-a", "boom"), t0 + Duration::from_secs(61)));
    }

    #[test]
    fn what_is_remembered_is_bounded() {
        let t0 = Instant::now();
        for i in 0..(3 * KEPT) {
            first_at(&("logs-many", i), t0 + Duration::from_millis(i as u64));
        }
        let n = 3 * KEPT - 1;
        assert!(!first_at(
            &("logs-many", n),
            t0 + Duration::from_millis(n as u64)
        ));
    }
}
