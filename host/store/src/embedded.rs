//! The embedded store: sled 0.34 for what is live, immutable archive
//! segments ([`crate::segment`]) for what no longer changes.
//!
//! sled 0.34 reads its whole page table when it opens, and its files keep
//! every page it ever wrote until they are rewritten: a store that was
//! written for a long time opens slowly even once most keys are deleted.
//! Two things keep an open's cost to what is live, not to the history:
//!
//! - **Archive.** [`Store::archive`] moves entries that will not change
//!   again (an ended run's state and event index) into a new segment and
//!   deletes them from sled in one sled transaction that also records the
//!   segment in the registry (tree `archive/segments`). Reads look in
//!   sled first, then in the segments, newest first; a key deleted after
//!   it was archived leaves a tombstone (tree `archive/gone`). Segments
//!   are merged when the newest is at least half the size of the one
//!   before it, so there are O(log n) of them and each entry is rewritten
//!   O(log n) times.
//! - **Compaction at open.** When sled's files have grown past
//!   [`COMPACT_MIN_BYTES`] and twice their size after the last compaction,
//!   `open` copies the live trees into a fresh database (`<dir>.compact`,
//!   flushed), then swaps the directories by two renames; an interrupted
//!   swap is finished or discarded by the next open.
//!
//! Everything here is derived from the event log, like the rest of the
//! store: a crash at any point loses at most work that the log re-applies.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use crate::segment::{self, Segment};
use crate::{Batch, MAX_LIST, Store, StoreError};

/// sled tree of the archive's segments: file name → "" (names sort by age).
const SEGMENTS: &str = "archive/segments";
/// sled tree of archived entries deleted since: `ns \0 key` → "".
const GONE: &str = "archive/gone";
/// sled tree of the archive's bookkeeping (`compacted_bytes`).
const META: &str = "archive/meta";
/// Where the segments live, inside the store's directory.
const ARCHIVE_DIR: &str = "archive";
/// `open` compacts sled's files only past this size (and twice their size
/// after the last compaction): below it, an open costs little either way.
pub const COMPACT_MIN_BYTES: u64 = 2 << 20;
/// A merge writes at most this much: larger segments stay apart, so no
/// archive call stalls its caller for longer than writing this takes.
const MERGE_MAX_BYTES: u64 = 256 << 20;

/// sled-backed store: one tree per namespace (`kv/<namespace>`), with its
/// archive (see the module documentation).
pub struct SledStore {
    db: sled::Db,
    dir: PathBuf,
    /// Open segments, oldest first; replaced whole, never edited.
    segments: RwLock<Arc<Vec<Arc<Segment>>>>,
    /// Held by whoever writes segments (archive, merge, clear).
    maint: Mutex<()>,
    /// sled's handle of each namespace's tree, opened once: `open_tree`
    /// formats the tree's name and looks it up under sled's lock, which
    /// was a visible share of every `get` (a workflow step makes
    /// several). `clear` drops a tree and forgets its handle.
    trees: RwLock<std::collections::HashMap<String, sled::Tree>>,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore").finish_non_exhaustive()
    }
}

/// How long [`SledStore::open`] waits for a store of this process that
/// was just closed to let go of its file.
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

fn with_suffix(dir: &Path, suffix: &str) -> PathBuf {
    let mut s = dir.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn fs_err(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Archive {
        path: path.display().to_string(),
        detail: e.to_string(),
    }
}

/// Open sled in `dir`, waiting for a store of this process that was just
/// dropped to let go of sled's file lock.
fn open_sled(dir: &Path) -> Result<sled::Db, StoreError> {
    let started = std::time::Instant::now();
    loop {
        let opened = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::LowSpace)
            .open();
        match opened {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && started.elapsed() < RELEASE_WAIT =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(source) => {
                return Err(StoreError::Open {
                    path: dir.display().to_string(),
                    source,
                });
            }
        }
    }
}

