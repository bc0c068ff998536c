//! Model URIs: where a model's file or folder comes from (`model_uri`), fetched into a local
//! cache through the `object_store` crate.
//!
//! A URI is a local path (plain, or `file://`), or an object in a store: `s3://bucket/key`
//! (and S3-compatible stores through `AWS_ENDPOINT_URL`), `gs://bucket/key`,
//! `az://container/key` (and Azure's other spellings), `http(s)://host/path`. Credentials come
//! from the stores' usual environment variables and are never logged: a URI is shown without
//! its user, password and query ([`redact`]).
//!
//! A store's object is downloaded once into `<cache>/<hash of the URI>/` ([`cache`]), checked
//! against the store on every load (a `HEAD`, or a listing for a folder: a changed ETag or
//! size downloads again), and served from the cache with a warning when the store cannot be
//! reached. An archive (`.tar.gz`, `.tgz`, `.tar`) is unpacked once into a folder there, which
//! the model gets ([`archive`]).

mod archive;
mod cache;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;

use crate::error::{Error, ErrorKind};

use cache::MAX_OBJECTS;
pub use cache::{Manifest, sha256_file as cache_sha256, write_atomic};

/// Why a model could not be fetched, found or cached. Its text is what a graph's diagnostic
/// shows after the field's name (`` `model_uri`: … ``).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store answered that nothing is at the URI: an old cached copy is never served.
    #[error("{shown}: no such object or folder (the store answered: not found)")]
    NotFound { shown: String },
    /// The network failed, or the store refused: the cached copy serves when there is one.
    #[error("{shown}: the store cannot be reached or refused the request: {source}")]
    Unreachable {
        shown: String,
        source: object_store::Error,
    },
    #[error("{shown}: this store cannot list a folder ({source}); name the file itself")]
    CannotList {
        shown: String,
        source: object_store::Error,
    },
    #[error(
        "{shown} holds more than {MAX_OBJECTS} objects; point `model_uri` at the model's own folder"
    )]
    TooMany { shown: String },
    #[error("the store lists an object named `{key}`, which is not a plain relative path")]
    UnsafeKey { key: String },
    #[error("unsupported scheme `{scheme}` in {shown}")]
    Scheme { scheme: String, shown: String },
    /// The store's client could not be made for the URI (its settings or credentials).
    #[error("{shown}: {source}")]
    Client {
        shown: String,
        source: object_store::Error,
    },
    #[error("{shown}: {source}")]
    Key {
        shown: String,
        source: object_store::path::Error,
    },
    #[error("{shown} is a folder; `sha256` pins a single file (name the file)")]
    PinnedFolder { shown: String },
    /// A pin on a folder found in the cache (the store could not be asked).
    #[error("`sha256` pins a single file; this URI is a folder")]
    PinnedCachedFolder,
    #[error(
        "the file's SHA-256 is {}, the graph pins {}: refusing to load it",
        hex(got),
        hex(pinned)
    )]
    Checksum { got: [u8; 32], pinned: [u8; 32] },
    #[error("{shown}: `{key}` changed while it was downloading; load again")]
    Changed { shown: String, key: String },
    #[error("{shown}: downloading `{key}` failed after {attempts} attempts: {source}")]
    Download {
        shown: String,
        key: String,
        attempts: u32,
        source: object_store::Error,
    },
    #[error("{shown}: `{key}` is {written} bytes, the store said {size}")]
    Truncated {
        shown: String,
        key: String,
        written: u64,
        size: u64,
    },
    #[error("fetching {shown} took longer than {secs}s")]
    Timeout { shown: String, secs: u64 },
    #[error("the model cache {} stays locked by another process: {source}", dir.display())]
    Locked {
        dir: PathBuf,
        source: rustix::io::Errno,
    },
    #[error("the model cache {} is incomplete after fetching", dir.display())]
    Incomplete { dir: PathBuf },
    /// A local file or folder (the cache's, a pinned file), or the fetch's own thread:
    /// `doing` says which (`reading /path`).
    #[error("{doing}: {source}")]
    Io {
        doing: String,
        source: std::io::Error,
    },
    #[error("the model fetch panicked")]
    Panicked,
    /// An archive (`.tar.gz`, `.tgz`, `.tar`) that cannot be unpacked safely.
    #[error("{shown}: cannot unpack the archive: {why}")]
    Archive { shown: String, why: String },
}

