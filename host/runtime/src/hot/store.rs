//! The data directory's plugin store: every version a host loaded or was
//! sent, by content (`<data_dir>/plugins/sha256-<hex>.wasm`), so a run
//! pinned to a version runs those bytes after a push, a rollback or a
//! restart. Written tmp + fsync + rename (+ fsync of the directory): a
//! crash leaves the old file or the new one, never half of one. Read back
//! bounded and re-verified against the digest it is stored under: a file
//! changed on disk is refused ([`LoadError::Tampered`]), never run.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use charter_store::{Store, StoreError};

use crate::error::LoadError;
use crate::inspect::digest;

/// The store's directory in a data directory.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("plugins")
}

/// `sha256:<64 hex>` and nothing else: what may name a stored file.
pub fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Where version `digest` is kept; `None` for a string that is no digest
/// (it never becomes a path).
pub fn path(data_dir: &Path, digest: &str) -> Option<PathBuf> {
    valid_digest(digest).then(|| dir(data_dir).join(format!("sha256-{}.wasm", &digest[7..])))
}

/// Keep `bytes` (whose digest is `digest`); nothing is written when the
/// version is there already and intact.
pub fn put(data_dir: &Path, digest_: &str, bytes: &[u8]) -> std::io::Result<()> {
    let target = path(data_dir, digest_)
        .ok_or_else(|| std::io::Error::other(format!("not a digest: {digest_}")))?;
    debug_assert_eq!(digest(bytes), digest_);
    if std::fs::read(&target).is_ok_and(|b| digest(&b) == digest_) {
        return Ok(());
    }
    let d = dir(data_dir);
    std::fs::create_dir_all(&d)?;
    let tmp = d.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &target)?;
    std::fs::File::open(&d)?.sync_all()
}

static TMP_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Version `digest` of `plugin`, read bounded by `limit` and verified.
pub fn get(data_dir: &Path, plugin: &str, digest_: &str, limit: u64) -> Result<Vec<u8>, LoadError> {
    let Some(p) = path(data_dir, digest_) else {
        return Err(LoadError::Read {
            plugin: plugin.to_string(),
            path: dir(data_dir),
            source: std::io::Error::other(format!(
                "not a digest: {}",
                crate::record::text(digest_)
            )),
        });
    };
    let bytes = crate::read_bounded(&p, limit)
        .map_err(|source| LoadError::Read {
            plugin: plugin.to_string(),
            path: p.clone(),
            source,
        })?
        .map_err(|size| LoadError::TooLarge {
            plugin: plugin.to_string(),
            size,
            limit,
        })?;
    verified(plugin, p, digest_, &bytes)?;
    Ok(bytes)
}

/// Where a deployment on a shared backend keeps every version any node
/// loaded: its bytes (base64), under its digest. A node that lacks a
/// version in its own store takes it from there, verified against the
/// digest it is asked for, so every node runs the versions the deployment
/// recorded, whichever node was sent them.
pub const SHARED: &str = "@plugin-bytes";

/// Keep `bytes` (whose digest is `digest_`) in the shared backend's
/// store, once: nothing is written when it is there already.
/// A row that is not these bytes (edited, or cut short) is replaced.
pub fn share(store: &dyn Store, digest_: &str, bytes: &[u8]) -> Result<(), StoreError> {
    debug_assert_eq!(digest(bytes), digest_);
    let text = base64::engine::general_purpose::STANDARD.encode(bytes);
    let stored = store.get(SHARED, digest_)?;
    if stored.as_deref() == Some(text.as_str()) {
        return Ok(());
    }
    // Another node may have put the same bytes meanwhile: either way
    // they are there.
    if !store.compare_and_swap(SHARED, digest_, stored.as_deref(), Some(&text))?
        && store.get(SHARED, digest_)?.as_deref() != Some(text.as_str())
    {
        return Err(StoreError::Refused(format!(
            "{SHARED}/{digest_} changed while it was being written"
        )));
    }
    Ok(())
}

