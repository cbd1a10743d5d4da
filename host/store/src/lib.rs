//! Indexed state of a Charter deployment behind a small [`Store`] trait.
//!
//! Today that is each plugin's private key-value namespace. sled 0.34 is the
//! embedded backend ([`SledStore`]); [`MemStore`] serves tests and benchmarks.
//! The trait is the seam where a shared backend can serve several host nodes
//! later, and where the event log (the system of record, see DESIGN.md) will
//! re-apply its tail at start-up.
//!
//! **Architecture invariant:** namespaces are chosen by the host, never by
//! the guest: a plugin's key can never address another plugin's data.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

/// Most keys one `list` returns.
pub const MAX_LIST: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store at {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: sled::Error,
    },
    #[error("state store: {0}")]
    Backend(#[from] sled::Error),
    #[error("state store: value under {key:?} is not UTF-8")]
    NotUtf8 { key: String },
}

impl StoreError {
    /// The store's files are damaged (a crash at the wrong moment can do
    /// that to sled 0.34). Its contents are derived from the event log, so
    /// the caller may set it aside and rebuild.
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            StoreError::Open {
                source: sled::Error::Corruption { .. },
                ..
            } | StoreError::Backend(sled::Error::Corruption { .. })
        )
    }
}

/// Per-namespace key-value state.
pub trait Store: Send + Sync {
    fn get(&self, ns: &str, key: &str) -> Result<Option<String>, StoreError>;
    fn set(&self, ns: &str, key: &str, value: &str) -> Result<(), StoreError>;
    fn delete(&self, ns: &str, key: &str) -> Result<bool, StoreError>;
    /// Keys starting with `prefix`, in byte order, at most [`MAX_LIST`].
    fn list(&self, ns: &str, prefix: &str) -> Result<Vec<String>, StoreError>;
    /// Every (key, value) of a namespace, in key order, without limit
    /// (host-internal namespaces such as proposals).
    fn scan(&self, ns: &str) -> Result<Vec<(String, String)>, StoreError>;
    /// Make everything written so far durable.
    fn flush(&self) -> Result<(), StoreError>;
}

/// sled-backed store: one tree per namespace (`kv/<namespace>`).
pub struct SledStore {
    db: sled::Db,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore").finish_non_exhaustive()
    }
}

impl SledStore {
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::LowSpace)
            .open()
            .map_err(|source| StoreError::Open {
                path: dir.display().to_string(),
                source,
            })?;
        Ok(SledStore { db })
    }

    fn tree(&self, ns: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(format!("kv/{ns}"))?)
    }
}

fn utf8(key: &str, v: sled::IVec) -> Result<String, StoreError> {
    String::from_utf8(v.to_vec()).map_err(|_| StoreError::NotUtf8 {
        key: key.to_string(),
    })
}

impl Store for SledStore {
    fn get(&self, ns: &str, key: &str) -> Result<Option<String>, StoreError> {
        self.tree(ns)?.get(key)?.map(|v| utf8(key, v)).transpose()
    }
    fn set(&self, ns: &str, key: &str, value: &str) -> Result<(), StoreError> {
        self.tree(ns)?.insert(key, value.as_bytes())?;
        Ok(())
    }
    fn delete(&self, ns: &str, key: &str) -> Result<bool, StoreError> {
        Ok(self.tree(ns)?.remove(key)?.is_some())
    }
    fn list(&self, ns: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for kv in self.tree(ns)?.scan_prefix(prefix).take(MAX_LIST) {
            let (k, _) = kv?;
            out.push(String::from_utf8_lossy(&k).into_owned());
        }
        Ok(out)
    }
    fn scan(&self, ns: &str) -> Result<Vec<(String, String)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.tree(ns)?.iter() {
            let (k, v) = kv?;
            let k = String::from_utf8_lossy(&k).into_owned();
            out.push((k.clone(), utf8(&k, v)?));
        }
        Ok(out)
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

/// In-memory store for tests and benchmarks.
#[derive(Debug, Default)]
pub struct MemStore {
    map: Mutex<BTreeMap<(String, String), String>>,
}

impl Store for MemStore {
    fn get(&self, ns: &str, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .map
            .lock()
            .unwrap()
            .get(&(ns.into(), key.into()))
            .cloned())
    }
    fn set(&self, ns: &str, key: &str, value: &str) -> Result<(), StoreError> {
        self.map
            .lock()
            .unwrap()
            .insert((ns.into(), key.into()), value.into());
        Ok(())
    }
    fn delete(&self, ns: &str, key: &str) -> Result<bool, StoreError> {
        Ok(self
            .map
            .lock()
            .unwrap()
            .remove(&(ns.into(), key.into()))
            .is_some())
    }
    fn list(&self, ns: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        let map = self.map.lock().unwrap();
        Ok(map
            .range((ns.to_string(), prefix.to_string())..)
            .take_while(|((n, k), _)| n == ns && k.starts_with(prefix))
            .take(MAX_LIST)
            .map(|((_, k), _)| k.clone())
            .collect())
    }
    fn scan(&self, ns: &str) -> Result<Vec<(String, String)>, StoreError> {
        let map = self.map.lock().unwrap();
        Ok(map
            .range((ns.to_string(), String::new())..)
            .take_while(|((n, _), _)| n == ns)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(s: &dyn Store) {
        s.set("a", "order:1", "x").unwrap();
        s.set("a", "order:2", "y").unwrap();
        s.set("a", "other", "z").unwrap();
        s.set("b", "order:1", "secret-of-b").unwrap();
        assert_eq!(s.get("a", "order:1").unwrap().as_deref(), Some("x"));
        assert_eq!(s.list("a", "order:").unwrap(), vec!["order:1", "order:2"]);
        assert!(s.delete("a", "order:1").unwrap());
        assert!(!s.delete("a", "order:1").unwrap());
        assert_eq!(s.get("a", "order:1").unwrap(), None);
        assert_eq!(
            s.get("b", "order:1").unwrap().as_deref(),
            Some("secret-of-b")
        );
    }

    #[test]
    fn mem_store() {
        exercise(&MemStore::default());
    }

    #[test]
    fn sled_store_persists() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            exercise(&s);
            s.flush().unwrap();
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.get("a", "order:2").unwrap().as_deref(), Some("y"));
    }
}
