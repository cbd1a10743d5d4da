//! Indexed state of a Charter deployment behind a small [`Store`] trait.
//!
//! The store holds each plugin's private key-value namespace and the
//! host's indexes (proposals, runs, the per-run event index, run leases),
//! all derived from the event log except the leases. sled 0.34 is the
//! embedded backend ([`SledStore`]), which keeps what no longer changes in
//! immutable archive segments ([`segment`], [`Store::archive`]) so its
//! open costs what is live; [`MemStore`] serves tests and benchmarks. Both
//! pass one conformance suite ([`conformance`]).
//! The trait is the seam where a shared backend can serve several host
//! nodes later.
//!
//! Index writes go through [`Store::commit`]: a [`Batch`] of puts and
//! deletes across namespaces applied all-or-nothing, so a record's effects
//! and the index's `applied_seq` never part (see `charter-runtime`'s
//! `index::apply`). [`Store::compare_and_swap`] is the one primitive a
//! lease needs.
//!
//! **Architecture invariant:** namespaces are chosen by the host, never by
//! the guest: a plugin's key can never address another plugin's data.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

mod embedded;
pub mod segment;

pub use embedded::{COMPACT_MIN_BYTES, SledStore};

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
    /// A backend other than sled failed (a database's error, a lost
    /// connection), in the backend's words.
    #[error("state store: {0}")]
    Remote(String),
    /// An archive segment (or its directory) could not be read or
    /// written; a damaged segment is this too.
    #[error("state store: archive segment {path}: {detail}")]
    Archive { path: String, detail: String },
    /// A write the backend refused (a full disk, an injected failure in a
    /// test); nothing of the batch it belonged to was applied.
    #[error("state store: write refused: {0}")]
    Refused(String),
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
                | StoreError::Archive { .. }
        )
    }
}

/// Writes to apply together: `(namespace, key) → Some(value)` puts,
/// `None` deletes. A later write to the same key replaces an earlier one.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Batch {
    writes: BTreeMap<(String, String), Option<String>>,
}

impl Batch {
    pub fn put(&mut self, ns: &str, key: &str, value: &str) {
        self.writes
            .insert((ns.into(), key.into()), Some(value.into()));
    }
    pub fn delete(&mut self, ns: &str, key: &str) {
        self.writes.insert((ns.into(), key.into()), None);
    }
    /// What the batch says about a key: `Some(Some(v))` written,
    /// `Some(None)` deleted, `None` untouched.
    pub fn get(&self, ns: &str, key: &str) -> Option<Option<&str>> {
        self.writes
            .get(&(ns.to_string(), key.to_string()))
            .map(|v| v.as_deref())
    }
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
    pub fn len(&self) -> usize {
        self.writes.len()
    }
    /// Every write, in (namespace, key) order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, Option<&str>)> {
        self.writes
            .iter()
            .map(|((n, k), v)| (n.as_str(), k.as_str(), v.as_deref()))
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
    /// Every (key, value) whose key starts with `prefix`, in key order,
    /// without limit (host-internal indexes: one run's events).
    fn scan_prefix(&self, ns: &str, prefix: &str) -> Result<Vec<(String, String)>, StoreError>;
    /// The group `group` of a namespace: the key `group` itself and every
    /// key under `group/`, in key order (one run's per-run event index:
    /// its head and its chunks). A store with an archive finds a group it
    /// does not hold there without reading it.
    fn scan_group(&self, ns: &str, group: &str) -> Result<Vec<(String, String)>, StoreError> {
        let mut all = self.scan_prefix(ns, group)?;
        all.retain(|(k, _)| segment::in_group(k, group));
        Ok(all)
    }
    /// Apply every write of `batch`, across namespaces, all-or-nothing:
    /// after an error none of it is visible, then or after a restart.
    fn commit(&self, batch: &Batch) -> Result<(), StoreError>;
    /// Set `key` to `new` (`None` deletes) only if it holds `old` (`None`:
    /// absent) now; returns whether it did. Atomic against every other
    /// writer of the store.
    fn compare_and_swap(
        &self,
        ns: &str,
        key: &str,
        old: Option<&str>,
        new: Option<&str>,
    ) -> Result<bool, StoreError>;
    /// [`Store::compare_and_swap`] for each `(key, old, new)` of `ns`,
    /// each on its own (not all-or-nothing together); whether each did.
    /// A store across a network does them in one round trip (a lease
    /// renewer renewing every lease a node holds). Keys are meant to be
    /// distinct: a key asked twice swaps at most once, and the answer
    /// says which.
    fn compare_and_swap_each(
        &self,
        ns: &str,
        swaps: &[(&str, &str, &str)],
    ) -> Result<Vec<bool>, StoreError> {
        swaps
            .iter()
            .map(|(key, old, new)| self.compare_and_swap(ns, key, Some(old), Some(new)))
            .collect()
    }
    /// Make everything written so far durable.
    fn flush(&self) -> Result<(), StoreError>;
    /// Remove every key of namespace `ns` (a host-internal index whose
    /// layout changed). Not atomic with other writes: the caller records
    /// that it is done only afterwards, so a crash midway clears again.
    fn clear(&self, ns: &str) -> Result<(), StoreError> {
        let mut b = Batch::default();
        for (k, _) in self.scan(ns)? {
            b.delete(ns, &k);
        }
        self.commit(&b)
    }
    /// Move `keys` (namespace, key) out of the live store into an
    /// immutable archive that every read above still sees (entries that
    /// will not change again: an ended run's), deleting `drop` in the same
    /// atomic step. Returns `false` when this store keeps everything live
    /// (the default: the memory store, a database), `true` once done. A
    /// key changed or deleted meanwhile keeps its newer state. Called by
    /// one writer at a time.
    fn archive(
        &self,
        keys: &[(String, String)],
        drop: &[(String, String)],
    ) -> Result<bool, StoreError> {
        let _ = (keys, drop);
        Ok(false)
    }
    /// Every (key, value) of a namespace not moved to the archive, in key
    /// order: [`Store::scan`] without what [`Store::archive`] moved (for a
    /// store that does not archive, the same).
    fn scan_live(&self, ns: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.scan(ns)
    }
    /// Whether [`Store::archive`] does anything (callers skip the
    /// bookkeeping for it otherwise).
    fn archives(&self) -> bool {
        false
    }
}