/// Version `digest_` of `plugin` from the shared backend's store, bounded
/// by `limit` and verified against the digest, then kept in this data
/// directory's store. Bytes that are not that version (a row edited in the
/// database) are refused ([`LoadError::Tampered`]), never run.
pub fn fetch(
    store: &dyn Store,
    data_dir: &Path,
    plugin: &str,
    digest_: &str,
    limit: u64,
) -> Result<Vec<u8>, LoadError> {
    let shared = PathBuf::from(format!("[deployment] backend: {SHARED}/{digest_}"));
    let read = |e: String| LoadError::Read {
        plugin: plugin.to_string(),
        path: shared.clone(),
        source: std::io::Error::other(e),
    };
    if !valid_digest(digest_) {
        return Err(read(format!(
            "not a digest: {}",
            crate::record::text(digest_)
        )));
    }
    let text = store
        .get(SHARED, digest_)
        .map_err(|e| read(e.to_string()))?
        .ok_or_else(|| {
            read(format!("no node of this deployment kept this version (it is in no data directory's plugin store either); push it again (`charter plugins push FILE --plugin {plugin}`)"))
        })?;
    // What the text decodes to is at most this long: refused before it is
    // decoded when that is over the bound.
    let size = text.len() as u64 / 4 * 3;
    if size > limit.saturating_add(3) {
        return Err(LoadError::TooLarge {
            plugin: plugin.to_string(),
            size,
            limit,
        });
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.as_bytes())
        .map_err(|e| read(format!("not base64: {e}")))?;
    verified(plugin, shared, digest_, &bytes)?;
    if let Err(e) = put(data_dir, digest_, &bytes) {
        tracing::warn!(plugin = %plugin, "cannot keep version {digest_} in the plugin store: {e}");
    }
    Ok(bytes)
}

/// `bytes` are version `digest_`, or they are refused as tampered, naming
/// where they were read (`path`).
fn verified(plugin: &str, path: PathBuf, digest_: &str, bytes: &[u8]) -> Result<(), LoadError> {
    let actual = digest(bytes);
    if actual != digest_ {
        return Err(LoadError::Tampered {
            plugin: plugin.to_string(),
            path,
            expected: digest_.to_string(),
            actual,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_file_is_refused_and_names_are_digests_only() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = b"\0asm\x0d\0\x01\0 not really".to_vec();
        let d = digest(&bytes);
        put(dir.path(), &d, &bytes).unwrap();
        assert_eq!(get(dir.path(), "p", &d, 1 << 20).unwrap(), bytes);
        // Idempotent.
        put(dir.path(), &d, &bytes).unwrap();
        let p = path(dir.path(), &d).unwrap();
        std::fs::write(&p, b"\0asm\x0d\0\x01\0 swapped").unwrap();
        let e = get(dir.path(), "p", &d, 1 << 20).unwrap_err();
        assert!(matches!(e, LoadError::Tampered { .. }), "{e}");
        // Putting it again repairs it.
        put(dir.path(), &d, &bytes).unwrap();
        assert!(get(dir.path(), "p", &d, 1 << 20).is_ok());
        // Over the bound: refused before it is all read.
        assert!(matches!(
            get(dir.path(), "p", &d, 4),
            Err(LoadError::TooLarge { .. })
        ));
        // From a shared backend: verified, then kept here; edited bytes
        // under the digest are refused and nothing is kept.
        let shared = charter_store::MemStore::default();
        share(&shared, &d, &bytes).unwrap();
        share(&shared, &d, &bytes).unwrap();
        let other = tempfile::tempdir().unwrap();
        assert_eq!(
            fetch(&shared, other.path(), "p", &d, 1 << 20).unwrap(),
            bytes
        );
        assert_eq!(get(other.path(), "p", &d, 1 << 20).unwrap(), bytes);
        let third = tempfile::tempdir().unwrap();
        let forged = base64::engine::general_purpose::STANDARD.encode(b"\0asm\x0d\0\x01\0 forged");
        shared.set(SHARED, &d, &forged).unwrap();
        let e = fetch(&shared, third.path(), "p", &d, 1 << 20).unwrap_err();
        assert!(matches!(e, LoadError::Tampered { .. }), "{e}");
        assert!(path(third.path(), &d).is_some_and(|p| !p.exists()));
        // Sharing the version again repairs the row.
        share(&shared, &d, &bytes).unwrap();
        assert_eq!(
            fetch(&shared, third.path(), "p", &d, 1 << 20).unwrap(),
            bytes
        );
        std::fs::remove_file(path(third.path(), &d).unwrap()).unwrap();
        shared.set(SHARED, &d, &forged).unwrap();
        assert!(matches!(
            fetch(&shared, third.path(), "p", &d, 4),
            Err(LoadError::TooLarge { .. })
        ));
        let absent = digest(b"never shared");
        assert!(matches!(
            fetch(&shared, third.path(), "p", &absent, 1 << 20),
            Err(LoadError::Read { .. })
        ));
        assert!(fetch(&shared, third.path(), "p", "sha256:../x", 1 << 20).is_err());
        for bad in [
            "sha256:../../etc/passwd",
            "sha256:ABC",
            &format!("sha256:{}", "G".repeat(64)),
            &format!("md5:{}", "a".repeat(64)),
            "",
        ] {
            assert!(path(dir.path(), bad).is_none(), "{bad}");
            assert!(get(dir.path(), "p", bad, 1 << 20).is_err());
        }
    }
}
