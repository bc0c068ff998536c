//! What a serving process knows of its models' loading, and what it keeps from one build of
//! its graph to the next:
//!
//! - [`begin`]: the loads in progress, by model, with when each began, so readiness and the
//!   log can say which models are still loading and for how long ([`describe`]);
//! - [`Shelf`]: objects a graph's steps built and a later build of the same process may take
//!   again as they are (a Python model whose spec and files did not change keeps its workers;
//!   a router whose policy did not change keeps its learning), held weakly: an object lives
//!   as long as a graph uses it.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// Loads in progress: id → (model, when it began).
type Loads = Mutex<Vec<(u64, String, Instant)>>;

fn loads() -> &'static Loads {
    static LOADS: std::sync::OnceLock<Loads> = std::sync::OnceLock::new();
    LOADS.get_or_init(Default::default)
}

/// A model's load in progress, until dropped.
pub struct Load {
    id: u64,
}

/// Records that `model` began loading; the load ends when the guard is dropped.
pub fn begin(model: &str) -> Load {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    loads()
        .lock()
        .expect("not poisoned")
        .push((id, model.to_owned(), Instant::now()));
    Load { id }
}

impl Drop for Load {
    fn drop(&mut self) {
        loads()
            .lock()
            .expect("not poisoned")
            .retain(|(id, _, _)| *id != self.id);
    }
}

/// The models loading now and for how long, the longest first (a model loading twice, in two
/// builds side by side, is named once, with its longer load).
pub fn in_progress() -> Vec<(String, Duration)> {
    let mut out: Vec<(String, Duration)> = Vec::new();
    for (_, model, since) in loads().lock().expect("not poisoned").iter() {
        let took = since.elapsed();
        match out.iter_mut().find(|(m, _)| m == model) {
            Some((_, t)) => *t = (*t).max(took),
            None => out.push((model.clone(), took)),
        }
    }
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

/// The models loading now, as readiness and the log say it: "`a` (8.1 s), `b` (8.0 s)";
/// `None` when none is.
pub fn describe() -> Option<String> {
    let loading = in_progress();
    (!loading.is_empty()).then(|| {
        loading
            .iter()
            .map(|(m, t)| format!("`{m}` ({:.1} s)", t.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    })
}

/// What one serving process keeps between builds of its graph: objects by key, held weakly
/// (see the module's documentation). Cloning it shares it; builds given none keep nothing.
#[derive(Clone, Default)]
pub struct Shelf(Arc<Mutex<HashMap<String, Weak<dyn Any + Send + Sync>>>>);

impl Shelf {
    /// The object kept under `key` while a graph still uses it; else `make`'s, kept from now
    /// on. `true` with an object taken again.
    pub fn take_or<T: Any + Send + Sync, E>(
        &self,
        key: &str,
        make: impl FnOnce() -> Result<Arc<T>, E>,
    ) -> Result<(Arc<T>, bool), E> {
        if let Some(kept) = self.get::<T>(key) {
            return Ok((kept, true));
        }
        let made = make()?;
        self.put(key, &made);
        Ok((made, false))
    }

    /// The object kept under `key`, if a graph still uses it.
    pub fn get<T: Any + Send + Sync>(&self, key: &str) -> Option<Arc<T>> {
        let kept = self.0.lock().expect("not poisoned").get(key)?.upgrade()?;
        kept.downcast::<T>().ok()
    }

    /// Keeps `object` under `key` (while something else holds it).
    pub fn put<T: Any + Send + Sync>(&self, key: &str, object: &Arc<T>) {
        let object: Arc<dyn Any + Send + Sync> = Arc::clone(object) as _;
        let mut shelf = self.0.lock().expect("not poisoned");
        shelf.retain(|_, w| w.strong_count() > 0);
        shelf.insert(key.to_owned(), Arc::downgrade(&object));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_are_named_while_they_last() {
        let a = begin("loading-test-a");
        std::thread::sleep(Duration::from_millis(20));
        let b = begin("loading-test-b");
        let text = describe().unwrap();
        let at = |m: &str| text.find(m).unwrap();
        assert!(
            at("`loading-test-a` (") < at("`loading-test-b` ("),
            "{text}"
        );
        drop(a);
        let text = describe().unwrap_or_default();
        assert!(!text.contains("loading-test-a"), "{text}");
        assert!(text.contains("loading-test-b"), "{text}");
        drop(b);
        assert!(!describe().unwrap_or_default().contains("loading-test-b"));
    }

    #[test]
    fn the_shelf_keeps_what_a_graph_still_uses() {
        let shelf = Shelf::default();
        let (first, kept) = shelf.take_or::<u32, ()>("k", || Ok(Arc::new(1))).unwrap();
        assert!(!kept);
        let (again, kept) = shelf.take_or::<u32, ()>("k", || Ok(Arc::new(2))).unwrap();
        assert!(kept && Arc::ptr_eq(&first, &again));
        // Another type under the same key is not taken for it.
        assert!(shelf.get::<String>("k").is_none());
        drop((first, again));
        let (fresh, kept) = shelf.take_or::<u32, ()>("k", || Ok(Arc::new(3))).unwrap();
        assert!(!kept);
        assert_eq!(*fresh, 3);
    }
}
