//! The local model cache: one folder per URI (named by a hash of the URI without its
//! credentials), the objects under `files/`, and `manifest.json` recording each object's key,
//! size and ETag as the store gave them, written last so a folder with a manifest is complete.
//!
//! Downloads go to `<file>.partial` and are renamed once whole and synced; a body that breaks
//! is resumed from where it stopped (a ranged GET pinned to the ETag), with backoff. A lock
//! file keeps two processes from fetching the same URI at once.

use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};

use super::archive;
use super::{Fetch, Fetched, Settings, StoreError, hex, redact, store_for};

/// What a cache folder holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// The URI, without credentials.
    pub uri: String,
    /// A folder of objects (the model gets the folder) or one object (the model gets the file).
    pub folder: bool,
    pub objects: Vec<Object>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Object {
    /// The path under `files/`.
    pub key: String,
    pub size: u64,
    pub e_tag: Option<String>,
    pub last_modified: String,
}

/// An object as the store lists it.
pub(super) struct Remote {
    path: object_store::path::Path,
    pub(super) key: String,
    pub(super) size: u64,
    e_tag: Option<String>,
    last_modified: String,
}

/// More objects than this under one folder URI is refused (a URI pointing at a bucket's root
/// by mistake should not fill the disk).
pub(super) const MAX_OBJECTS: usize = 10_000;
/// Attempts per object; each resumes where the last stopped.
const ATTEMPTS: u32 = 4;
/// Files at least this large get a progress bar (on a terminal).
const PROGRESS_BYTES: u64 = 8 << 20;

fn folder_for(url: &url::Url, settings: &Settings) -> PathBuf {
    let digest = ring::digest::digest(&ring::digest::SHA256, redact(url).as_bytes());
    settings.cache.join(&hex(digest.as_ref())[..32])
}

fn read_manifest(dir: &Path) -> Option<Manifest> {
    let text = std::fs::read(dir.join("manifest.json")).ok()?;
    serde_json::from_slice(&text).ok()
}

/// The local path of a complete cache folder: every object there with its size.
fn complete(dir: &Path, manifest: &Manifest) -> Option<PathBuf> {
    let files = dir.join("files");
    let whole = manifest.objects.iter().all(|o| {
        std::fs::metadata(files.join(&o.key)).is_ok_and(|m| m.is_file() && m.len() == o.size)
    });
    if !whole {
        return None;
    }
    if manifest.folder {
        Some(files)
    } else {
        manifest.objects.first().map(|o| files.join(&o.key))
    }
}

pub(super) fn cached(url: &url::Url, settings: &Settings) -> Option<PathBuf> {
    let dir = folder_for(url, settings);
    let manifest = read_manifest(&dir)?;
    let path = complete(&dir, &manifest)?;
    match (
        manifest.folder,
        archive::format_of(url),
        manifest.objects.first(),
    ) {
        // An archive is its folder, once unpacked.
        (false, Some(_), Some(object)) => {
            Some(archive::folder(&dir, object)).filter(|f| f.is_dir())
        }
        _ => Some(path),
    }
}

/// The folder archive `path` unpacks into, when `url` names an archive ([`archive`]); else
/// `path`.
fn as_folder(
    url: &url::Url,
    dir: &Path,
    manifest: &Manifest,
    path: PathBuf,
    shown: &str,
) -> Result<PathBuf, StoreError> {
    match (
        manifest.folder,
        archive::format_of(url),
        manifest.objects.first(),
    ) {
        (false, Some(format), Some(object)) => archive::unpacked(dir, &path, object, format, shown),
        _ => Ok(path),
    }
}

/// A key as a relative path under `files/`: plain components only (a store's key with `..`
/// or a leading `/` never writes outside the cache folder).
fn safe_key(key: &str) -> Result<String, StoreError> {
    let path = Path::new(key);
    if key.is_empty() || !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(StoreError::UnsafeKey {
            key: key.to_owned(),
        });
    }
    Ok(key.to_owned())
}

/// The objects a URI names: one (a `HEAD` answered) or every object under it as a folder
/// (a URI ending in `/`, or one whose `HEAD` found nothing).
pub(super) async fn list(
    store: &dyn ObjectStore,
    prefix: &object_store::path::Path,
    url: &url::Url,
) -> Result<Vec<Remote>, StoreError> {
    Ok(list_objects(store, prefix, url).await?.1)
}