/// Finish or discard a compaction a crash interrupted: the copy is
/// complete (flushed) before the first rename, so a missing `dir` beside
/// a copy means the crash fell between the two renames.
fn recover(dir: &Path) -> Result<(), StoreError> {
    let (copy, old) = (with_suffix(dir, ".compact"), with_suffix(dir, ".old"));
    if copy.is_dir() {
        if dir.exists() {
            std::fs::remove_dir_all(&copy).map_err(|e| fs_err(&copy, e))?;
        } else {
            std::fs::rename(&copy, dir).map_err(|e| fs_err(dir, e))?;
            segment::sync_dir(dir)?;
        }
    }
    if old.is_dir() {
        std::fs::remove_dir_all(&old).map_err(|e| fs_err(&old, e))?;
    }
    Ok(())
}

fn compacted_bytes(db: &sled::Db) -> Result<u64, StoreError> {
    Ok(db
        .open_tree(META)?
        .get("compacted_bytes")?
        .and_then(|v| v.as_ref().try_into().ok().map(u64::from_le_bytes))
        .unwrap_or(0))
}

/// Copy `db`'s trees (and hard links to its segments) into a fresh
/// database and swap it in; returns the fresh database, open.
fn compact(dir: &Path, db: sled::Db) -> Result<sled::Db, StoreError> {
    let (copy, old) = (with_suffix(dir, ".compact"), with_suffix(dir, ".old"));
    let was = db.size_on_disk()?;
    {
        let fresh = open_sled(&copy)?;
        fresh.import(db.export());
        let from = dir.join(ARCHIVE_DIR);
        let names = registry(&db)?;
        if !names.is_empty() {
            let to = copy.join(ARCHIVE_DIR);
            std::fs::create_dir_all(&to).map_err(|e| fs_err(&to, e))?;
            for n in names {
                std::fs::hard_link(from.join(&n), to.join(&n)).map_err(|e| fs_err(&to, e))?;
            }
        }
        fresh.flush()?;
        let size = fresh.size_on_disk()?;
        fresh
            .open_tree(META)?
            .insert("compacted_bytes", &size.to_le_bytes())?;
        fresh.flush()?;
        tracing::info!(
            store = %dir.display(),
            before = was,
            after = size,
            "state store compacted (its files had grown past twice their size after the last compaction)"
        );
    }
    drop(db);
    std::fs::rename(dir, &old).map_err(|e| fs_err(dir, e))?;
    std::fs::rename(&copy, dir).map_err(|e| fs_err(dir, e))?;
    segment::sync_dir(dir)?;
    std::fs::remove_dir_all(&old).map_err(|e| fs_err(&old, e))?;
    open_sled(dir)
}

/// The registered segment names, oldest first.
fn registry(db: &sled::Db) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    for kv in db.open_tree(SEGMENTS)?.iter() {
        let (k, _) = kv?;
        out.push(String::from_utf8_lossy(&k).into_owned());
    }
    Ok(out)
}