impl StoreError {
    /// A local I/O failure while `doing` (`writing /path`).
    fn io(doing: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
        let doing = doing.into();
        move |source| StoreError::Io { doing, source }
    }

    /// The kind of request failure this is, when a request's answer carries it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::NotFound { .. } => ErrorKind::NotFound,
            StoreError::Unreachable { .. }
            | StoreError::Download { .. }
            | StoreError::Changed { .. }
            | StoreError::Truncated { .. }
            | StoreError::Locked { .. } => ErrorKind::Unavailable,
            StoreError::Timeout { .. } => ErrorKind::Timeout,
            StoreError::CannotList { .. }
            | StoreError::TooMany { .. }
            | StoreError::Scheme { .. }
            | StoreError::Client { .. }
            | StoreError::Key { .. }
            | StoreError::PinnedFolder { .. }
            | StoreError::PinnedCachedFolder
            | StoreError::Archive { .. } => ErrorKind::BadRequest,
            StoreError::Checksum { .. } => ErrorKind::Unprocessable,
            StoreError::UnsafeKey { .. }
            | StoreError::Incomplete { .. }
            | StoreError::Io { .. }
            | StoreError::Panicked => ErrorKind::Internal,
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Error {
        Error::new(e.kind(), e.to_string())
    }
}

/// Where a model URI points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local file or folder (a plain path, relative to the graph's folder, or `file://`).
    Local(PathBuf),
    /// An object (or a folder of objects) in a store.
    Remote(url::Url),
}

/// The schemes a model URI may use, for error messages.
pub const SCHEMES: &str = "a path, `file://`, `s3://`, `gs://`, `az://`, `http://` or `https://`";

/// Reads a model URI; relative paths resolve under `base` (the graph file's folder). The error
/// is the diagnostic for the graph's field, not a failure to pass on.
pub fn parse(uri: &str, base: &Path) -> Result<Location, String> {
    if uri.trim().is_empty() {
        return Err("the URI is empty".into());
    }
    if let Some(path) = uri.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(format!(
                "`{uri}` is not an absolute `file://` URI (`file:///abs/path`); for a path \
                 relative to the graph, write the path without `file://`"
            ));
        }
        return Ok(Location::Local(PathBuf::from(path)));
    }
    let Some((scheme, _)) = uri.split_once("://") else {
        return Ok(Location::Local(base.join(uri)));
    };
    let url =
        url::Url::parse(uri).map_err(|e| format!("`{}` is not a URI: {e}", redact_str(uri)))?;
    match scheme {
        "s3" | "s3a" | "gs" | "az" | "adl" | "azure" | "abfs" | "abfss" | "http" | "https" => {
            if url.host_str().is_none_or(str::is_empty) {
                return Err(format!("`{}` names no bucket or host", redact(&url)));
            }
            Ok(Location::Remote(url))
        }
        other => Err(format!(
            "unsupported scheme `{other}://` in `{}`; a model URI is {SCHEMES}",
            redact_str(uri)
        )),
    }
}

/// A URI as it may be shown: without user, password or query (SAS tokens, signatures).
pub fn redact(url: &url::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

fn redact_str(uri: &str) -> String {
    url::Url::parse(uri)
        .map(|u| redact(&u))
        .unwrap_or_else(|_| uri.split(['?', '@']).next().unwrap_or_default().to_owned())
}

/// The process-wide settings of model fetching, set once at start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The cache folder (`--model-cache`).
    pub cache: PathBuf,
    /// How long one model's fetch may take, retries included.
    pub timeout: Duration,
    /// Download what is not cached (`false` for `validate`: a `HEAD` only).
    pub download: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cache: default_cache(),
            timeout: Duration::from_secs(600),
            download: true,
        }
    }
}

static SETTINGS: std::sync::OnceLock<Settings> = std::sync::OnceLock::new();

/// Sets the cache folder and fetch deadline (once, at start; later calls are ignored).
pub fn configure(settings: Settings) {
    let _ = SETTINGS.set(settings);
}

pub fn settings() -> &'static Settings {
    SETTINGS.get_or_init(Settings::default)
}

/// `$XDG_CACHE_HOME/servegraph/models`, else `~/.cache/servegraph/models`, else a folder in
/// the system's temporary folder.
pub fn default_cache() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })
        .unwrap_or_else(std::env::temp_dir);
    base.join("servegraph").join("models")
}