async fn list_objects(
    store: &dyn ObjectStore,
    prefix: &object_store::path::Path,
    url: &url::Url,
) -> Result<(bool, Vec<Remote>), StoreError> {
    let shown = redact(url);
    let remote = |meta: object_store::ObjectMeta, key: String| Remote {
        path: meta.location,
        key,
        size: meta.size,
        e_tag: meta.e_tag,
        last_modified: meta.last_modified.to_rfc3339(),
    };
    if !url.path().ends_with('/') {
        match store.head(prefix).await {
            Ok(meta) => {
                let name = prefix.filename().unwrap_or("model").to_owned();
                return Ok((false, vec![remote(meta, safe_key(&name)?)]));
            }
            // A plain web server lists no folders (WebDAV's PROPFIND): its 404 for a file is
            // the answer, at once.
            Err(object_store::Error::NotFound { .. })
                if matches!(url.scheme(), "http" | "https") =>
            {
                return Err(StoreError::NotFound { shown });
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(unreachable(&shown, e)),
        }
    }
    let mut objects = Vec::new();
    let mut listing = store.list(Some(prefix));
    while let Some(meta) = listing.next().await {
        let meta = meta.map_err(|e| match e {
            object_store::Error::NotSupported { .. }
            | object_store::Error::NotImplemented { .. } => StoreError::CannotList {
                shown: shown.clone(),
                source: e,
            },
            e => unreachable(&shown, e),
        })?;
        let key = meta
            .location
            .prefix_match(prefix)
            .map(|parts| {
                parts
                    .map(|p| p.as_ref().to_owned())
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .unwrap_or_else(|| meta.location.to_string());
        objects.push(remote(meta, safe_key(&key)?));
        if objects.len() > MAX_OBJECTS {
            return Err(StoreError::TooMany { shown });
        }
    }
    if objects.is_empty() {
        return Err(StoreError::NotFound { shown });
    }
    objects.sort_by(|a, b| a.key.cmp(&b.key));
    Ok((true, objects))
}

fn unreachable(shown: &str, source: object_store::Error) -> StoreError {
    StoreError::Unreachable {
        shown: shown.to_owned(),
        source,
    }
}

/// Takes the folder's lock (another process fetching the same URI holds it until done).
fn lock(dir: &Path, deadline: std::time::Instant) -> Result<std::fs::File, StoreError> {
    use rustix::fs::{FlockOperation, flock};
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".lock"))
        .map_err(StoreError::io(format!("the model cache {}", dir.display())))?;
    loop {
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(file),
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(source) => {
                return Err(StoreError::Locked {
                    dir: dir.to_owned(),
                    source,
                });
            }
        }
    }
}

