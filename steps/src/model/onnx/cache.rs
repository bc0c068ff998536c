//! Models shared between graphs built side by side (a reload): loaded once per file and settings.

use std::path::Path;
use std::sync::Arc;

use super::OnnxModel;
use crate::model::OnnxSpec;

impl OnnxModel {
    /// A loaded model, shared: a graph built while another still runs (a reload) reuses the
    /// models the two have in common (same step name, file and settings, and the file
    /// unchanged) instead of loading them again. A model is let go with the last graph that
    /// uses it.
    pub fn shared(
        name: &str,
        path: &Path,
        spec: &OnnxSpec,
    ) -> std::result::Result<Arc<OnnxModel>, String> {
        type Cache =
            std::sync::Mutex<std::collections::HashMap<String, std::sync::Weak<OnnxModel>>>;
        static LOADED: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
        let file = std::fs::metadata(path)
            .map(|m| (m.len(), m.modified().ok()))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let key = format!(
            "{name}|{}|{file:?}|{}|{}|{}|{:?}|{:?}|{:?}|{}",
            path.display(),
            spec.intra_op_threads,
            spec.sessions,
            spec.queue_size,
            spec.batch,
            spec.max_batch_size,
            spec.explain.as_ref().map(|e| &e.baseline),
            spec.inline,
        );
        let cache = LOADED.get_or_init(Default::default);
        if let Some(model) = cache
            .lock()
            .expect("not poisoned")
            .get(&key)
            .and_then(|w| w.upgrade())
        {
            tracing::info!(model = name, "reusing the loaded model");
            return Ok(model);
        }
        let model = Arc::new(OnnxModel::load(name, path, spec)?);
        let mut cache = cache.lock().expect("not poisoned");
        cache.retain(|_, w| w.strong_count() > 0);
        cache.insert(key, Arc::downgrade(&model));
        Ok(model)
    }
}