/// What a fetch asks for.
#[derive(Debug, Clone, Default)]
pub struct Fetch {
    /// The SHA-256 the graph pins (of a single file), checked on every load.
    pub sha256: Option<[u8; 32]>,
}

/// A model fetched into the cache.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The local file (a single object) or folder (a prefix of objects).
    pub path: PathBuf,
    /// Bytes downloaded by this fetch (0: the cache was current).
    pub downloaded: u64,
    /// Set when the store could not be reached and the cache served instead: the reason.
    pub offline: Option<String>,
}

/// What a store says of a URI, without downloading it (`validate`).
#[derive(Debug, Clone)]
pub struct Found {
    pub objects: usize,
    pub bytes: u64,
}

/// Reads a pin spelled `sha256:<64 hex digits>`; the error is the diagnostic for `sha256`.
pub fn parse_sha256(pin: &str) -> Result<[u8; 32], String> {
    let hex = pin.strip_prefix("sha256:").ok_or_else(|| {
        format!("`{pin}` is not a pin: write `sha256:` and the file's 64 hexadecimal digits")
    })?;
    if hex.len() != 64 {
        return Err(format!(
            "`{pin}`: a SHA-256 has 64 hexadecimal digits, this has {}",
            hex.len()
        ));
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| format!("`{pin}` has a character that is not hexadecimal"))?;
    }
    Ok(out)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Fetches `url` into the cache (or finds it current there), blocking; runs on its own
/// thread and runtime, so it may be called from anywhere (a graph load, a blocking task).
pub fn fetch(url: &url::Url, what: &Fetch) -> Result<Fetched, StoreError> {
    let (url, what) = (url.clone(), what.clone());
    on_own_runtime(move || async move {
        let timeout = settings().timeout;
        match tokio::time::timeout(timeout, cache::fetch(&url, &what, settings())).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Timeout {
                shown: redact(&url),
                secs: timeout.as_secs(),
            }),
        }
    })
}

/// Checks that `url` names an object or a folder of objects (a `HEAD`, or a listing), without
/// downloading it.
pub fn find(url: &url::Url) -> Result<Found, StoreError> {
    let url = url.clone();
    on_own_runtime(move || async move {
        let (store, prefix) = store_for(&url)?;
        let objects = cache::list(store.as_ref(), &prefix, &url).await?;
        Ok(Found {
            objects: objects.len(),
            bytes: objects.iter().map(|o| o.size).sum(),
        })
    })
}

/// The cached copy of `url` when the cache has a complete one (without asking the store).
pub fn cached(url: &url::Url) -> Option<PathBuf> {
    cache::cached(url, settings())
}

fn on_own_runtime<F, Fut, T>(f: F) -> Result<T, StoreError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
    T: Send + 'static,
{
    std::thread::Builder::new()
        .name("model-fetch".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(StoreError::io("starting the fetch runtime"))?;
            rt.block_on(f())
        })
        .map_err(StoreError::io("starting the fetch thread"))?
        .join()
        .map_err(|_| StoreError::Panicked)?
}