/// In-memory store for tests and benchmarks.
#[derive(Debug, Default)]
pub struct MemStore {
    map: Mutex<BTreeMap<(String, String), String>>,
}

impl MemStore {
    /// Every operation leaves the map consistent (each is one map call),
    /// so a panic elsewhere while the lock was held poisons nothing real.
    fn map(&self) -> MutexGuard<'_, BTreeMap<(String, String), String>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn range(&self, ns: &str, prefix: &str) -> Vec<(String, String)> {
        self.map()
            .range((ns.to_string(), prefix.to_string())..)
            .take_while(|((n, k), _)| n == ns && k.starts_with(prefix))
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect()
    }
}

impl Store for MemStore {
    fn get(&self, ns: &str, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.map().get(&(ns.into(), key.into())).cloned())
    }
    fn set(&self, ns: &str, key: &str, value: &str) -> Result<(), StoreError> {
        self.map().insert((ns.into(), key.into()), value.into());
        Ok(())
    }
    fn delete(&self, ns: &str, key: &str) -> Result<bool, StoreError> {
        Ok(self.map().remove(&(ns.into(), key.into())).is_some())
    }
    fn list(&self, ns: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut keys: Vec<String> = self.range(ns, prefix).into_iter().map(|(k, _)| k).collect();
        keys.truncate(MAX_LIST);
        Ok(keys)
    }
    fn scan(&self, ns: &str) -> Result<Vec<(String, String)>, StoreError> {
        Ok(self.range(ns, ""))
    }
    fn scan_prefix(&self, ns: &str, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        Ok(self.range(ns, prefix))
    }
    fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        // Under one lock: readers see all of the batch or none of it.
        let mut map = self.map();
        for (ns, key, value) in batch.iter() {
            let k = (ns.to_string(), key.to_string());
            match value {
                Some(v) => map.insert(k, v.to_string()),
                None => map.remove(&k),
            };
        }
        Ok(())
    }
    fn compare_and_swap(
        &self,
        ns: &str,
        key: &str,
        old: Option<&str>,
        new: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut map = self.map();
        let k = (ns.to_string(), key.to_string());
        if map.get(&k).map(String::as_str) != old {
            return Ok(false);
        }
        match new {
            Some(v) => map.insert(k, v.to_string()),
            None => map.remove(&k),
        };
        Ok(true)
    }
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The conformance suite: every [`Store`] implementation passes it
/// (sled and memory here, PostgreSQL in `charter-pg`). Panics with what
/// broke.
pub fn conformance(s: &dyn Store) {
    // Namespaces are apart; get/set/delete/list.
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
    // scan_prefix: unbounded, in key order, only the prefix.
    for i in 0..(MAX_LIST + 5) {
        s.set("c", &format!("r/{i:06}"), &i.to_string()).unwrap();
    }
    s.set("c", "s/1", "other").unwrap();
    let all = s.scan_prefix("c", "r/").unwrap();
    assert_eq!(all.len(), MAX_LIST + 5);
    assert_eq!(all[0], ("r/000000".to_string(), "0".to_string()));
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(s.list("c", "r/").unwrap().len(), MAX_LIST);
    // commit: across namespaces, later writes win, deletes apply.
    let mut b = Batch::default();
    b.put("a", "k1", "v1");
    b.put("d", "k2", "v2");
    b.delete("a", "other");
    b.put("a", "k1", "v1b");
    assert_eq!(b.get("a", "k1"), Some(Some("v1b")));
    assert_eq!(b.get("a", "other"), Some(None));
    assert_eq!(b.get("a", "none"), None);
    s.commit(&b).unwrap();
    assert_eq!(s.get("a", "k1").unwrap().as_deref(), Some("v1b"));
    assert_eq!(s.get("d", "k2").unwrap().as_deref(), Some("v2"));
    assert_eq!(s.get("a", "other").unwrap(), None);
    s.commit(&Batch::default()).unwrap();
    // compare_and_swap: only from the expected value.
    assert!(s.compare_and_swap("l", "run", None, Some("h1")).unwrap());
    assert!(!s.compare_and_swap("l", "run", None, Some("h2")).unwrap());
    assert!(
        !s.compare_and_swap("l", "run", Some("h2"), Some("h3"))
            .unwrap()
    );
    assert!(
        s.compare_and_swap("l", "run", Some("h1"), Some("h2"))
            .unwrap()
    );
    assert_eq!(s.get("l", "run").unwrap().as_deref(), Some("h2"));
    assert!(s.compare_and_swap("l", "run", Some("h2"), None).unwrap());
    assert_eq!(s.get("l", "run").unwrap(), None);
    // compare_and_swap_each: each swap on its own, in the order asked; a
    // stale `old`, an absent key or another namespace's key swaps nothing.
    for (k, v) in [("r1", "a1"), ("r2", "a2"), ("r3", "a3")] {
        s.set("l", k, v).unwrap();
    }
    s.set("m", "r4", "a4").unwrap();
    assert_eq!(
        s.compare_and_swap_each(
            "l",
            &[
                ("r3", "a3", "b3"),
                ("r1", "stale", "b1"),
                ("gone", "x", "y"),
                ("r2", "a2", "b2"),
                ("r4", "a4", "b4"),
            ],
        )
        .unwrap(),
        vec![true, false, false, true, false]
    );
    assert_eq!(s.get("l", "r1").unwrap().as_deref(), Some("a1"));
    assert_eq!(s.get("l", "r2").unwrap().as_deref(), Some("b2"));
    assert_eq!(s.get("l", "r3").unwrap().as_deref(), Some("b3"));
    assert_eq!(s.get("l", "gone").unwrap(), None);
    assert_eq!(s.get("m", "r4").unwrap().as_deref(), Some("a4"));
    assert!(s.compare_and_swap_each("l", &[]).unwrap().is_empty());
    // A key asked twice from the same value swaps once, and says which.
    let twice = s
        .compare_and_swap_each("l", &[("r1", "a1", "c1"), ("r1", "a1", "d1")])
        .unwrap();
    assert_eq!(twice.iter().filter(|t| **t).count(), 1, "{twice:?}");
    let won = if twice[0] { "c1" } else { "d1" };
    assert_eq!(s.get("l", "r1").unwrap().as_deref(), Some(won));
    for k in ["r1", "r2", "r3"] {
        s.delete("l", k).unwrap();
    }
    s.delete("m", "r4").unwrap();
    // A hostile key (separators, NUL, non-ASCII) is just a key.
    s.set("a", "x/\0/ü", "1").unwrap();
    assert_eq!(s.get("a", "x/\0/ü").unwrap().as_deref(), Some("1"));
    // clear: that namespace only, and it can be written again.
    s.clear("c").unwrap();
    assert!(s.scan("c").unwrap().is_empty());
    assert_eq!(s.get("c", "s/1").unwrap(), None);
    assert_eq!(s.get("a", "k1").unwrap().as_deref(), Some("v1b"));
    s.clear("never-written").unwrap();
    s.set("c", "r/1", "again").unwrap();
    assert_eq!(s.scan("c").unwrap().len(), 1);
    s.flush().unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_store() {
        conformance(&MemStore::default());
    }

    #[test]
    fn sled_store() {
        let dir = tempfile::tempdir().unwrap();
        conformance(&SledStore::open(dir.path()).unwrap());
    }

    #[test]
    fn sled_store_persists() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            conformance(&s);
            s.flush().unwrap();
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.get("a", "order:2").unwrap().as_deref(), Some("y"));
        assert_eq!(s.get("d", "k2").unwrap().as_deref(), Some("v2"));
    }

    /// A store dropped on another thread a moment after the next open
    /// starts does not make that open fail: it waits for the release.
    #[test]
    fn open_waits_for_a_store_being_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let held = SledStore::open(dir.path()).unwrap();
        held.set("a", "k", "v").unwrap();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            drop(held);
        });
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.get("a", "k").unwrap().as_deref(), Some("v"));
        t.join().unwrap();
    }

    /// Many concurrent compare-and-swaps from None: exactly one wins.
    fn one_winner(s: &(dyn Store + Sync)) {
        let wins = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|t| {
            for i in 0..8 {
                let wins = &wins;
                t.spawn(move || {
                    if s.compare_and_swap("l", "contested", None, Some(&i.to_string()))
                        .unwrap()
                    {
                        wins.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(wins.into_inner(), 1);
    }

    #[test]
    fn compare_and_swap_has_one_winner() {
        one_winner(&MemStore::default());
        let dir = tempfile::tempdir().unwrap();
        one_winner(&SledStore::open(dir.path()).unwrap());
    }
}