pub(super) async fn fetch(
    url: &url::Url,
    what: &Fetch,
    settings: &Settings,
) -> Result<Fetched, StoreError> {
    let shown = redact(url);
    let dir = folder_for(url, settings);
    std::fs::create_dir_all(dir.join("files")).map_err(StoreError::io(format!(
        "creating the model cache {}",
        dir.display()
    )))?;
    let _lock = lock(&dir, std::time::Instant::now() + settings.timeout)?;
    let old = read_manifest(&dir);
    let listed = match store_for(url) {
        Ok((store, prefix)) => list_objects(store.as_ref(), &prefix, url)
            .await
            .map(|l| (store, l)),
        Err(e) => Err(e),
    };
    let (store, (folder, objects)) = match listed {
        Ok(listed) => listed,
        // The store answered that the object is gone: never serve an old copy of it.
        Err(e @ StoreError::NotFound { .. }) => return Err(e),
        Err(e) => {
            let Some(path) = old.as_ref().and_then(|m| complete(&dir, m)) else {
                return Err(e);
            };
            check_pin(&path, what, old.as_ref().is_some_and(|m| m.folder))?;
            let path = match &old {
                Some(m) => as_folder(url, &dir, m, path, &shown)?,
                None => path,
            };
            tracing::warn!(uri = %shown, cache = %path.display(), reason = %e, "the model store cannot be reached: serving the cached copy");
            return Ok(Fetched {
                path,
                downloaded: 0,
                offline: Some(e.to_string()),
            });
        }
    };
    if what.sha256.is_some() && folder {
        return Err(StoreError::PinnedFolder { shown });
    }
    let files = dir.join("files");
    let same = |o: &Remote| {
        old.as_ref().is_some_and(|m| {
            m.objects.iter().any(|k| {
                k.key == o.key
                    && k.size == o.size
                    && k.e_tag == o.e_tag
                    && (o.e_tag.is_some() || k.last_modified == o.last_modified)
            })
        }) && std::fs::metadata(files.join(&o.key)).is_ok_and(|m| m.len() == o.size)
    };
    let mut downloaded = 0;
    for object in &objects {
        if same(object) {
            continue;
        }
        downloaded += download(store.as_ref(), object, &files.join(&object.key), &shown).await?;
    }
    // Objects gone from the store leave the cache.
    if let Some(old) = &old {
        for gone in old
            .objects
            .iter()
            .filter(|o| !objects.iter().any(|n| n.key == o.key))
        {
            let _ = std::fs::remove_file(files.join(&gone.key));
        }
    }
    let manifest = Manifest {
        uri: shown.clone(),
        folder,
        objects: objects
            .iter()
            .map(|o| Object {
                key: o.key.clone(),
                size: o.size,
                e_tag: o.e_tag.clone(),
                last_modified: o.last_modified.clone(),
            })
            .collect(),
    };
    if old.as_ref() != Some(&manifest) {
        write_atomic(
            &dir.join("manifest.json"),
            &serde_json::to_vec_pretty(&manifest).expect("JSON"),
        )?;
    }
    let path =
        complete(&dir, &manifest).ok_or_else(|| StoreError::Incomplete { dir: dir.clone() })?;
    check_pin(&path, what, folder)?;
    let path = as_folder(url, &dir, &manifest, path, &shown)?;
    if downloaded > 0 {
        tracing::info!(uri = %shown, bytes = downloaded, cache = %path.display(), "model downloaded");
    }
    Ok(Fetched {
        path,
        downloaded,
        offline: None,
    })
}

/// Checks the graph's `sha256` pin against the file as it is now (on every load).
fn check_pin(path: &Path, what: &Fetch, folder: bool) -> Result<(), StoreError> {
    let Some(pinned) = what.sha256 else {
        return Ok(());
    };
    if folder {
        return Err(StoreError::PinnedCachedFolder);
    }
    let got = sha256_file(path)?;
    if got != pinned {
        return Err(StoreError::Checksum { got, pinned });
    }
    Ok(())
}

pub fn sha256_file(path: &Path) -> Result<[u8; 32], StoreError> {
    use std::io::Read;
    let reading = || StoreError::io(format!("reading {}", path.display()));
    let mut file = std::fs::File::open(path).map_err(reading())?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(reading())?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Ok(out)
}

