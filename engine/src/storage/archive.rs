//! Archives as model folders: a store's object whose name ends in `.tar.gz`, `.tgz` or `.tar`
//! is downloaded into the cache like any file, then unpacked once into a folder beside it,
//! which the model gets (a folder over a plain web server, which cannot list one).
//!
//! Unpacking is safe and bounded: every entry is a plain relative path (no `..`, no absolute
//! path, none through a symbolic link the archive made), a symbolic link points inside the
//! folder, hard links and special files are refused, and the entries and their bytes are
//! capped. It unpacks into a temporary folder renamed whole once done, named by the archive's
//! size and ETag, so a cached archive is unpacked once and a changed one again.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use super::StoreError;
use super::cache::Object;

/// More entries than this is refused.
pub(super) const MAX_ENTRIES: usize = 10_000;
/// More bytes than this, unpacked, is refused.
pub(super) const MAX_BYTES: u64 = 16 << 30;

/// What an archive is, by its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Format {
    TarGz,
    Tar,
}

/// The archive format `url`'s path names (`.tar.gz`, `.tgz`, `.tar`, any case), if any.
pub(super) fn format_of(url: &url::Url) -> Option<Format> {
    let path = url.path().to_ascii_lowercase();
    if path.ends_with(".tar.gz") || path.ends_with(".tgz") {
        Some(Format::TarGz)
    } else if path.ends_with(".tar") {
        Some(Format::Tar)
    } else {
        None
    }
}

/// Where the archive `object` of cache folder `dir` unpacks: named by its key, size, ETag and
/// modification time, so another version of it unpacks again.
pub(super) fn folder(dir: &Path, object: &Object) -> PathBuf {
    let stamp = format!(
        "{}\n{}\n{}\n{}",
        object.key,
        object.size,
        object.e_tag.as_deref().unwrap_or(""),
        object.last_modified
    );
    let digest = ring::digest::digest(&ring::digest::SHA256, stamp.as_bytes());
    dir.join("unpacked")
        .join(&super::hex(digest.as_ref())[..16])
}

/// The folder archive `file` (the cache's copy of `object`) unpacks into, unpacking it first
/// when that folder is not there yet; older versions' folders are removed. The caller holds
/// the cache folder's lock.
pub(super) fn unpacked(
    dir: &Path,
    file: &Path,
    object: &Object,
    format: Format,
    shown: &str,
) -> Result<PathBuf, StoreError> {
    let target = folder(dir, object);
    let parent = dir.join("unpacked");
    if !target.is_dir() {
        std::fs::create_dir_all(&parent)
            .map_err(StoreError::io(format!("creating {}", parent.display())))?;
        let tmp = parent.join(format!(".unpacking-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir(&tmp).map_err(StoreError::io(format!("creating {}", tmp.display())))?;
        if let Err(e) = unpack(file, &tmp, format, shown) {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, &target).map_err(StoreError::io(format!(
            "renaming {} to {}",
            tmp.display(),
            target.display()
        )))?;
        tracing::info!(archive = shown, folder = %target.display(), "model archive unpacked");
    }
    // Earlier versions (and interrupted unpacks) go.
    if let Ok(entries) = std::fs::read_dir(&parent) {
        for entry in entries.flatten() {
            if entry.path() != target {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    Ok(target)
}

/// Unpacks archive `file` into the empty folder `into`.
fn unpack(file: &Path, into: &Path, format: Format, shown: &str) -> Result<(), StoreError> {
    let reading = || StoreError::io(format!("reading the archive {}", file.display()));
    let bad = |why: String| StoreError::Archive {
        shown: shown.to_owned(),
        why,
    };
    let raw = std::io::BufReader::new(std::fs::File::open(file).map_err(reading())?);
    let reader: Box<dyn Read> = match format {
        Format::TarGz => Box::new(flate2::read::GzDecoder::new(raw)),
        Format::Tar => Box::new(raw),
    };
    let mut archive = tar::Archive::new(reader);
    let mut links: Vec<PathBuf> = Vec::new();
    let (mut count, mut bytes) = (0usize, 0u64);
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("not a readable tar archive ({e})")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("not a readable tar archive ({e})")))?;
        count += 1;
        if count > MAX_ENTRIES {
            return Err(bad(format!(
                "more than {MAX_ENTRIES} entries, the most an archive may hold"
            )));
        }
        let name = entry
            .path()
            .map_err(|e| bad(format!("an entry's name is unreadable ({e})")))?
            .into_owned();
        let shown_name = name.display().to_string();
        let rel = relative(&name).ok_or_else(|| {
            bad(format!(
                "entry `{shown_name}` is not a plain relative path (`..` or absolute): refused"
            ))
        })?;
        if rel.as_os_str().is_empty() {
            continue; // `./`
        }
        if links.iter().any(|l| rel.starts_with(l) && rel != *l) {
            return Err(bad(format!(
                "entry `{shown_name}` lies through a symbolic link of the archive: refused"
            )));
        }
        let dest = into.join(&rel);
        let writing = || StoreError::io(format!("unpacking into {}", dest.display()));
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(writing())?;
        }
        // A later entry of the same name replaces an earlier one, never writes through it.
        if std::fs::symlink_metadata(&dest).is_ok_and(|m| !m.is_dir()) {
            std::fs::remove_file(&dest).map_err(writing())?;
        }
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Directory => std::fs::create_dir_all(&dest).map_err(writing())?,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.size();
                bytes = bytes.saturating_add(size);
                if bytes > MAX_BYTES {
                    return Err(bad(format!(
                        "more than {} GiB unpacked, the most an archive may hold",
                        MAX_BYTES >> 30
                    )));
                }
                let mut out = std::fs::File::create(&dest).map_err(writing())?;
                let copied = std::io::copy(&mut (&mut entry).take(size), &mut out)
                    .map_err(|e| bad(format!("entry `{shown_name}` is cut short ({e})")))?;
                if copied != size {
                    return Err(bad(format!(
                        "entry `{shown_name}` is cut short ({copied} of {size} bytes)"
                    )));
                }
                #[cfg(unix)]
                if let Ok(mode) = entry.header().mode() {
                    use std::os::unix::fs::PermissionsExt;
                    let _ = std::fs::set_permissions(
                        &dest,
                        std::fs::Permissions::from_mode(0o644 | (mode & 0o111)),
                    );
                }
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .ok()
                    .flatten()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                if !link_stays_inside(&rel, &target) {
                    return Err(bad(format!(
                        "entry `{shown_name}` links to `{}`, outside the folder: refused",
                        target.display()
                    )));
                }
                #[cfg(unix)]
                std::os::unix::fs::symlink(&target, &dest).map_err(writing())?;
                #[cfg(not(unix))]
                return Err(bad(format!(
                    "entry `{shown_name}` is a symbolic link, which this system cannot make"
                )));
                links.push(rel);
            }
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => {}
            other => {
                return Err(bad(format!(
                    "entry `{shown_name}` is a {}: only files, folders and symbolic links inside \
                     the folder are unpacked",
                    match other {
                        tar::EntryType::Link => "hard link".to_owned(),
                        other => format!("{other:?}").to_lowercase(),
                    }
                )));
            }
        }
    }
    Ok(())
}