fn gone_key(ns: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(ns.len() + 1 + key.len());
    k.extend_from_slice(ns.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

fn utf8(key: &str, v: sled::IVec) -> Result<String, StoreError> {
    String::from_utf8(v.to_vec()).map_err(|_| StoreError::NotUtf8 {
        key: key.to_string(),
    })
}

fn pairs(
    it: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
) -> Result<Vec<(String, String)>, StoreError> {
    let mut out = Vec::new();
    for kv in it {
        let (k, v) = kv?;
        let k = String::from_utf8_lossy(&k).into_owned();
        let v = utf8(&k, v)?;
        out.push((k, v));
    }
    Ok(out)
}

type TxError = sled::transaction::TransactionError<()>;

/// (key, value) pairs in key order.
type Pairs = Vec<(String, String)>;

fn tx_error(e: TxError) -> StoreError {
    match e {
        sled::transaction::TransactionError::Storage(e) => StoreError::Backend(e),
        sled::transaction::TransactionError::Abort(()) => {
            StoreError::Refused("transaction aborted".into())
        }
    }
}

impl SledStore {
    /// Open (or create) the store in `dir`: finish an interrupted
    /// compaction, compact if sled's files have grown (see the module
    /// documentation), open the archive's segments. Callers hold the data
    /// directory's lock, so the only other holder of sled's own file lock
    /// can be a store of this process that was just dropped while one of
    /// sled's background threads still finishes with it: a refused lock is
    /// tried again for up to `RELEASE_WAIT`.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        recover(dir)?;
        let mut db = open_sled(dir)?;
        let size = db.size_on_disk()?;
        if size > COMPACT_MIN_BYTES && size > 2 * compacted_bytes(&db)? {
            db = compact(dir, db)?;
        }
        let mut segs = Vec::new();
        for n in registry(&db)? {
            segs.push(Arc::new(Segment::open(&dir.join(ARCHIVE_DIR).join(n))?));
        }
        Ok(SledStore {
            db,
            dir: dir.to_path_buf(),
            segments: RwLock::new(Arc::new(segs)),
            maint: Mutex::new(()),
            trees: RwLock::default(),
        })
    }

    /// sled's files' size on disk (what an open reads through).
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }

    /// The archive's segment files, oldest first.
    pub fn segment_files(&self) -> Vec<PathBuf> {
        self.segs().iter().map(|s| s.path().to_path_buf()).collect()
    }

    fn tree(&self, ns: &str) -> Result<sled::Tree, StoreError> {
        if let Some(t) = self
            .trees
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(ns)
        {
            return Ok(t.clone());
        }
        let mut trees = self.trees.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = trees.get(ns) {
            return Ok(t.clone());
        }
        let t = self.db.open_tree(format!("kv/{ns}"))?;
        trees.insert(ns.to_string(), t.clone());
        Ok(t)
    }

    fn segs(&self) -> Arc<Vec<Arc<Segment>>> {
        self.segments
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_segs(&self, segs: Vec<Arc<Segment>>) {
        *self
            .segments
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(segs);
    }

    /// The segments holding namespace `ns`, newest first.
    fn archived(&self, ns: &str) -> Vec<Arc<Segment>> {
        self.segs()
            .iter()
            .rev()
            .filter(|s| s.has_ns(ns))
            .cloned()
            .collect()
    }

    /// `(ns, key)` as the archive has it, when sled does not.
    fn archived_get(&self, ns: &str, key: &str) -> Result<Option<String>, StoreError> {
        let segs = self.archived(ns);
        if segs.is_empty() || self.db.open_tree(GONE)?.contains_key(gone_key(ns, key))? {
            return Ok(None);
        }
        for s in segs {
            if let Some(v) = s.get(ns, key)? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    /// Whether a segment holds `(ns, key)` (dead or alive).
    fn in_archive(&self, ns: &str, key: &str) -> Result<bool, StoreError> {
        for s in self.archived(ns) {
            if s.get(ns, key)?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// sled's keys under `prefix` that `keep` keeps, over what the
    /// segments `from` finds (newest last wins), without the tombstoned.
    fn layered_scan(
        &self,
        ns: &str,
        prefix: &str,
        from: &dyn Fn(&Segment) -> Result<Pairs, StoreError>,
        keep: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let mut live = pairs(self.tree(ns)?.scan_prefix(prefix))?;
        live.retain(|(k, _)| keep(k));
        let segs = self.archived(ns);
        if segs.is_empty() {
            return Ok(live);
        }
        let mut all: BTreeMap<String, String> = BTreeMap::new();
        for s in segs.iter().rev() {
            all.extend(from(s)?);
        }
        if all.is_empty() {
            return Ok(live);
        }
        for kv in self.db.open_tree(GONE)?.scan_prefix(gone_key(ns, prefix)) {
            let (k, _) = kv?;
            all.remove(String::from_utf8_lossy(&k[ns.len() + 1..]).as_ref());
        }
        all.extend(live);
        Ok(all.into_iter().collect())
    }

    fn archive_dir(&self) -> PathBuf {
        self.dir.join(ARCHIVE_DIR)
    }

    /// A name after every registered segment's.
    fn next_name(&self) -> Result<String, StoreError> {
        let last = registry(&self.db)?
            .last()
            .and_then(|n| n.trim_end_matches(".seg").parse::<u64>().ok())
            .unwrap_or(0);
        Ok(format!("{:020}.seg", last + 1))
    }

    /// Remove files of the archive directory that no registered segment
    /// is (a crash between writing a segment and registering it, or
    /// between a merge and removing what it merged).
    fn remove_orphans(&self) -> Result<(), StoreError> {
        let dir = self.archive_dir();
        let Ok(read) = std::fs::read_dir(&dir) else {
            return Ok(());
        };
        let known: std::collections::HashSet<String> = registry(&self.db)?.into_iter().collect();
        for e in read {
            let e = e.map_err(|e| fs_err(&dir, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !known.contains(&name) {
                std::fs::remove_file(e.path()).map_err(|err| fs_err(&e.path(), err))?;
            }
        }
        Ok(())
    }

    /// Write `entries` as a new segment (registered by the caller).
    fn new_segment(
        &self,
        entries: impl IntoIterator<Item = Result<(String, String, String), StoreError>>,
    ) -> Result<(String, Arc<Segment>), StoreError> {
        let dir = self.archive_dir();
        std::fs::create_dir_all(&dir).map_err(|e| fs_err(&dir, e))?;
        let name = self.next_name()?;
        let path = dir.join(&name);
        segment::write(&path, entries)?;
        Ok((name, Arc::new(Segment::open(&path)?)))
    }

    /// Replace segments `old` (registered) by `new` in the registry, in
    /// one transaction with `also` (more writes to the same transaction's
    /// trees); the in-memory list gains `new` first and loses `old` last,
    /// so a reader never finds an entry missing from both.
    fn replace_segments(
        &self,
        old: &[Arc<Segment>],
        new: Option<(String, Arc<Segment>)>,
        also: impl Fn(
            &[sled::transaction::TransactionalTree],
        ) -> sled::transaction::ConflictableTransactionResult<(), ()>,
        also_trees: Vec<sled::Tree>,
    ) -> Result<(), StoreError> {
        use sled::Transactional;
        let before = self.segs();
        if let Some((_, s)) = &new {
            let mut with = (*before).clone();
            with.push(s.clone());
            self.set_segs(with);
        }
        let mut trees = also_trees;
        trees.push(self.db.open_tree(SEGMENTS)?);
        let name = |s: &Arc<Segment>| {
            s.path()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let done = trees.as_slice().transaction(|txs| {
            let (reg, rest) = txs.split_last().expect("the registry is last");
            also(rest)?;
            for s in old {
                reg.remove(name(s).as_bytes())?;
            }
            if let Some((n, _)) = &new {
                reg.insert(n.as_bytes(), &[])?;
            }
            Ok(())
        });
        if let Err(e) = done {
            self.set_segs((*before).clone());
            return Err(tx_error(e));
        }
        let mut now: Vec<Arc<Segment>> = self
            .segs()
            .iter()
            .filter(|s| !old.iter().any(|o| Arc::ptr_eq(o, s)))
            .cloned()
            .collect();
        now.sort_by_key(|s| name(s));
        self.set_segs(now);
        if !old.is_empty() {
            // The registry without them must be on disk before they go:
            // after a crash that lost it, the old registry would name
            // files no longer there.
            self.db.flush()?;
            for s in old {
                let _ = std::fs::remove_file(s.path());
            }
        }
        Ok(())
    }

    /// Merge the newest segments while the newest is at least half the
    /// size of the one before it (and the result within
    /// [`MERGE_MAX_BYTES`]).
    fn merge_newest(&self) -> Result<(), StoreError> {
        loop {
            let segs = self.segs();
            let n = segs.len();
            if n < 2 {
                return Ok(());
            }
            let (a, b) = (&segs[n - 2], &segs[n - 1]);
            if b.bytes() * 2 < a.bytes() || a.bytes() + b.bytes() > MERGE_MAX_BYTES {
                return Ok(());
            }
            let pair = segs[n - 2..].to_vec();
            let keep = |_: &str, _: &str| true;
            let merged = self.new_segment(segment::merged(&pair, &keep))?;
            self.replace_segments(&pair, Some(merged), |_| Ok(()), Vec::new())?;
        }
    }
}

impl Store for SledStore {
    fn get(&self, ns: &str, key: &str) -> Result<Option<String>, StoreError> {
        match self.tree(ns)?.get(key)? {
            Some(v) => utf8(key, v).map(Some),
            None => self.archived_get(ns, key),
        }
    }
    fn set(&self, ns: &str, key: &str, value: &str) -> Result<(), StoreError> {
        // sled's value shadows an archived one: no tombstone to lift.
        self.tree(ns)?.insert(key, value.as_bytes())?;
        Ok(())
    }
    fn delete(&self, ns: &str, key: &str) -> Result<bool, StoreError> {
        if self.archived(ns).is_empty() {
            return Ok(self.tree(ns)?.remove(key)?.is_some());
        }
        let existed = self.get(ns, key)?.is_some();
        let mut b = Batch::default();
        b.delete(ns, key);
        self.commit(&b)?;
        Ok(existed)
    }
    fn list(&self, ns: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        if !self.archived(ns).is_empty() {
            return Ok(self
                .scan_prefix(ns, prefix)?
                .into_iter()
                .take(MAX_LIST)
                .map(|(k, _)| k)
                .collect());
        }
        let mut out = Vec::new();
        for kv in self.tree(ns)?.scan_prefix(prefix).take(MAX_LIST) {
            let (k, _) = kv?;
            out.push(String::from_utf8_lossy(&k).into_owned());
        }
        Ok(out)
    }
    fn scan(&self, ns: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.scan_prefix(ns, "")
    }
    fn scan_prefix(&self, ns: &str, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.layered_scan(ns, prefix, &|s| s.scan_prefix(ns, prefix), &|_| true)
    }
    fn scan_group(&self, ns: &str, group: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.layered_scan(ns, group, &|s| s.scan_group(ns, group), &|k| {
            segment::in_group(k, group)
        })
    }
    fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        use sled::Transactional;
        use sled::transaction::ConflictableTransactionError;
        if batch.is_empty() {
            return Ok(());
        }
        // One sled batch per namespace (tree), applied in one transaction
        // over all of them: sled commits a transaction across trees of one
        // database atomically. A deleted key a segment holds gets its
        // tombstone in the same transaction.
        let mut names: Vec<&str> = Vec::new();
        let mut batches: Vec<sled::Batch> = Vec::new();
        let mut gone = sled::Batch::default();
        let mut tombs = false;
        for (ns, key, value) in batch.iter() {
            if names.last() != Some(&ns) {
                names.push(ns);
                batches.push(sled::Batch::default());
            }
            let b = batches.last_mut().expect("pushed above");
            match value {
                Some(v) => b.insert(key, v.as_bytes()),
                None => {
                    b.remove(key);
                    if self.in_archive(ns, key)? {
                        gone.insert(gone_key(ns, key), &[]);
                        tombs = true;
                    }
                }
            }
        }
        let mut trees = names
            .iter()
            .map(|ns| self.tree(ns))
            .collect::<Result<Vec<_>, _>>()?;
        if tombs {
            trees.push(self.db.open_tree(GONE)?);
            batches.push(gone);
        }
        trees
            .as_slice()
            .transaction(|txs| {
                for (tx, b) in txs.iter().zip(&batches) {
                    tx.apply_batch(b)?;
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(tx_error)
    }
    /// Refused on a namespace with archived entries: a swap there would
    /// have to read two places atomically (leases, the one user, are never
    /// archived).
    fn compare_and_swap(
        &self,
        ns: &str,
        key: &str,
        old: Option<&str>,
        new: Option<&str>,
    ) -> Result<bool, StoreError> {
        if !self.archived(ns).is_empty() {
            return Err(StoreError::Refused(format!(
                "compare-and-swap in namespace {ns:?}, which has archived entries"
            )));
        }
        Ok(self
            .tree(ns)?
            .compare_and_swap(key, old.map(str::as_bytes), new.map(str::as_bytes))?
            .is_ok())
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
    /// Drops the namespace's tree (its pages are freed, not just emptied)
    /// and rewrites the archive without the namespace.
    fn clear(&self, ns: &str) -> Result<(), StoreError> {
        {
            // Under the handles' lock, so no handle of the dropped tree is
            // handed out after it (one opened later is the new tree). A
            // handle taken before still writes to the dropped tree: callers
            // clear a namespace while nothing writes it (`index::prepare`,
            // at start).
            let mut trees = self.trees.write().unwrap_or_else(PoisonError::into_inner);
            trees.remove(ns);
            self.db.drop_tree(format!("kv/{ns}"))?;
        }
        if self.archived(ns).is_empty() {
            return Ok(());
        }
        let _m = self.maint.lock().unwrap_or_else(PoisonError::into_inner);
        self.remove_orphans()?;
        let segs: Vec<Arc<Segment>> = self.segs().to_vec();
        let keep = |n: &str, _: &str| n != ns;
        let rest = self.new_segment(segment::merged(&segs, &keep))?;
        let dead: Vec<Vec<u8>> = self
            .db
            .open_tree(GONE)?
            .scan_prefix(gone_key(ns, ""))
            .keys()
            .map(|k| k.map(|k| k.to_vec()))
            .collect::<Result<_, _>>()?;
        let gone = self.db.open_tree(GONE)?;
        self.replace_segments(
            &segs,
            Some(rest),
            |txs| {
                for k in &dead {
                    txs[0].remove(k.as_slice())?;
                }
                Ok(())
            },
            vec![gone],
        )
    }
    fn archive(
        &self,
        keys: &[(String, String)],
        drop: &[(String, String)],
    ) -> Result<bool, StoreError> {
        let _m = self.maint.lock().unwrap_or_else(PoisonError::into_inner);
        self.remove_orphans()?;
        let mut entries: BTreeMap<(String, String), String> = BTreeMap::new();
        for (ns, key) in keys {
            if let Some(v) = self.tree(ns)?.get(key)? {
                entries.insert((ns.clone(), key.clone()), utf8(key, v)?);
            }
        }
        if entries.is_empty() && drop.is_empty() {
            return Ok(true);
        }
        let new = if entries.is_empty() {
            None
        } else {
            let rows = entries
                .iter()
                .map(|((n, k), v)| Ok((n.clone(), k.clone(), v.clone())));
            Some(self.new_segment(rows)?)
        };
        // The transaction's trees: each namespace touched, then the
        // tombstones (the registry is added last by `replace_segments`).
        let mut names: Vec<&str> = entries.keys().map(|(n, _)| n.as_str()).collect();
        names.extend(drop.iter().map(|(n, _)| n.as_str()));
        names.sort_unstable();
        names.dedup();
        let mut trees = names
            .iter()
            .map(|ns| self.tree(ns))
            .collect::<Result<Vec<_>, _>>()?;
        let gone_tree = self.db.open_tree(GONE)?;
        // Tombstones are rare (a delete after archiving): with none, no
        // archived key needs one lifted.
        let tombs = !gone_tree.is_empty();
        trees.push(gone_tree);
        let at = |ns: &str| names.binary_search(&ns).expect("listed above");
        self.replace_segments(
            &[],
            new,
            |txs| {
                let gone = &txs[names.len()];
                for ((ns, key), v) in &entries {
                    let tx = &txs[at(ns)];
                    match tx.get(key.as_bytes())? {
                        // The segment holds the current value: sled lets
                        // go of it, and no older tombstone may hide it.
                        Some(cur) if cur.as_ref() == v.as_bytes() => {
                            tx.remove(key.as_bytes())?;
                            if tombs {
                                gone.remove(gone_key(ns, key))?;
                            }
                        }
                        // Changed since it was read: sled's value shadows.
                        Some(_) => {}
                        // Deleted since it was read: the segment's value
                        // is dead.
                        None => {
                            gone.insert(gone_key(ns, key), &[])?;
                        }
                    }
                }
                for (ns, key) in drop {
                    txs[at(ns)].remove(key.as_bytes())?;
                }
                Ok(())
            },
            trees,
        )?;
        self.merge_newest()?;
        Ok(true)
    }
    fn scan_live(&self, ns: &str) -> Result<Vec<(String, String)>, StoreError> {
        pairs(self.tree(ns)?.iter())
    }
    fn archives(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(ns: &str, ks: &[&str]) -> Vec<(String, String)> {
        ks.iter().map(|k| (ns.to_string(), k.to_string())).collect()
    }

    fn live_len(s: &SledStore, ns: &str) -> usize {
        s.tree(ns).unwrap().len()
    }

    /// A namespace's tree handle is opened once and kept; `clear` drops
    /// the tree and its handle, so what is written after a clear goes to
    /// the new tree (read back after a reopen), and nothing from before
    /// it comes back.
    #[test]
    fn writes_after_a_clear_go_to_the_new_tree() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            s.set("c", "old", "1").unwrap();
            assert_eq!(s.get("c", "old").unwrap().as_deref(), Some("1"));
            s.clear("c").unwrap();
            s.set("c", "new", "2").unwrap();
            let mut b = Batch::default();
            b.put("c", "batched", "3");
            s.commit(&b).unwrap();
            assert_eq!(s.get("c", "new").unwrap().as_deref(), Some("2"));
            s.flush().unwrap();
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.get("c", "old").unwrap(), None);
        assert_eq!(s.get("c", "new").unwrap().as_deref(), Some("2"));
        assert_eq!(s.get("c", "batched").unwrap().as_deref(), Some("3"));
        assert_eq!(s.scan("c").unwrap().len(), 2);
    }

    /// Archived entries read as they did, leave sled, survive a reopen;
    /// a delete after archiving sticks, a set shadows, and the store's
    /// conformance suite passes over namespaces with archived entries
    /// (`clear` included).
    #[test]
    fn archived_entries_read_as_before_and_leave_sled() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            for i in 0..50 {
                s.set("@runs", &format!("r{i:02}"), &format!("state {i}"))
                    .unwrap();
            }
            s.set("@due", "r01", "").unwrap();
            let before = s.scan("@runs").unwrap();
            let moved: Vec<String> = (0..40).map(|i| format!("r{i:02}")).collect();
            let moved: Vec<&str> = moved.iter().map(String::as_str).collect();
            assert!(
                s.archive(&keys("@runs", &moved), &keys("@due", &["r01"]))
                    .unwrap()
            );
            assert_eq!(live_len(&s, "@runs"), 10);
            assert_eq!(s.get("@due", "r01").unwrap(), None);
            assert_eq!(s.scan("@runs").unwrap(), before);
            assert_eq!(s.get("@runs", "r07").unwrap().as_deref(), Some("state 7"));
            assert_eq!(s.list("@runs", "r0").unwrap().len(), 10);
            assert_eq!(s.scan_prefix("@runs", "r3").unwrap().len(), 10);
            // Deleted after archiving: gone, then and after a reopen.
            assert!(s.delete("@runs", "r05").unwrap());
            assert!(!s.delete("@runs", "r05").unwrap());
            let mut b = Batch::default();
            b.delete("@runs", "r06");
            s.commit(&b).unwrap();
            // Written after archiving: the new value shadows.
            s.set("@runs", "r08", "newer").unwrap();
            // Archived again: the newest value wins.
            s.set("@runs", "r09", "newer 9").unwrap();
            s.archive(&keys("@runs", &["r09"]), &[]).unwrap();
            // A swap where entries are archived is refused, not wrong.
            assert!(s.compare_and_swap("@runs", "r00", None, Some("x")).is_err());
            s.flush().unwrap();
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.get("@runs", "r05").unwrap(), None);
        assert_eq!(s.get("@runs", "r06").unwrap(), None);
        assert_eq!(s.get("@runs", "r08").unwrap().as_deref(), Some("newer"));
        assert_eq!(s.get("@runs", "r09").unwrap().as_deref(), Some("newer 9"));
        assert_eq!(s.get("@runs", "r10").unwrap().as_deref(), Some("state 10"));
        assert_eq!(s.scan("@runs").unwrap().len(), 48);
        // The suite over namespaces with archived entries.
        s.set("c", "q/1", "archived").unwrap();
        s.set("a", "archived", "1").unwrap();
        s.archive(
            &[("c".into(), "q/1".into()), ("a".into(), "archived".into())],
            &[],
        )
        .unwrap();
        crate::conformance(&s);
        assert_eq!(s.get("a", "archived").unwrap().as_deref(), Some("1"));
        assert_eq!(s.get("@runs", "r10").unwrap().as_deref(), Some("state 10"));
    }

    /// Many archive calls leave few segments (merged by size), and
    /// every entry readable.
    #[test]
    fn segments_are_merged_as_they_accumulate() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        let mut n = 0;
        for round in 0..64 {
            let mut batch = Vec::new();
            for _ in 0..(1 + round % 5) {
                let k = format!("run-{n:05}");
                s.set("@runs", &k, &format!("v{n}")).unwrap();
                batch.push(("@runs".to_string(), k));
                n += 1;
            }
            s.archive(&batch, &[]).unwrap();
        }
        let files = s.segment_files();
        assert!(
            files.len() <= 8,
            "{} segments after 64 archives",
            files.len()
        );
        for i in 0..n {
            assert_eq!(
                s.get("@runs", &format!("run-{i:05}")).unwrap(),
                Some(format!("v{i}"))
            );
        }
        let on_disk = std::fs::read_dir(dir.path().join(ARCHIVE_DIR))
            .unwrap()
            .count();
        assert_eq!(on_disk, files.len(), "merged segments are removed");
    }

    /// A store whose files grew past the threshold is rewritten at open:
    /// smaller afterwards, with the same contents, archived ones included.
    #[test]
    fn open_compacts_a_store_that_grew() {
        let dir = tempfile::tempdir().unwrap();
        let big = "x".repeat(4000);
        {
            let s = SledStore::open(dir.path()).unwrap();
            for i in 0..3000 {
                s.set("churn", &format!("k{}", i % 50), &big).unwrap();
                s.set("gone", &format!("k{i}"), &big).unwrap();
            }
            s.flush().unwrap();
            for i in 0..3000 {
                s.delete("gone", &format!("k{i}")).unwrap();
            }
            s.set("@runs", "archived", "yes").unwrap();
            s.archive(&keys("@runs", &["archived"]), &[]).unwrap();
            s.flush().unwrap();
            let size = s.size_on_disk().unwrap();
            assert!(size > COMPACT_MIN_BYTES, "{size} bytes before");
        }
        let s = SledStore::open(dir.path()).unwrap();
        let after = s.size_on_disk().unwrap();
        assert!(after < COMPACT_MIN_BYTES, "{after} bytes after compaction");
        assert_eq!(s.scan("churn").unwrap().len(), 50);
        assert!(s.scan("gone").unwrap().is_empty());
        assert_eq!(s.get("@runs", "archived").unwrap().as_deref(), Some("yes"));
        assert!(!with_suffix(dir.path(), ".old").exists());
        assert!(!with_suffix(dir.path(), ".compact").exists());
        drop(s);
        // Not again while it has not grown.
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.size_on_disk().unwrap(), after);
    }

    /// A crash inside a compaction's swap: the next open finishes it (the
    /// copy was complete) or discards it (the copy may not be).
    #[test]
    fn an_interrupted_compaction_is_finished_or_discarded() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state");
        let write = |d: &Path, v: &str| {
            let s = SledStore::open(d).unwrap();
            s.set("a", "k", v).unwrap();
            s.flush().unwrap();
        };
        // Between the renames: only the copy exists.
        write(&with_suffix(&dir, ".compact"), "copy");
        write(&with_suffix(&dir, ".old"), "old");
        let s = SledStore::open(&dir).unwrap();
        assert_eq!(s.get("a", "k").unwrap().as_deref(), Some("copy"));
        assert!(!with_suffix(&dir, ".old").exists());
        drop(s);
        // During the copy: the store stands, the partial copy goes.
        write(&with_suffix(&dir, ".compact"), "partial");
        let s = SledStore::open(&dir).unwrap();
        assert_eq!(s.get("a", "k").unwrap().as_deref(), Some("copy"));
        assert!(!with_suffix(&dir, ".compact").exists());
    }

    /// Files no registered segment is (a crash before registering) are
    /// removed by the next archive; a damaged segment is corruption named
    /// by its file, which the host answers by rebuilding the store.
    #[test]
    fn orphans_are_removed_and_damage_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            s.set("@runs", "r", "v").unwrap();
            s.archive(&keys("@runs", &["r"]), &[]).unwrap();
            let stray = dir
                .path()
                .join(ARCHIVE_DIR)
                .join("99999999999999999999.seg.tmp");
            std::fs::write(&stray, "half").unwrap();
            s.set("@runs", "q", "v").unwrap();
            s.archive(&keys("@runs", &["q"]), &[]).unwrap();
            assert!(!stray.exists());
            s.flush().unwrap();
        }
        let seg = std::fs::read_dir(dir.path().join(ARCHIVE_DIR))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut bytes = std::fs::read(&seg).unwrap();
        let n = bytes.len();
        bytes[n - 14] ^= 1;
        std::fs::write(&seg, bytes).unwrap();
        let e = SledStore::open(dir.path()).unwrap_err();
        assert!(e.is_corruption(), "{e}");
        assert!(e.to_string().contains(&seg.display().to_string()), "{e}");
    }

    #[test]
    fn the_memory_store_keeps_everything_live() {
        let s = crate::MemStore::default();
        s.set("@runs", "r", "v").unwrap();
        assert!(!s.archives());
        assert!(!s.archive(&keys("@runs", &["r"]), &[]).unwrap());
        assert_eq!(s.get("@runs", "r").unwrap().as_deref(), Some("v"));
    }
}