/// Writes `bytes` to `path` through a temporary file in the same folder, synced and renamed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let fail = || StoreError::io(format!("writing {}", path.display()));
    let mut tmp = tempfile_in(dir).map_err(fail())?;
    tmp.1.write_all(bytes).map_err(fail())?;
    tmp.1.sync_all().map_err(fail())?;
    std::fs::rename(&tmp.0, path).map_err(fail())?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    for n in 0..100u32 {
        let name = dir.join(format!(
            ".tmp-{}-{}-{n}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or_default()
        ));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&name)
        {
            Ok(f) => return Ok((name, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free temporary name"))
}

/// Downloads one object to `dest` via `dest.partial`; a broken body resumes from the bytes
/// already written (a ranged GET pinned to the ETag, so a changed object is never spliced).
async fn download(
    store: &dyn ObjectStore,
    object: &Remote,
    dest: &Path,
    shown: &str,
) -> Result<u64, StoreError> {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(StoreError::io(parent.display().to_string()))?;
    }
    let partial = dest.with_file_name(format!(
        "{}.partial",
        dest.file_name().unwrap_or_default().to_string_lossy()
    ));
    let fail = || StoreError::io(format!("writing {}", partial.display()));
    let mut file = std::fs::File::create(&partial).map_err(fail())?;
    let bar = if object.size >= PROGRESS_BYTES {
        let bar = indicatif::ProgressBar::new(object.size);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style);
        }
        bar.set_message(format!("downloading {}", object.key));
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut written: u64 = 0;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let options = GetOptions {
            if_match: object.e_tag.clone(),
            range: (written > 0).then_some(GetRange::Offset(written)),
            ..Default::default()
        };
        let result: Result<(), object_store::Error> = async {
            let mut body = store.get_opts(&object.path, options).await?.into_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                file.write_all(&chunk)
                    .map_err(|e| object_store::Error::Generic {
                        store: "cache",
                        source: Box::new(e),
                    })?;
                written += chunk.len() as u64;
                bar.set_position(written);
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => break,
            Err(object_store::Error::Precondition { .. }) => {
                bar.finish_and_clear();
                let _ = std::fs::remove_file(&partial);
                return Err(StoreError::Changed {
                    shown: shown.to_owned(),
                    key: object.key.clone(),
                });
            }
            Err(e) if attempt < ATTEMPTS => {
                let wait = Duration::from_millis(250 << attempt);
                tracing::warn!(uri = %shown, key = %object.key, written, error = %e, "download interrupted; resuming in {wait:?}");
                tokio::time::sleep(wait).await;
            }
            Err(source) => {
                bar.finish_and_clear();
                let _ = std::fs::remove_file(&partial);
                return Err(StoreError::Download {
                    shown: shown.to_owned(),
                    key: object.key.clone(),
                    attempts: ATTEMPTS,
                    source,
                });
            }
        }
    }
    bar.finish_and_clear();
    if written != object.size {
        let _ = std::fs::remove_file(&partial);
        return Err(StoreError::Truncated {
            shown: shown.to_owned(),
            key: object.key.clone(),
            written,
            size: object.size,
        });
    }
    file.sync_all().map_err(fail())?;
    drop(file);
    std::fs::rename(&partial, dest).map_err(StoreError::io(dest.display().to_string()))?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_inside_the_cache() {
        assert!(safe_key("a/b.onnx").is_ok());
        for bad in ["../x", "/etc/passwd", "a/../../x", ""] {
            assert!(safe_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_folder_on_disk_is_fetched_whole_then_reused_then_refetched_when_changed() {
        let store = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(store.path().join("m/sub")).unwrap();
        std::fs::write(store.path().join("m/a.bin"), b"abc").unwrap();
        std::fs::write(store.path().join("m/sub/b.bin"), b"defg").unwrap();
        let settings = Settings {
            cache: cache.path().to_owned(),
            timeout: Duration::from_secs(10),
            download: true,
        };
        let url = url::Url::parse(&format!("file://{}/m/", store.path().display())).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let first = rt
            .block_on(fetch_local(&url, &Fetch::default(), &settings))
            .unwrap();
        assert_eq!(first.downloaded, 7);
        assert_eq!(
            std::fs::read(first.path.join("sub/b.bin")).unwrap(),
            b"defg"
        );
        let again = rt
            .block_on(fetch_local(&url, &Fetch::default(), &settings))
            .unwrap();
        assert_eq!(again.downloaded, 0);
        std::fs::write(store.path().join("m/a.bin"), b"abcdef").unwrap();
        let changed = rt
            .block_on(fetch_local(&url, &Fetch::default(), &settings))
            .unwrap();
        assert_eq!(changed.downloaded, 6);
        assert_eq!(
            std::fs::read(changed.path.join("a.bin")).unwrap(),
            b"abcdef"
        );
    }

    #[test]
    fn a_missing_object_is_the_stores_not_found() {
        let store = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let settings = Settings {
            cache: cache.path().to_owned(),
            timeout: Duration::from_secs(10),
            download: true,
        };
        let url = url::Url::parse(&format!("file://{}/gone.onnx", store.path().display())).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let e = rt
            .block_on(fetch_local(&url, &Fetch::default(), &settings))
            .unwrap_err();
        assert!(matches!(e, StoreError::NotFound { .. }), "{e:?}");
        assert!(
            e.to_string()
                .ends_with("/gone.onnx: no such object or folder (the store answered: not found)"),
            "{e}"
        );
    }

    /// [`fetch`] with a `file://` store (the production path serves local files without the
    /// cache; this drives the cache through object_store's LocalFileSystem).
    async fn fetch_local(
        url: &url::Url,
        what: &Fetch,
        settings: &Settings,
    ) -> Result<Fetched, StoreError> {
        fetch(url, what, settings).await
    }
}