/// `name` as plain components (`.` dropped); `None` with `..`, a root or a prefix.
fn relative(name: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in name.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Whether a symbolic link at `link` (relative to the folder) to `target` stays inside the
/// folder: a relative target whose `..` all come first and climb no higher than the link's
/// own folder. (Entries never lie through links, so the link's folder is a real one.)
fn link_stays_inside(link: &Path, target: &Path) -> bool {
    let depth = link.components().count().saturating_sub(1);
    let mut ups = 0;
    let mut past_ups = false;
    for c in target.components() {
        match c {
            Component::ParentDir if !past_ups => ups += 1,
            Component::Normal(_) => past_ups = true,
            Component::CurDir => {}
            _ => return false,
        }
    }
    !target.as_os_str().is_empty() && ups <= depth
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_links_stay_inside() {
        assert_eq!(
            relative(Path::new("./a/b.txt")),
            Some(PathBuf::from("a/b.txt"))
        );
        assert_eq!(relative(Path::new("../evil")), None);
        assert_eq!(relative(Path::new("a/../../evil")), None);
        assert_eq!(relative(Path::new("/etc/passwd")), None);
        assert!(link_stays_inside(Path::new("a/l"), Path::new("../b")));
        assert!(link_stays_inside(Path::new("l"), Path::new("b/c")));
        assert!(!link_stays_inside(Path::new("l"), Path::new("../b")));
        assert!(!link_stays_inside(
            Path::new("a/l"),
            Path::new("b/../../..")
        ));
        assert!(!link_stays_inside(Path::new("l"), Path::new("/etc")));
        assert!(!link_stays_inside(Path::new("l"), Path::new("")));
    }

    /// A tar of `(name, Some(contents))` files and `(name, None)` links to `d`.
    fn tar_of(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            match data {
                Some(data) => {
                    h.set_size(data.len() as u64);
                    h.set_mode(0o644);
                    b.append_data(&mut h, name, *data).unwrap();
                }
                None => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    b.append_link(&mut h, name, "d").unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn files_and_inner_links_unpack_and_paths_through_links_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.tar");
        std::fs::write(&good, tar_of(&[("d/a.txt", Some(b"a")), ("l", None)])).unwrap();
        let into = dir.path().join("good");
        std::fs::create_dir(&into).unwrap();
        unpack(&good, &into, Format::Tar, "good.tar").unwrap();
        assert_eq!(std::fs::read(into.join("l/a.txt")).unwrap(), b"a");

        let bad = dir.path().join("bad.tar");
        std::fs::write(&bad, tar_of(&[("l", None), ("l/x", Some(b"x"))])).unwrap();
        let into = dir.path().join("bad");
        std::fs::create_dir(&into).unwrap();
        let e = unpack(&bad, &into, Format::Tar, "bad.tar").unwrap_err();
        assert!(
            e.to_string()
                .contains("entry `l/x` lies through a symbolic link"),
            "{e}"
        );
    }

    #[test]
    fn formats_come_from_the_name() {
        let f = |u: &str| format_of(&url::Url::parse(u).unwrap());
        assert_eq!(f("https://h/m.tar.gz"), Some(Format::TarGz));
        assert_eq!(f("https://h/m.TGZ?x=1"), Some(Format::TarGz));
        assert_eq!(f("s3://b/m.tar"), Some(Format::Tar));
        assert_eq!(f("https://h/m.onnx"), None);
    }
}