/// The store for a URI and the object path (or prefix) inside it. Credentials come from the
/// environment; an `http://` S3 endpoint (`AWS_ENDPOINT_URL`) allows plain HTTP.
fn store_for(
    url: &url::Url,
) -> Result<(Arc<dyn ObjectStore>, object_store::path::Path), StoreError> {
    use object_store::ClientOptions;
    let retry = object_store::RetryConfig {
        max_retries: 4,
        retry_timeout: Duration::from_secs(60),
        ..Default::default()
    };
    let client = ClientOptions::new().with_connect_timeout(Duration::from_secs(5));
    let shown = redact(url);
    let fail = |source: object_store::Error| StoreError::Client {
        shown: shown.clone(),
        source,
    };
    let key = url.path().trim_start_matches('/');
    let key = percent_decode(key);
    let store: Arc<dyn ObjectStore> = match url.scheme() {
        "s3" | "s3a" => {
            let endpoint_http = ["AWS_ENDPOINT_URL", "AWS_ENDPOINT", "AWS_ENDPOINT_URL_S3"]
                .iter()
                .filter_map(|k| std::env::var(k).ok())
                .any(|e| e.starts_with("http://"));
            Arc::new(
                object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url.as_str())
                    .with_retry(retry)
                    .with_client_options(client.with_allow_http(endpoint_http))
                    .build()
                    .map_err(fail)?,
            )
        }
        "gs" => Arc::new(
            object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_url(url.as_str())
                .with_retry(retry)
                .with_client_options(client)
                .build()
                .map_err(fail)?,
        ),
        "az" | "adl" | "azure" | "abfs" | "abfss" => Arc::new(
            object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_url(url.as_str())
                .with_retry(retry)
                .with_client_options(client)
                .build()
                .map_err(fail)?,
        ),
        "http" | "https" => {
            // The store is the server; the object is the URL's path.
            let mut root = url.clone();
            root.set_path("/");
            Arc::new(
                object_store::http::HttpBuilder::new()
                    .with_url(root.as_str())
                    .with_retry(retry)
                    .with_client_options(client.with_allow_http(url.scheme() == "http"))
                    .build()
                    .map_err(fail)?,
            )
        }
        // Local files are served in place (see `parse`); the cache's tests use this.
        "file" => Arc::new(object_store::local::LocalFileSystem::new()),
        other => {
            return Err(StoreError::Scheme {
                scheme: other.to_owned(),
                shown,
            });
        }
    };
    // Azure's `az://container/key` and GCS/S3's `bucket/key`: the bucket is the host, the
    // key the path. Azure's `abfs://container@account...` keep the same shape.
    let prefix = object_store::path::Path::parse(key.trim_end_matches('/'))
        .map_err(|source| StoreError::Key { shown, source })?;
    Ok((store, prefix))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_are_read_or_refused_with_the_reason() {
        let base = Path::new("/g");
        assert_eq!(
            parse("../models/m.onnx", base).unwrap(),
            Location::Local(PathBuf::from("/g/../models/m.onnx"))
        );
        assert_eq!(
            parse("file:///abs/m.onnx", base).unwrap(),
            Location::Local(PathBuf::from("/abs/m.onnx"))
        );
        assert!(matches!(
            parse("s3://bucket/iris/", base).unwrap(),
            Location::Remote(_)
        ));
        let e = parse("ftp://host/m.onnx", base).unwrap_err();
        assert!(e.contains("unsupported scheme `ftp://`"), "{e}");
        let e = parse("file://rel/m.onnx", base).unwrap_err();
        assert!(e.contains("not an absolute"), "{e}");
        let e = parse("s3:///key", base).unwrap_err();
        assert!(e.contains("names no bucket"), "{e}");
    }

    #[test]
    fn credentials_never_show() {
        let url =
            url::Url::parse("https://user:secret@acct.blob.core.windows.net/c/m.onnx?sig=abc")
                .unwrap();
        let shown = redact(&url);
        assert!(!shown.contains("secret") && !shown.contains("sig=") && !shown.contains("user"));
        assert!(shown.ends_with("/c/m.onnx"), "{shown}");
    }

    #[test]
    fn pins_are_checked() {
        let pin = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(parse_sha256(&pin).unwrap(), [0xab; 32]);
        assert!(parse_sha256("md5:00").unwrap_err().contains("not a pin"));
        assert!(
            parse_sha256("sha256:abc")
                .unwrap_err()
                .contains("64 hexadecimal")
        );
        assert!(
            parse_sha256(&format!("sha256:{}", "zz".repeat(32)))
                .unwrap_err()
                .contains("not hexadecimal")
        );
    }

    #[test]
    fn store_errors_keep_their_text_and_map_to_a_kind() {
        let missing = StoreError::NotFound {
            shown: "s3://bucket/m.onnx".into(),
        };
        assert_eq!(
            missing.to_string(),
            "s3://bucket/m.onnx: no such object or folder (the store answered: not found)"
        );
        let e = Error::from(missing);
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert_eq!(
            e.message,
            "s3://bucket/m.onnx: no such object or folder (the store answered: not found)"
        );
        let late = StoreError::Timeout {
            shown: "gs://b/m.onnx".into(),
            secs: 600,
        };
        assert_eq!(
            late.to_string(),
            "fetching gs://b/m.onnx took longer than 600s"
        );
        assert_eq!(late.kind(), ErrorKind::Timeout);
        let wrong = StoreError::Checksum {
            got: [0xab; 32],
            pinned: [0; 32],
        };
        assert_eq!(
            wrong.to_string(),
            format!(
                "the file's SHA-256 is {}, the graph pins {}: refusing to load it",
                "ab".repeat(32),
                "00".repeat(32)
            )
        );
    }

    #[test]
    fn percent_escapes_are_decoded() {
        assert_eq!(percent_decode("a%20b/c"), "a b/c");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
