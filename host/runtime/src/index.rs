//! The indexes derived from the event log, kept in the state store: plugin
//! kv data, proposals, workflow runs and escalations, the per-run event
//! index (run → the seq and log position of each of its records), and the
//! last applied sequence number and its position.
//!
//! **Invariant:** the index is only ever written here, from committed
//! records in log order (the log writer calls [`apply`] after each
//! `fdatasync`, and at start-up for the tail the store has not seen). So
//! losing the store's unsynced tail loses nothing.
//!
//! One apply is one atomic [`Store::commit`]: the records' effects and the
//! new `applied_seq` land together or not at all, and records that do not
//! follow `applied_seq` are refused ([`IndexError::Gap`]). An error is
//! returned to the log, which stops taking appends (see
//! [`charter_audit::OnCommit`]); the next start re-applies from
//! `applied_seq`. The index never drifts silently from the log.
//!
//! Run leases ([`claim_run`]) live here too, in their own namespace: they
//! are coordination, not derived state, and are the one thing written
//! outside [`apply`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use charter_audit::{AnyLog, Event, Record};
use charter_store::{Batch, Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::workflow::state::{ESCALATIONS, EscalationState, RUNS, RunState};

/// Namespace of proposals in the state store.
pub const PROPOSALS: &str = "@proposals";
/// Namespace of index metadata.
pub const META: &str = "@meta";
/// Namespace of the per-run event index: the seq and log position of each
/// of a run's records, packed per run (not one key per event: sled 0.34
/// loads its whole page table when it opens, so its open time follows the
/// number of keys, and a key per event made every `runs show` and host
/// start-up pay for the whole log). `{len}:{run}` holds the run's latest
/// entries, `{len}:{run}/{first seq:020}` each full chunk of
/// [`RUN_EVENTS_CHUNK`] before them; values are `seq@position` lists
/// joined by `,`. The run id's length comes first, so no run id's keys
/// can ever fall under another's prefix.
pub const RUN_EVENTS: &str = "@run-events";
/// Entries one [`RUN_EVENTS`] value holds at most: an apply rewrites the
/// run's latest value, so a long run costs each apply a bounded rewrite.
pub const RUN_EVENTS_CHUNK: usize = 256;
/// Namespace mapping a journaled call's id to its run (a `call-result`
/// names only the call) until its result is applied (one key per call in
/// flight, not per call ever made); a result that names a proposal keeps
/// it, as a later one may follow.
pub const CALL_RUNS: &str = "@call-runs";
/// The store's archive ([`Store::archive`]) takes runs that ended: the
/// apply thread keeps the ids of the runs it saw end, and every
/// [`ARCHIVE_AFTER`] of them [`archive_runs`] moves their states and
/// per-run event index out of the live store in one step. sled 0.34 opens
/// in time proportional to what it holds, so without this every open (host
/// start-up, `charter runs show` without a host) would pay for every run
/// the deployment ever ran. Runs that ended in a process that stopped
/// before it archived them are found by [`prepare`] among the live runs.
/// Only runs that have ended are archived: start-up resumes the runs that
/// can go on from the live store alone ([`Store::scan_live`]).
///
/// Ended runs an apply thread lets accumulate before it archives them.
pub const ARCHIVE_AFTER: usize = 256;
/// Namespace of run leases: run → [`Lease`].
pub const LEASES: &str = "@leases";
/// Namespace of triggered starts: a trigger's dedup key
/// (`TriggerRef::dedup_key`) → the run it started; and `last:{name}` →
/// the last tick a schedule started a run for (Unix ms).
pub const TRIGGERS: &str = "@triggers";

/// Why the index could not be read or applied.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index: {0}")]
    Store(#[from] StoreError),
    /// Records that do not follow the last applied one: applying them
    /// would leave a hole (or re-apply what is there).
    #[error(
        "index: records from seq {got} do not follow the last applied seq {applied} (a missed or repeated apply)"
    )]
    Gap { applied: u64, got: u64 },
    /// The index and the log disagree about a record.
    #[error("index: {0}")]
    Mismatch(String),
    #[error("index: event log: {0}")]
    Log(#[from] charter_audit::LogError),
    #[error("index: cannot encode {what}: {source}")]
    Encode {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

impl IndexError {
    /// The error as the host stops with it: what happened, where, and the
    /// fix.
    pub fn stop_message(&self, data_dir: &std::path::Path) -> String {
        format!(
            "{self}. The host stops: the events are on disk in {log}, but the state index in {state} no longer follows them. Restart the host: the index re-applies the log from its last applied seq. If that fails again, move {state} aside (it is rebuilt from the log)",
            log = data_dir.join(charter_audit::LOG_FILE).display(),
            state = data_dir.join("state").display(),
        )
    }
}

/// A proposal as the index knows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProposalState {
    pub id: String,
    pub call: String,
    pub plugin: String,
    pub digest: String,
    pub function: String,
    pub args: serde_json::Value,
    pub args_digest: String,
    pub rationale: Option<String>,
    pub policies: Vec<String>,
    pub approver_role: Option<String>,
    pub approvals_needed: u32,
    pub expires_at_ms: u64,
    pub initiator: Option<String>,
    pub owner: Option<String>,
    pub created_ms: u64,
    /// `pending`, `approved` (a run's, executed when the run resumes),
    /// `executed`, `rejected`, `expired` or `failed`.
    pub status: String,
    pub approvals: Vec<String>,
    pub detail: Option<String>,
    /// The workflow run waiting on it: approval resumes the run, which
    /// executes the call (instead of the host executing it directly).
    #[serde(default)]
    pub run: Option<String>,
    /// The executed call's recorded result (`null` when it returned none;
    /// a note when it was too large to record), from its `call-result`:
    /// what the proposal's agent polls, read here instead of from the log.
    /// Not part of what was proposed ([`ProposalState::agrees_with`]
    /// leaves it out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// The executed call's outcome, from the first `call-result` naming
    /// the proposal: what `proposals show` prints, read here instead of
    /// from the log. Not part of what was proposed either.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution: Option<ProposalExecution>,
}

/// An executed proposal's `call-result`, as its index entry keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProposalExecution {
    /// The record's sequence number.
    pub seq: u64,
    /// Whether the call succeeded.
    pub ok: bool,
    /// What it returned, in short.
    pub summary: String,
}

impl ProposalState {
    /// The state a `proposal` record creates.
    pub fn created(r: &Record) -> Option<ProposalState> {
        let Event::Proposal {
            id,
            call,
            plugin,
            digest,
            function,
            args,
            args_digest,
            rationale,
            policies,
            approver_role,
            approvals_needed,
            expires_at_ms,
            initiator,
            owner,
            journal,
        } = &r.event
        else {
            return None;
        };
        Some(ProposalState {
            id: id.clone(),
            call: call.clone(),
            plugin: plugin.clone(),
            digest: digest.clone(),
            function: function.clone(),
            args: args.clone(),
            args_digest: args_digest.clone(),
            rationale: rationale.clone(),
            policies: policies.clone(),
            approver_role: approver_role.clone(),
            approvals_needed: *approvals_needed,
            expires_at_ms: *expires_at_ms,
            initiator: initiator.clone(),
            owner: owner.clone(),
            created_ms: r.time_ms,
            status: "pending".into(),
            approvals: vec![],
            detail: None,
            run: journal.as_ref().map(|j| j.run.clone()),
            result: None,
            execution: None,
        })
    }

    /// Proposal `id` folded from the log's records alone (what an approval
    /// acts on: never the index, which is only a derived copy).
    pub fn from_log(records: &[Record], id: &str) -> Option<ProposalState> {
        let mut st: Option<ProposalState> = None;
        for r in records {
            match &r.event {
                Event::Proposal { id: pid, .. } if pid == id => st = ProposalState::created(r),
                Event::ApprovalDecision {
                    proposal,
                    by,
                    approve: true,
                    accepted: true,
                    ..
                } if proposal == id => {
                    if let Some(p) = &mut st
                        && !p.approvals.contains(by)
                    {
                        p.approvals.push(by.clone());
                    }
                }
                Event::ProposalResolved {
                    proposal,
                    status,
                    detail,
                } if proposal == id => {
                    if let Some(p) = &mut st {
                        p.status = status.clone();
                        p.detail = detail.clone();
                    }
                }
                _ => {}
            }
        }
        st
    }

    /// Does the index's copy say the same as the log's (the proposal, its
    /// approvals and status; the executed result is the index's alone)?
    pub fn agrees_with(&self, logged: &ProposalState) -> bool {
        let proposed = |p: &ProposalState| {
            serde_json::to_value(ProposalState {
                result: None,
                execution: None,
                ..p.clone()
            })
            .ok()
        };
        let a = proposed(self);
        a.is_some() && a == proposed(logged)
    }

    /// Pending but past its expiry.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.status == "pending" && now_ms >= self.expires_at_ms
    }
}

/// The shape of the index this code writes: 2 added the per-run event
/// index and `applied_at`; 3 packs the per-run index per run and drops a
/// call's [`CALL_RUNS`] entry once its result is applied; 4 keeps an
/// executed proposal's result ([`ProposalState::result`]); 5 its outcome
/// ([`ProposalState::execution`]); 6 moves ended runs to the store's
/// archive ([`archive_runs`]). A store of
/// another version has those two namespaces cleared and is re-applied from
/// the log's first record (the fold is deterministic in log order, so
/// re-applying over the old contents ends in the state a fresh store
/// would reach) before it is used.
pub const INDEX_VERSION: u64 = 6;

/// Make the store's index current: if it was written by another version,
/// mark it for re-application from seq 1 (see [`INDEX_VERSION`]). Returns
/// the seq to re-apply after.
pub fn prepare(store: &dyn Store) -> Result<u64, IndexError> {
    let version = store
        .get(META, "index_version")?
        .and_then(|v| v.parse::<u64>().ok());
    if version == Some(INDEX_VERSION) {
        if store.archives() {
            archive_ended_live(store)?;
        }
        return read_applied(store);
    }
    if read_applied(store)? > 0 {
        tracing::info!(
            "the state index predates version {INDEX_VERSION}; re-applying the event log to it"
        );
    }
    // Another layout's per-run entries would not read as this one's. A
    // crash before the commit below leaves the old version recorded, so
    // the next start clears again.
    store.clear(RUN_EVENTS)?;
    store.clear(CALL_RUNS)?;
    let mut b = Batch::default();
    b.put(META, "index_version", &INDEX_VERSION.to_string());
    b.put(META, "applied_seq", "0");
    b.delete(META, "applied_at");
    store.commit(&b)?;
    Ok(0)
}

/// The last sequence number the store has applied (0 if none or
/// unreadable; a failing store then re-applies everything, which is safe).
pub fn applied_seq(store: &dyn Store) -> u64 {
    read_applied(store).unwrap_or(0)
}

fn read_applied(store: &dyn Store) -> Result<u64, IndexError> {
    Ok(store
        .get(META, "applied_seq")?
        .and_then(|s| s.parse().ok())
        .unwrap_or(0))
}

pub fn proposal(store: &dyn Store, id: &str) -> Option<ProposalState> {
    get_json(store, PROPOSALS, id)
}

pub fn proposals(store: &dyn Store) -> Vec<ProposalState> {
    all_json(store, PROPOSALS)
}

pub(crate) fn get_json<T: serde::de::DeserializeOwned>(
    store: &dyn Store,
    ns: &str,
    key: &str,
) -> Option<T> {
    store
        .get(ns, key)
        .ok()
        .flatten()
        .and_then(|s| serde_json::from_str(&s).ok())
}

/// Every value of a JSON namespace the store keeps live
/// ([`Store::scan_live`]).
pub(crate) fn live_json<T: serde::de::DeserializeOwned>(store: &dyn Store, ns: &str) -> Vec<T> {
    store
        .scan_live(ns)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_str(&v).ok())
        .collect()
}

/// Every value of a JSON namespace.
pub(crate) fn all_json<T: serde::de::DeserializeOwned>(store: &dyn Store, ns: &str) -> Vec<T> {
    store
        .scan(ns)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_str(&v).ok())
        .collect()
}

/// The key in [`META`] of the log's verified mark: the last frame the
/// host's start-up verified, signed with the deployment's key (see
/// [`charter_audit::checkpoint::sign_mark`]).
pub const VERIFIED_MARK: &str = "verified_mark";

/// The verified mark the store holds, if it is signed by `key`. An absent,
/// malformed or unsigned one is `None` (the log is then verified in
/// full): the index is derived and untrusted, so an edited mark can only
/// make start-up check more, never less.
pub fn verified_mark(
    store: &dyn Store,
    key: &charter_audit::checkpoint::VerifyingKey,
) -> Option<charter_audit::Verified> {
    let text = store.get(META, VERIFIED_MARK).ok().flatten()?;
    let mark = charter_audit::checkpoint::read_mark(key, &text);
    if mark.is_none() {
        tracing::warn!(
            "the state index holds a verified mark this deployment's key did not sign; verifying the whole event log"
        );
    }
    mark
}

/// Record `mark` (just verified) for the next start-up, signed with `key`.
/// Written outside [`apply`], like the leases: it describes the log file,
/// not its events. Losing it (an unsynced store, a store moved aside) only
/// makes the next start-up verify more.
pub fn record_verified_mark(
    store: &dyn Store,
    key: &charter_audit::checkpoint::SigningKey,
    mark: &charter_audit::Verified,
) -> Result<(), IndexError> {
    let text = charter_audit::checkpoint::sign_mark(key, mark);
    store.set(META, VERIFIED_MARK, &text)?;
    Ok(())
}

/// The key of run `run`'s latest entries in [`RUN_EVENTS`]; its full
/// chunks' keys are this, `/` and their first seq.
fn run_head(run: &str) -> String {
    format!("{}:{run}", run.len())
}

fn encode_positions(entries: &[(u64, u64)]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(entries.len() * 20);
    for (i, (seq, at)) in entries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{seq}@{at}");
    }
    out
}

/// A [`RUN_EVENTS`] value; anything but `seq@position` pairs is an error
/// (the caller reads the log instead, or the apply stops the host).
fn decode_positions(key: &str, text: &str) -> Result<Vec<(u64, u64)>, IndexError> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|e| {
            e.split_once('@')
                .and_then(|(s, a)| Some((s.parse().ok()?, a.parse().ok()?)))
                .ok_or_else(|| {
                    IndexError::Mismatch(format!("unreadable per-run entry {key:?}: {e:?}"))
                })
        })
        .collect()
}

/// Apply committed records, in order (kv writes that held a secret keep
/// its `[secret:NAME]` placeholder: see [`apply_with`]). Positions are
/// those the log reported for the records.
pub fn apply(store: &dyn Store, records: &[Record], positions: &[u64]) -> Result<(), IndexError> {
    apply_with(store, records, positions, &|_, _| None)
}

/// Resolves `(plugin, secret name)` to the secret's value, if the plugin
/// is granted that secret now.
pub type Resolve<'a> = &'a dyn Fn(&str, &str) -> Option<String>;

/// Restore `[secret:NAME]` placeholders of the listed secrets.
fn restore(text: &str, plugin: &str, secrets: &[String], resolve: Resolve<'_>) -> String {
    let mut out = text.to_string();
    for name in secrets {
        match resolve(plugin, name) {
            Some(v) => out = out.replace(&format!("[secret:{name}]"), &v),
            None => tracing::warn!(
                secret = %name,
                "index: a kv write held secret {name:?}, which the plugin is not granted now or which cannot be read; the placeholder is stored"
            ),
        }
    }
    out
}

/// The writes of one apply, read through: what this apply wrote before,
/// else the store.
struct Overlay<'a> {
    store: &'a dyn Store,
    batch: Batch,
    /// Runs this apply changed, decoded: each is read once and written
    /// once per apply, however many of its events the batch holds.
    runs: HashMap<String, RunState>,
    /// The latest [`RUN_EVENTS`] entries of the runs this apply indexed,
    /// likewise read and written once per apply.
    heads: HashMap<String, Vec<(u64, u64)>>,
}

impl<'a> Overlay<'a> {
    fn new(store: &'a dyn Store) -> Overlay<'a> {
        Overlay {
            store,
            batch: Batch::default(),
            runs: HashMap::new(),
            heads: HashMap::new(),
        }
    }
    /// Run `run`'s latest [`RUN_EVENTS`] entries as this apply has them.
    fn head_mut(&mut self, run: &str) -> Result<&mut Vec<(u64, u64)>, IndexError> {
        if !self.heads.contains_key(run) {
            let key = run_head(run);
            let entries = match self.store.get(RUN_EVENTS, &key)? {
                Some(text) => decode_positions(&key, &text)?,
                None => Vec::new(),
            };
            self.heads.insert(run.to_string(), entries);
        }
        Ok(self.heads.entry(run.to_string()).or_default())
    }
    /// Write the [`RUN_EVENTS`] entries this apply changed into its batch.
    fn put_heads(&mut self) {
        for (run, entries) in std::mem::take(&mut self.heads) {
            if entries.is_empty() {
                self.batch.delete(RUN_EVENTS, &run_head(&run));
            } else {
                self.batch
                    .put(RUN_EVENTS, &run_head(&run), &encode_positions(&entries));
            }
        }
    }
    fn get(&self, ns: &str, key: &str) -> Result<Option<String>, IndexError> {
        match self.batch.get(ns, key) {
            Some(v) => Ok(v.map(str::to_string)),
            None => Ok(self.store.get(ns, key)?),
        }
    }
    fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        ns: &str,
        key: &str,
    ) -> Result<Option<T>, IndexError> {
        // A value the index cannot read back is treated as absent, as the
        // readers above do (it can only be an older shape of the state).
        Ok(self
            .get(ns, key)?
            .and_then(|s| serde_json::from_str(&s).ok()))
    }
    /// Run `run`'s state as this apply has it so far, if the run exists.
    /// Decoded from the store's text, or taken from `cache` when the text
    /// it was decoded from is the stored text (whoever wrote it).
    fn run_mut(
        &mut self,
        run: &str,
        cache: &mut RunCache,
    ) -> Result<Option<&mut RunState>, IndexError> {
        if !self.runs.contains_key(run) {
            let Some(text) = self.get(RUNS, run)? else {
                return Ok(None);
            };
            let st = match cache.runs.remove(run) {
                Some((was, st)) if was == text => st,
                // A value the index cannot read back is treated as absent
                // (as `get_json` does).
                _ => match serde_json::from_str(&text) {
                    Ok(st) => st,
                    Err(_) => return Ok(None),
                },
            };
            self.runs.insert(run.to_string(), st);
        }
        Ok(self.runs.get_mut(run))
    }
    /// Write the runs this apply changed into its batch; returns them with
    /// their text, for the cache once the batch is committed.
    fn put_runs(&mut self) -> Result<Vec<(String, String, RunState)>, IndexError> {
        let mut out = Vec::with_capacity(self.runs.len());
        // One buffer for every run's text, so a state of a few KiB is not
        // grown from 128 bytes by doubling (each growth a copy) per run;
        // each text is then one exact copy out of it.
        let mut buf = Vec::with_capacity(4096);
        for (run, st) in std::mem::take(&mut self.runs) {
            buf.clear();
            serde_json::to_writer(&mut buf, &st).map_err(|source| IndexError::Encode {
                what: format!("{RUNS}/{run}"),
                source,
            })?;
            let text = String::from_utf8(buf.clone()).expect("serde_json writes UTF-8");
            self.batch.put(RUNS, &run, &text);
            out.push((run, text, st));
        }
        Ok(out)
    }
    fn put_json<T: Serialize>(&mut self, ns: &str, key: &str, v: &T) -> Result<(), IndexError> {
        let text = serde_json::to_string(v).map_err(|source| IndexError::Encode {
            what: format!("{ns}/{key}"),
            source,
        })?;
        self.batch.put(ns, key, &text);
        Ok(())
    }
}

/// Apply committed records, in order, in one atomic store commit.
/// `resolve` reads a secret's value (from its declared source) for kv
/// writes recorded with the secret replaced by `[secret:NAME]`, only while
/// the writing plugin is granted that secret: the store holds what the
/// plugin wrote, the log never holds the secret, and a plugin whose grant
/// was taken away never gets the (rotated) value back through its kv.
pub fn apply_with(
    store: &dyn Store,
    records: &[Record],
    positions: &[u64],
    resolve: Resolve<'_>,
) -> Result<(), IndexError> {
    apply_cached(store, records, positions, resolve, &mut RunCache::default())
}

/// Decoded states of runs in progress, with the text each was decoded
/// from (or encoded to): the log's commit callback keeps one across applies,
/// so a run's state is not decoded again for each of its steps. An entry
/// is used only while its text is the stored text, so a write by anyone
/// else is never missed; ended runs leave it.
pub struct RunCache {
    runs: HashMap<String, (String, RunState)>,
    /// Runs ended since the last archive (one that goes on again, after
    /// a late event, leaves).
    ended: std::collections::HashSet<String>,
    /// Ended runs that make an archive pass ([`ARCHIVE_AFTER`]).
    archive_after: usize,
}

impl Default for RunCache {
    fn default() -> RunCache {
        RunCache::archiving_after(ARCHIVE_AFTER)
    }
}

impl RunCache {
    /// A cache whose applies archive ended runs once `n` have ended.
    pub fn archiving_after(n: usize) -> RunCache {
        RunCache {
            runs: HashMap::new(),
            ended: std::collections::HashSet::new(),
            archive_after: n.max(1),
        }
    }
}

/// Most runs a [`RunCache`] holds (it starts over beyond).
const RUN_CACHE_MAX: usize = 4096;

/// [`apply_with`], reusing `cache` (see [`RunCache`]).
pub fn apply_cached(
    store: &dyn Store,
    records: &[Record],
    positions: &[u64],
    resolve: Resolve<'_>,
    cache: &mut RunCache,
) -> Result<(), IndexError> {
    apply_cached_from(store, records, positions, resolve, cache, false)
}

/// [`apply_cached`] for a node of a shared log starting up: records the
/// index already holds (another node applied them between this node's
/// read of the applied seq and its catch-up, which runs under the append
/// lock) are passed over instead of refused; any other gap is refused.
pub fn apply_cached_skipping_applied(
    store: &dyn Store,
    records: &[Record],
    positions: &[u64],
    resolve: Resolve<'_>,
    cache: &mut RunCache,
) -> Result<(), IndexError> {
    apply_cached_from(store, records, positions, resolve, cache, true)
}

fn apply_cached_from(
    store: &dyn Store,
    records: &[Record],
    positions: &[u64],
    resolve: Resolve<'_>,
    cache: &mut RunCache,
    skip_applied: bool,
) -> Result<(), IndexError> {
    let applied = read_applied(store)?;
    let skip = if skip_applied {
        records.iter().take_while(|r| r.seq <= applied).count()
    } else {
        0
    };
    let records = &records[skip..];
    let positions = positions.get(skip..).unwrap_or(&[]);
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        return Ok(());
    };
    if first.seq != applied + 1 {
        return Err(IndexError::Gap {
            applied,
            got: first.seq,
        });
    }
    let mut o = Overlay::new(store);
    for (i, r) in records.iter().enumerate() {
        apply_one(&mut o, r, resolve, cache)?;
        if let Some(&at) = positions.get(i) {
            index_run(&mut o, r, at)?;
            // Where the activation is in the log: the host checks the
            // version the index says serves against that record.
            if let Event::PluginActivated { plugin, .. } = &r.event {
                o.batch
                    .put(META, &format!("active-at:{plugin}"), &at.to_string());
            }
        }
    }
    let runs = o.put_runs()?;
    o.put_heads();
    o.batch.put(META, "applied_seq", &last.seq.to_string());
    if let Some(at) = positions.get(records.len() - 1) {
        o.batch.put(META, "applied_at", &at.to_string());
    }
    store.commit(&o.batch)?;
    if cache.runs.len() + runs.len() > RUN_CACHE_MAX {
        cache.runs.clear();
    }
    let archives = store.archives();
    for (run, text, st) in runs {
        if !st.status.is_terminal() {
            cache.ended.remove(&run);
            cache.runs.insert(run, (text, st));
        } else if archives {
            cache.ended.insert(run);
        }
    }
    if cache.ended.len() >= cache.archive_after {
        let mut ended: Vec<String> = std::mem::take(&mut cache.ended).into_iter().collect();
        ended.sort_unstable();
        // The apply itself is committed; an archive that fails leaves the
        // runs live, and the next start's `prepare` tries again.
        if let Err(e) = archive_runs(store, &ended) {
            tracing::error!(
                "moving ended runs to the state store's archive failed ({e}); they stay live until the next start"
            );
        }
    }
    Ok(())
}

/// Move runs `ended` — each one's state and per-run event index — to
/// the store's archive in one step. Called where the index is applied
/// (the log's commit callback, one round at a time), so nothing writes
/// those runs meanwhile; a run that receives an event later is read from
/// the archive and written live again (whatever is archived reads as
/// before: a run is only placed there, never changed).
pub fn archive_runs(store: &dyn Store, ended: &[String]) -> Result<(), IndexError> {
    let mut keys = Vec::with_capacity(ended.len() * 2);
    for run in ended {
        keys.push((RUNS.to_string(), run.clone()));
        for (k, _) in store.scan_group(RUN_EVENTS, &run_head(run))? {
            keys.push((RUN_EVENTS.to_string(), k));
        }
    }
    if !keys.is_empty() {
        store.archive(&keys, &[])?;
    }
    Ok(())
}

/// Archive the ended runs the live store still holds (a process that
/// stopped before its next archive pass left them): what [`prepare`]
/// does at every start. Costs what is live.
pub fn archive_ended_live(store: &dyn Store) -> Result<usize, IndexError> {
    let mut ended = Vec::new();
    for (run, text) in store.scan_live(RUNS)? {
        if serde_json::from_str::<RunState>(&text).is_ok_and(|st| st.status.is_terminal()) {
            ended.push(run);
        }
    }
    archive_runs(store, &ended)?;
    Ok(ended.len())
}

/// The index as a backend offers it: every [`Store`] is one (its atomic
/// [`Store::commit`] makes `apply` atomic), so sled and the memory store
/// both are, and both pass this module's conformance suite. A shared
/// backend (one SQL transaction per apply) implements [`Store`] and gets
/// this, or implements this directly.
pub trait IndexStore {
    /// [`prepare`]: make the index current; the seq to re-apply after.
    fn prepare_index(&self) -> Result<u64, IndexError>;
    /// [`apply_with`]: committed records in order, atomically.
    fn apply_records(
        &self,
        records: &[Record],
        positions: &[u64],
        resolve: Resolve<'_>,
    ) -> Result<(), IndexError>;
    /// [`applied_seq`].
    fn applied(&self) -> Result<u64, IndexError>;
    /// [`run_positions`].
    fn positions_of_run(&self, run: &str) -> Result<Vec<(u64, u64)>, IndexError>;
}

/// The index methods over any store, as `&dyn Store`.
macro_rules! index_store_via_dyn {
    () => {
        fn prepare_index(&self) -> Result<u64, IndexError> {
            prepare(self)
        }
        fn apply_records(
            &self,
            records: &[Record],
            positions: &[u64],
            resolve: Resolve<'_>,
        ) -> Result<(), IndexError> {
            apply_with(self, records, positions, resolve)
        }
        fn applied(&self) -> Result<u64, IndexError> {
            read_applied(self)
        }
        fn positions_of_run(&self, run: &str) -> Result<Vec<(u64, u64)>, IndexError> {
            run_positions(self, run)
        }
    };
}

impl<S: Store> IndexStore for S {
    index_store_via_dyn!();
}

impl IndexStore for dyn Store {
    index_store_via_dyn!();
}

/// Record `r` under its run in [`RUN_EVENTS`]: the run's own events, the
/// results of its journaled calls, and the decisions on its proposals.
fn index_run(o: &mut Overlay<'_>, r: &Record, at: u64) -> Result<(), IndexError> {
    let run = match &r.event {
        Event::CallResult { call, .. } => o.get(CALL_RUNS, call)?,
        Event::ApprovalDecision { proposal, .. } | Event::ProposalResolved { proposal, .. } => o
            .get_json::<ProposalState>(PROPOSALS, proposal)?
            .and_then(|p| p.run),
        e => e.run().map(str::to_string),
    };
    let Some(run) = run else { return Ok(()) };
    match &r.event {
        Event::Call {
            call,
            journal: Some(_),
            ..
        } => o.batch.put(CALL_RUNS, call, &run),
        // The call's one result: nothing more will ask for its run.
        Event::CallResult {
            call,
            proposal: None,
            ..
        } => o.batch.delete(CALL_RUNS, call),
        _ => {}
    }
    let head = o.head_mut(&run)?;
    head.push((r.seq, at));
    if head.len() >= RUN_EVENTS_CHUNK {
        let full = std::mem::take(head);
        let key = format!("{}/{:020}", run_head(&run), full[0].0);
        o.batch.put(RUN_EVENTS, &key, &encode_positions(&full));
    }
    Ok(())
}

/// One record's effect on kv data, proposals, runs and escalations. A
/// long match, one arm per kind of event the index keeps: splitting it
/// would scatter what each event means to the index.
fn apply_one(
    o: &mut Overlay<'_>,
    r: &Record,
    resolve: Resolve<'_>,
    cache: &mut RunCache,
) -> Result<(), IndexError> {
    match &r.event {
        Event::KvWrite {
            plugin,
            key,
            value,
            secrets,
            ..
        } => {
            let restored = |t: &str| {
                if secrets.is_empty() {
                    t.to_string()
                } else {
                    restore(t, plugin, secrets, resolve)
                }
            };
            match value {
                Some(v) => o.batch.put(plugin, &restored(key), &restored(v)),
                None => o.batch.delete(plugin, &restored(key)),
            }
        }
        Event::Proposal { .. } => {
            if let Some(p) = ProposalState::created(r) {
                o.put_json(PROPOSALS, &p.id, &p)?;
            }
        }
        Event::ApprovalDecision {
            proposal: id,
            by,
            approve: true,
            accepted: true,
            ..
        } => {
            if let Some(mut p) = o.get_json::<ProposalState>(PROPOSALS, id)?
                && !p.approvals.contains(by)
            {
                p.approvals.push(by.clone());
                o.put_json(PROPOSALS, id, &p)?;
            }
        }
        Event::ProposalResolved {
            proposal: id,
            status,
            detail,
        } => {
            if let Some(mut p) = o.get_json::<ProposalState>(PROPOSALS, id)? {
                p.status = status.clone();
                p.detail = detail.clone();
                o.put_json(PROPOSALS, id, &p)?;
            }
        }
        // An executed proposal's outcome (`proposals show`) and, when it
        // succeeded, its result (its agent's polls).
        Event::CallResult {
            proposal: Some(id),
            ok,
            result,
            summary,
            ..
        } => {
            if let Some(mut p) = o.get_json::<ProposalState>(PROPOSALS, id)? {
                if p.execution.is_none() {
                    p.execution = Some(ProposalExecution {
                        seq: r.seq,
                        ok: *ok,
                        summary: summary.clone(),
                    });
                }
                if *ok {
                    p.result = Some(match result {
                        Some(serde_json::Value::Array(v)) => {
                            v.first().cloned().unwrap_or(serde_json::Value::Null)
                        }
                        _ => serde_json::json!("<not recorded: too large>"),
                    });
                }
                o.put_json(PROPOSALS, id, &p)?;
            }
        }
        // The configuration last recorded: a host records it again only
        // when it changed.
        Event::ConfigLoaded { digest, .. } => o.batch.put(META, "config_digest", digest),
        // The version of each plugin that serves, and its pin (hot
        // loading, `lib.rs` `Generation`): after a restart the last
        // activated version serves, not the file the configuration names.
        Event::PluginActivated { plugin, digest, .. } => {
            o.batch.put(META, &format!("active:{plugin}"), digest)
        }
        Event::PluginPinned { plugin, digest, .. } => match digest {
            Some(d) => o.batch.put(META, &format!("pin:{plugin}"), d),
            None => o.batch.delete(META, &format!("pin:{plugin}")),
        },
        Event::RunStarted { run, trigger, .. } => {
            if let Some(st) = RunState::start(&r.event, r.seq, r.time_ms) {
                o.runs.insert(run.clone(), st);
            }
            if let Some(t) = trigger {
                // The first run a delivery or tick started stays its run.
                let key = t.dedup_key();
                if o.get(TRIGGERS, &key)?.is_none() {
                    o.batch.put(TRIGGERS, &key, run);
                }
                if t.kind == "schedule" {
                    let last = format!("last:{}", t.name);
                    let before = o.get(TRIGGERS, &last)?.and_then(|v| v.parse::<u64>().ok());
                    if let Ok(tick) = t.key.parse::<u64>()
                        && before.is_none_or(|b| tick > b)
                    {
                        o.batch.put(TRIGGERS, &last, &tick.to_string());
                    }
                }
            }
        }
        Event::StepAttempt { run, .. }
        | Event::Escalated { run, .. }
        | Event::EscalationResolved { run, .. }
        | Event::RunFinished { run, .. } => {
            if let Some(st) = o.run_mut(run, cache)? {
                st.apply(&r.event, r.time_ms);
            }
            match &r.event {
                Event::Escalated { id, .. } => {
                    if let Some(e) = EscalationState::from_event(&r.event, r.time_ms) {
                        o.put_json(ESCALATIONS, id, &e)?;
                    }
                }
                Event::EscalationResolved {
                    id, accepted: true, ..
                } => {
                    if let Some(mut e) = o.get_json::<EscalationState>(ESCALATIONS, id)? {
                        e.apply(&r.event);
                        o.put_json(ESCALATIONS, id, &e)?;
                    }
                }
                _ => {}
            }
        }
        _ => {}
    }
    Ok(())
}

/// The seq and log position of every record of run `run` the index holds,
/// in log order.
pub fn run_positions(store: &dyn Store, run: &str) -> Result<Vec<(u64, u64)>, IndexError> {
    let head = run_head(run);
    let mut out = Vec::new();
    for (k, v) in store.scan_group(RUN_EVENTS, &head)? {
        // The run's latest entries, or a full chunk named by its first
        // seq; no other key can start with the length-prefixed id.
        let chunk = k.strip_prefix(&head).unwrap_or_default();
        let entries = decode_positions(&k, &v)?;
        let named = match chunk.strip_prefix('/') {
            Some(first) => first.parse::<u64>().ok(),
            None if chunk.is_empty() => entries.first().map(|e| e.0),
            None => None,
        };
        if named != entries.first().map(|e| e.0) {
            return Err(IndexError::Mismatch(format!(
                "per-run entry {k:?} does not name its first seq"
            )));
        }
        out.extend(entries);
    }
    out.sort_unstable();
    if out.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(IndexError::Mismatch(format!(
            "run {run:?}: the per-run index names one seq twice"
        )));
    }
    Ok(out)
}

/// Point run `run`'s entry for `seq` at log position `at` (returns the
/// position it named): a damaged index, for tests that show such an entry
/// is never believed. Not part of the index's normal writes.
#[doc(hidden)]
pub fn repoint_run_entry(
    store: &dyn Store,
    run: &str,
    seq: u64,
    at: u64,
) -> Result<Option<u64>, IndexError> {
    let head = run_head(run);
    for (k, v) in store.scan_group(RUN_EVENTS, &head)? {
        let mut entries = decode_positions(&k, &v)?;
        if let Some(e) = entries.iter_mut().find(|e| e.0 == seq) {
            let was = std::mem::replace(&mut e.1, at);
            store.set(RUN_EVENTS, &k, &encode_positions(&entries))?;
            return Ok(Some(was));
        }
    }
    Ok(None)
}

/// Check that records read at the index's positions are the ones it
/// named, and of the run it filed them under: a damaged or stale index
/// is an error, never another run's events.
fn checked(run: &str, want: &[(u64, u64)], got: Vec<Record>) -> Result<Vec<Record>, IndexError> {
    for ((seq, at), r) in want.iter().zip(&got) {
        if r.seq != *seq {
            return Err(IndexError::Mismatch(format!(
                "the per-run index names seq {seq} at byte {at} of the log, which holds seq {}; move the state directory aside to rebuild it",
                r.seq
            )));
        }
        let direct = r.event.run();
        if direct.is_some_and(|x| x != run) {
            return Err(IndexError::Mismatch(format!(
                "seq {seq} belongs to run {:?}, not {run:?}",
                direct.unwrap_or_default()
            )));
        }
    }
    Ok(got)
}

/// Every record of run `run`, in log order: its own events, the results
/// of its journaled calls and the decisions on its proposals. Reads only
/// those frames of the log (through the per-run index), so its cost
/// follows the run, not the log. The host's index is applied before an
/// append is acknowledged, so nothing committed is missing.
pub fn run_records(store: &dyn Store, log: &AnyLog, run: &str) -> Result<Vec<Record>, IndexError> {
    let want = run_positions(store, run)?;
    let at: Vec<u64> = want.iter().map(|(_, a)| *a).collect();
    checked(run, &want, log.read_at(&at)?)
}

/// The records proposal `id` is folded from ([`ProposalState::from_log`]),
/// read from the log from the proposal's own record on instead of from
/// the first frame: decisions on a proposal only ever follow it. The index
/// only says where to start (for a proposal of a workflow run, through
/// the run's per-run entries); the record found there must be that
/// proposal's, read from the log and checked, or this returns `None` and
/// the caller folds the whole log. `None` too for a proposal outside a run
/// (the index holds no position for it).
pub fn proposal_records(store: &dyn Store, log: &AnyLog, id: &str) -> Option<Vec<Record>> {
    let run = proposal(store, id)?.run?;
    let want = run_positions(store, &run).ok()?;
    let records = log
        .read_at(&want.iter().map(|(_, a)| *a).collect::<Vec<_>>())
        .ok()?;
    let records = checked(&run, &want, records).ok()?;
    let i = records
        .iter()
        .position(|r| matches!(&r.event, Event::Proposal { id: p, .. } if p == id))?;
    let (seq, at) = want[i];
    let filter = charter_audit::Filter::all()
        .kind("proposal")
        .kind("approval-decision")
        .kind("proposal-resolved");
    let out = log.read_from(at, &filter).ok()?;
    match out.first() {
        Some(r) if r.seq == seq && matches!(&r.event, Event::Proposal { id: p, .. } if p == id) => {
            Some(out)
        }
        _ => None,
    }
}

/// Run `run`'s records read without a host, for read-only commands
/// (`charter runs show`): from the state store's per-run index and the
/// log's tail past what the store has applied. `None` when that cannot be
/// done here — another process holds the data directory (it may be
/// writing), no store exists yet, or the index and the log disagree — and
/// the caller reads the whole log instead.
pub fn run_records_offline(data_dir: &std::path::Path, run: &str) -> Option<Vec<Record>> {
    with_offline_store(data_dir, "run", |store, log| offline(store, log, run))
}

/// Open the data directory's state store without a host, when no other
/// process holds the directory, and read it with `read`; `None` if that
/// cannot be done (the caller reads the whole log instead).
fn with_offline_store<T>(
    data_dir: &std::path::Path,
    what: &str,
    read: impl FnOnce(&dyn Store, &std::path::Path) -> Result<T, IndexError>,
) -> Option<T> {
    let log = data_dir.join(charter_audit::LOG_FILE);
    let state = data_dir.join("state");
    if !state.is_dir() || !log.is_file() {
        return None;
    }
    // Held while reading: no host starts writing meanwhile.
    let _lock = crate::try_lock_data_dir(data_dir)?;
    // (A store of this process that just closed is waited for: see
    // `SledStore::open`.)
    let store = charter_store::SledStore::open(&state).ok()?;
    let version = store.get(META, "index_version").ok()?;
    if version.as_deref() != Some(&INDEX_VERSION.to_string()) {
        tracing::debug!("index version {version:?}, not {INDEX_VERSION}: reading the log");
        return None;
    }
    match read(&store, &log) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::debug!("reading the {what} through the index failed ({e}); reading the log");
            None
        }
    }
}

/// Every run and escalation as `charter runs list` and `charter
/// escalations list` show them, read without a host: the index's run and
/// escalation states, with the log's tail past what the store has applied
/// folded in (through the same [`apply_one`] the index is written by), in
/// the order [`crate::workflow::state::from_records`] gives. Costs what
/// the index holds of runs, not the size of the log. `None` as for
/// [`run_records_offline`].
pub fn runs_offline(data_dir: &std::path::Path) -> Option<(Vec<RunState>, Vec<EscalationState>)> {
    with_offline_store(data_dir, "runs", |store, log| {
        let tail = unapplied_tail(store, log)?;
        let mut o = Overlay::new(store);
        let (mut runs, mut escs) = (Vec::new(), Vec::new());
        let mut cache = RunCache::default();
        for r in &tail {
            apply_one(&mut o, r, &|_, _| None, &mut cache)?;
            if let Some(run) = r.event.run() {
                runs.push(run.to_string());
            }
            if let Event::Escalated { id, .. } | Event::EscalationResolved { id, .. } = &r.event {
                escs.push(id.clone());
            }
        }
        // The runs the tail changed, into the overlay's batch (read below).
        o.put_runs()?;
        let mut run_map: std::collections::BTreeMap<String, RunState> = all_pairs(store, RUNS)?;
        for id in runs {
            if let Some(st) = o.get_json::<RunState>(RUNS, &id)? {
                run_map.insert(id, st);
            }
        }
        let mut esc_map: std::collections::BTreeMap<String, EscalationState> =
            all_pairs(store, ESCALATIONS)?;
        for id in escs {
            if let Some(e) = o.get_json::<EscalationState>(ESCALATIONS, &id)? {
                esc_map.insert(id, e);
            }
        }
        let mut runs: Vec<RunState> = run_map.into_values().collect();
        runs.sort_by_key(|r| std::cmp::Reverse(r.started_seq));
        let mut escs: Vec<EscalationState> = esc_map.into_values().collect();
        escs.sort_by_key(|e| std::cmp::Reverse(e.created_ms));
        Ok((runs, escs))
    })
}

/// A JSON namespace as a map; a value that does not read is an error (the
/// caller then reads the log instead of showing less than there is).
fn all_pairs<T: serde::de::DeserializeOwned>(
    store: &dyn Store,
    ns: &str,
) -> Result<std::collections::BTreeMap<String, T>, IndexError> {
    store
        .scan(ns)?
        .into_iter()
        .map(|(k, v)| match serde_json::from_str(&v) {
            Ok(t) => Ok((k, t)),
            Err(e) => Err(IndexError::Mismatch(format!("unreadable {ns}/{k}: {e}"))),
        })
        .collect()
}

/// The records past what the store has applied (a host that stopped
/// before its store flushed): the log from the last applied record on,
/// read from its position, checked to be that record.
fn unapplied_tail(store: &dyn Store, log: &std::path::Path) -> Result<Vec<Record>, IndexError> {
    let applied = read_applied(store)?;
    let from = match store.get(META, "applied_at")? {
        Some(at) => at
            .parse::<u64>()
            .map_err(|_| IndexError::Mismatch(format!("unreadable applied_at {at:?}")))?,
        None if applied == 0 => charter_audit::LOG_MAGIC.len() as u64,
        None => return Err(IndexError::Mismatch("no applied_at".into())),
    };
    let tail = charter_audit::read_from_position(log, from, &charter_audit::Filter::all())?;
    if applied > 0 && tail.first().map(|(r, _)| r.seq) != Some(applied) {
        return Err(IndexError::Mismatch(format!(
            "the log holds no seq {applied} at byte {from}"
        )));
    }
    Ok(tail
        .into_iter()
        .filter(|(r, _)| r.seq > applied)
        .map(|(r, _)| r)
        .collect())
}

fn offline(store: &dyn Store, log: &std::path::Path, run: &str) -> Result<Vec<Record>, IndexError> {
    let want = run_positions(store, run)?;
    let at: Vec<u64> = want.iter().map(|(_, a)| *a).collect();
    let mut records = checked(run, &want, charter_audit::read_positions(log, &at)?)?;
    let tail = unapplied_tail(store, log)?;
    let mut calls = std::collections::HashSet::new();
    let mut props = std::collections::HashSet::new();
    for r in &records {
        note_membership(&r.event, &mut calls, &mut props);
    }
    for r in tail {
        let mine = match &r.event {
            Event::CallResult { call, .. } => calls.contains(call),
            Event::ApprovalDecision { proposal, .. } | Event::ProposalResolved { proposal, .. } => {
                props.contains(proposal)
            }
            e => e.run() == Some(run),
        };
        if mine {
            note_membership(&r.event, &mut calls, &mut props);
            records.push(r);
        }
    }
    Ok(records)
}

fn note_membership(
    e: &Event,
    calls: &mut std::collections::HashSet<String>,
    props: &mut std::collections::HashSet<String>,
) {
    match e {
        Event::Call {
            call,
            journal: Some(_),
            ..
        } => {
            calls.insert(call.clone());
        }
        Event::Proposal {
            id,
            journal: Some(_),
            ..
        } => {
            props.insert(id.clone());
        }
        _ => {}
    }
}

// ---- run leases ------------------------------------------------------------

/// A claim on driving one run, as stored in [`LEASES`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Who holds it (process and host instance), for people reading it.
    pub holder: String,
    /// This claim's own token: a release or renewal by anyone else is a
    /// compare-and-swap that fails.
    pub token: String,
    pub expires_ms: u64,
}

/// A run this process may drive until the guard is dropped (which
/// releases it). One renewer thread per process renews every held lease
/// every third of its TTL; if a renewal finds the lease taken (this
/// process stalled past the expiry and another driver claimed the run),
/// [`RunLease::held`] turns false.
pub struct RunLease {
    store: Arc<dyn Store>,
    lease: Arc<Held>,
}

/// What the renewer knows of one held lease.
struct Held {
    /// Weak: a renewer never keeps a closed host's store open.
    store: std::sync::Weak<dyn Store>,
    run: String,
    holder: String,
    token: String,
    ttl_ms: u64,
    /// The lease as stored now, and whether the guard released it.
    current: std::sync::Mutex<(String, bool)>,
    held: AtomicBool,
    next_ms: AtomicU64,
}

impl Held {
    fn text(&self, now: u64) -> Result<String, IndexError> {
        let l = Lease {
            holder: self.holder.clone(),
            token: self.token.clone(),
            expires_ms: now + self.ttl_ms,
        };
        serde_json::to_string(&l).map_err(|source| IndexError::Encode {
            what: "a run lease".into(),
            source,
        })
    }

    fn every(&self) -> u64 {
        (self.ttl_ms / 3).max(1)
    }

    /// Fence an append of the run's events (run by the log's writer just
    /// before it takes the batch, [`RunLease::fence`]): renew the lease by
    /// compare-and-swap from the value this driver last stored (or, while
    /// that is fresh, read it back and compare). It fails
    /// if anyone else claimed the run since (even one who has released it
    /// again), and on success no one can claim it for another TTL, far
    /// longer than the write and `fdatasync` that follow. A store error
    /// refuses too: an unconfirmed lease is not held.
    fn confirm(&self, store: &dyn Store) -> Result<(), String> {
        let mut cur = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let lost = || {
            format!(
                "run {}: this driver no longer holds the run's lease (another driver took the run over while this one stalled); none of its events were appended",
                self.run
            )
        };
        if cur.1 || !self.held.load(Ordering::SeqCst) {
            return Err(lost());
        }
        let now = charter_audit::now_ms();
        if now < self.next_ms.load(Ordering::SeqCst) {
            // Stored less than a third of its TTL ago, so it runs for two
            // thirds more (far longer than the write and `fdatasync` that
            // follow): a read confirms it as well as a renewal would. A
            // claim replaces the stored text (new token), so any claim
            // since this driver last stored it fails the comparison.
            return match store.get(LEASES, &self.run) {
                Ok(Some(stored)) if stored == cur.0 => Ok(()),
                Ok(_) => {
                    self.held.store(false, Ordering::SeqCst);
                    Err(lost())
                }
                Err(e) => Err(format!(
                    "run {}: cannot confirm the run's lease ({e}); none of its events were appended",
                    self.run
                )),
            };
        }
        let next = self.text(now).map_err(|e| e.to_string())?;
        match store.compare_and_swap(LEASES, &self.run, Some(&cur.0), Some(&next)) {
            Ok(true) => {
                cur.0 = next;
                self.next_ms.store(now + self.every(), Ordering::SeqCst);
                Ok(())
            }
            Ok(false) => {
                self.held.store(false, Ordering::SeqCst);
                Err(lost())
            }
            Err(e) => Err(format!(
                "run {}: cannot confirm the run's lease ({e}); none of its events were appended",
                self.run
            )),
        }
    }
}

/// The held leases of this process and the condvar that wakes the
/// renewer when one is added.
type Registry = (
    std::sync::Mutex<Vec<std::sync::Weak<Held>>>,
    std::sync::Condvar,
);

/// The process's lease registry; its renewer thread starts with it.
fn registry() -> &'static Registry {
    static REG: std::sync::OnceLock<&'static Registry> = std::sync::OnceLock::new();
    REG.get_or_init(|| {
        let reg: &'static Registry = Box::leak(Box::default());
        let spawned = std::thread::Builder::new()
            .name("charter-leases".into())
            .spawn(move || renew_loop(reg));
        if let Err(e) = spawned {
            tracing::error!("cannot start the lease renewer ({e}); leases expire unrenewed");
        }
        reg
    })
}

fn renew_loop(reg: &'static Registry) {
    let (list, cv) = reg;
    let mut guard = list
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        guard.retain(|w| w.strong_count() > 0);
        let now = charter_audit::now_ms();
        let live: Vec<Arc<Held>> = guard.iter().filter_map(|w| w.upgrade()).collect();
        drop(guard);
        renew_due(&live, now);
        let wait = live
            .iter()
            .map(|h| h.next_ms.load(Ordering::SeqCst).saturating_sub(now))
            .min()
            .unwrap_or(1000)
            .clamp(1, 1000);
        drop(live);
        guard = list
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        guard = cv
            .wait_timeout(guard, std::time::Duration::from_millis(wait))
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0;
    }
}

/// The most leases renewed in one call of the store.
const RENEW_AT_ONCE: usize = 1_000;

/// Renew every lease of `live` due at `now`: those of one store in one
/// call ([`Store::compare_and_swap_each`]: one round trip to a database,
/// however many runs this process drives), [`RENEW_AT_ONCE`] at a time.
fn renew_due(live: &[Arc<Held>], now: u64) {
    type Due<'a> = (Arc<dyn Store>, Vec<&'a Arc<Held>>);
    let mut by_store: Vec<Due<'_>> = Vec::new();
    for h in live
        .iter()
        .filter(|h| h.next_ms.load(Ordering::SeqCst) <= now)
    {
        let Some(store) = h.store.upgrade() else {
            continue;
        };
        match by_store.iter_mut().find(|(s, _)| Arc::ptr_eq(s, &store)) {
            Some((_, due)) => due.push(h),
            None => by_store.push((store, vec![h])),
        }
    }
    for (store, due) in &by_store {
        for chunk in due.chunks(RENEW_AT_ONCE) {
            // The time of this call, not of the loop: a slow chunk before
            // must not shorten the leases after it.
            renew_each(&**store, chunk, charter_audit::now_ms());
        }
    }
}

/// Extend each lease of `due` (all of `store`), unless released or
/// lost; a lease found taken turns [`RunLease::held`] false.
fn renew_each(store: &dyn Store, due: &[&Arc<Held>], now: u64) {
    // Each lease's lock is held until its outcome is known, so a confirm
    // never compares against a value being replaced.
    let mut renewing = Vec::with_capacity(due.len());
    for h in due {
        let cur = h
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cur.1 || !h.held.load(Ordering::SeqCst) {
            continue;
        }
        h.next_ms.store(now + h.every(), Ordering::SeqCst);
        let Ok(next) = h.text(now) else { continue };
        renewing.push((h, cur, next));
    }
    let swaps: Vec<(&str, &str, &str)> = renewing
        .iter()
        .map(|(h, cur, next)| (h.run.as_str(), cur.0.as_str(), next.as_str()))
        .collect();
    let outcome = store.compare_and_swap_each(LEASES, &swaps);
    drop(swaps);
    match outcome {
        Ok(swapped) => {
            for ((h, mut cur, next), ok) in renewing.into_iter().zip(swapped) {
                if ok {
                    cur.0 = next;
                } else {
                    tracing::error!(run = %h.run, "the run's lease was taken by another driver; this driver must stop");
                    h.held.store(false, Ordering::SeqCst);
                }
            }
        }
        Err(e) => tracing::warn!(
            leases = renewing.len(),
            "cannot renew the run leases this process holds ({e}); retrying"
        ),
    }
}

impl std::fmt::Debug for RunLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunLease")
            .field("run", &self.lease.run)
            .field("held", &self.held())
            .finish_non_exhaustive()
    }
}

impl RunLease {
    pub fn run(&self) -> &str {
        &self.lease.run
    }
    pub fn held(&self) -> bool {
        self.lease.held.load(Ordering::SeqCst)
    }

    /// Confirm (and renew) the lease now: `Err` if another driver claimed
    /// the run since this one last stored it (see `Held::confirm`).
    pub fn confirm(&self) -> Result<(), String> {
        self.lease.confirm(&*self.store)
    }

    /// [`RunLease::confirm`] as the precondition of an append of this
    /// run's events ([`charter_audit::Log::append_guarded`]): the lease
    /// must still be this driver's when the log's writer takes the batch.
    /// A driver that stalled past its lease's expiry while another claimed
    /// the run appends nothing.
    ///
    /// The guard carries the lease's token as its [`charter_audit::Fence`]:
    /// a log shared by several nodes checks the stored lease again inside
    /// the transaction that writes the batch, so a claim by another node
    /// between this check and the write still refuses it.
    pub fn fence(&self) -> charter_audit::Guard {
        let held = self.lease.clone();
        let store = self.store.clone();
        let fence = charter_audit::Fence {
            ns: LEASES.to_string(),
            key: self.lease.run.clone(),
            token: self.lease.token.clone(),
        };
        charter_audit::Guard::fenced(move || held.confirm(&*store), fence)
    }
}

impl Drop for RunLease {
    fn drop(&mut self) {
        let mut cur = self
            .lease
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cur.1 = true;
        if let Err(e) = self
            .store
            .compare_and_swap(LEASES, &self.lease.run, Some(&cur.0), None)
        {
            tracing::warn!(run = %self.lease.run, "cannot release the run's lease ({e}); it expires on its own");
        }
    }
}

static LEASE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Claim run `run` for `holder` for `ttl_ms`, renewed while the returned
/// guard lives. `Ok(None)`: another driver holds an unexpired lease on it.
pub fn claim_run(
    store: &Arc<dyn Store>,
    run: &str,
    holder: &str,
    ttl_ms: u64,
) -> Result<Option<RunLease>, IndexError> {
    let n = LEASE_COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut held = Held {
        store: Arc::downgrade(store),
        run: run.to_string(),
        holder: holder.to_string(),
        token: format!("{holder}#{n}@{}", charter_audit::now_ms()),
        ttl_ms,
        current: std::sync::Mutex::new((String::new(), false)),
        held: AtomicBool::new(true),
        next_ms: AtomicU64::new(0),
    };
    loop {
        let now = charter_audit::now_ms();
        let old = store.get(LEASES, run)?;
        if let Some(text) = &old {
            // An unreadable lease is treated as expired: it cannot name a
            // holder that could renew it.
            let live = serde_json::from_str::<Lease>(text).is_ok_and(|l| l.expires_ms > now);
            if live {
                return Ok(None);
            }
        }
        let new = held.text(now)?;
        if store.compare_and_swap(LEASES, run, old.as_deref(), Some(&new))? {
            held.current = std::sync::Mutex::new((new, false));
            held.next_ms = AtomicU64::new(now + held.every());
            break;
        }
    }
    let lease = Arc::new(held);
    let (list, cv) = registry();
    list.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(Arc::downgrade(&lease));
    cv.notify_one();
    Ok(Some(RunLease {
        store: store.clone(),
        lease,
    }))
}

/// The lease on `run`, if one is recorded (expired or not).
pub fn lease(store: &dyn Store, run: &str) -> Option<Lease> {
    get_json(store, LEASES, run)
}

/// Where the nodes of a shared deployment record themselves (key: the
/// node's name).
pub const NODES: &str = "@nodes";

/// A node of a shared deployment as it recorded itself: written when its
/// host opens the log and again (`seen_ms`) at every timers' adoption
/// pass while it serves.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeRecord {
    pub node: String,
    pub hostname: String,
    pub pid: u32,
    pub started_ms: u64,
    pub seen_ms: u64,
    /// Its load when it was last seen: steps holding one of its instance
    /// slots, of `steps_capacity` (`[deployment] max_steps_in_flight`).
    #[serde(default)]
    pub steps_in_flight: u32,
    #[serde(default)]
    pub steps_capacity: u32,
}

/// A node as `charter nodes` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    #[serde(flatten)]
    pub record: NodeRecord,
    /// Seen within the last [`NODE_SILENT_MS`].
    pub alive: bool,
    /// Unexpired leases it holds (runs it drives, proposals it decides).
    pub leases: usize,
}

/// How long since a node last recorded itself before it counts as gone.
pub const NODE_SILENT_MS: u64 = 10_000;

/// Record (or refresh) node `rec`.
pub fn record_node(store: &dyn Store, rec: &NodeRecord) -> Result<(), IndexError> {
    let text = serde_json::to_string(rec).map_err(|source| IndexError::Encode {
        what: "a node record".into(),
        source,
    })?;
    store.set(NODES, &rec.node, &text)?;
    Ok(())
}

/// Every recorded node at `now_ms`, by name, with the unexpired leases
/// each holds.
pub fn nodes(store: &dyn Store, now_ms: u64) -> Result<Vec<NodeView>, IndexError> {
    let leases: Vec<Lease> = store
        .scan(LEASES)?
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_str::<Lease>(&v).ok())
        .filter(|l| l.expires_ms > now_ms)
        .collect();
    let mut out = vec![];
    for (_, v) in store.scan(NODES)? {
        let Ok(record) = serde_json::from_str::<NodeRecord>(&v) else {
            continue;
        };
        let mine = format!("{} ", node_holder_prefix(&record.node));
        out.push(NodeView {
            alive: record.seen_ms + NODE_SILENT_MS > now_ms,
            leases: leases
                .iter()
                .filter(|l| l.holder.starts_with(&mine))
                .count(),
            record,
        });
    }
    Ok(out)
}

/// How the holder of a lease taken by node `node` begins (a holder is
/// `node NAME pid P host N`).
pub fn node_holder_prefix(node: &str) -> String {
    format!("node {node}")
}

/// Drop the leases held by node `node` (its process died: opening the
/// shared log took the node's name, one process per name), and those of
/// a holder that names no node (a single writer of an older version,
/// which cannot be running beside a node). Other nodes' leases stay until
/// they expire or are released.
pub fn clear_leases_of_node(store: &dyn Store, node: &str) -> Result<(), IndexError> {
    let mine = format!("{} ", node_holder_prefix(node));
    for (k, v) in store.scan(LEASES)? {
        let holder = serde_json::from_str::<Lease>(&v).map(|l| l.holder).ok();
        let clear = holder.is_none_or(|h| h.starts_with(&mine) || !h.starts_with("node "));
        // Only the lease as read: another node may have claimed it since
        // (an expired lease of this node's is anyone's to take).
        if clear {
            store.compare_and_swap(LEASES, &k, Some(&v), None)?;
        }
    }
    Ok(())
}

/// Drop every recorded lease. Only for a store this process has to itself
/// (the data directory's own, under its lock): a lease in it can only be
/// a dead process's.
pub fn clear_leases(store: &dyn Store) -> Result<(), IndexError> {
    let mut b = Batch::default();
    for (k, _) in store.scan(LEASES)? {
        b.delete(LEASES, &k);
    }
    store.commit(&b)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The index's conformance suite, run against sled and the memory
    //! store: atomic apply, refused gaps, the per-run index, leases; and
    //! the host's stop-and-re-apply on a failing store.

    use std::sync::Mutex;

    use charter_store::{MemStore, SledStore};
    use serde_json::{Value, json};

    use super::*;

    fn ev(v: Value) -> Event {
        serde_json::from_value(v).unwrap()
    }

    fn recs(events: Vec<Event>) -> Vec<Record> {
        let n = events.len();
        events
            .into_iter()
            .enumerate()
            .map(|(i, event)| Record {
                seq: i as u64 + 1,
                time_ms: 1,
                end: i + 1 == n,
                event,
            })
            .collect()
    }

    fn jref(run: &str, seq: u64) -> Value {
        json!({"run": run, "step": "s", "attempt": 1, "seq": seq})
    }

    /// Two runs' events interleaved with unrelated ones, and hostile run
    /// ids that share characters with `r1`.
    fn history() -> Vec<Event> {
        let started = |run: &str| {
            ev(json!({"type": "run-started", "run": run, "workflow": "w",
                "workflow_digest": "sha256:00", "input": {}, "first": "s"}))
        };
        let call = |id: &str, run: &str| {
            ev(
                json!({"type": "call", "call": id, "plugin": "p", "digest": "d",
                "function": "f", "args_digest": "a", "args": {}, "decision": "allow",
                "policies": [], "reason": null, "initiator": null, "journal": jref(run, 1)}),
            )
        };
        let result = |id: &str| {
            ev(
                json!({"type": "call-result", "call": id, "plugin": "p", "function": "f",
                "ok": true, "summary": "", "duration_us": 1, "proposal": null, "result": 1}),
            )
        };
        vec![
            started("r1"),
            started("r1/x"),
            started("1:r1"),
            ev(json!({"type": "kv-write", "plugin": "p", "key": "k", "value": "v"})),
            call("c1", "r1"),
            call("c2", "r1/x"),
            result("c2"),
            result("c1"),
            ev(
                json!({"type": "proposal", "id": "P1", "call": "c3", "plugin": "p",
                "digest": "d", "function": "f", "args": {}, "args_digest": "a",
                "rationale": null, "policies": [], "approver_role": "x",
                "approvals_needed": 1, "expires_at_ms": 9, "initiator": null,
                "owner": null, "journal": jref("r1", 2)}),
            ),
            ev(
                json!({"type": "approval-decision", "proposal": "P1", "by": "ann",
                "approve": true, "comment": null, "accepted": true, "reason": null}),
            ),
            ev(json!({"type": "proposal-resolved", "proposal": "P1",
                "status": "approved", "detail": null})),
            ev(
                json!({"type": "step-attempt", "run": "r1", "step": "s", "attempt": 1,
                "plugin": "p", "input": {}, "outcome": "ok", "duration_us": 1}),
            ),
            ev(json!({"type": "run-finished", "run": "1:r1", "status": "completed"})),
        ]
    }

    /// A store whose commits fail while `fail` is set.
    #[derive(Default)]
    struct Flaky<S> {
        inner: S,
        fail: Mutex<bool>,
    }

    impl<S: Store> Store for Flaky<S> {
        fn get(&self, ns: &str, key: &str) -> Result<Option<String>, StoreError> {
            self.inner.get(ns, key)
        }
        fn set(&self, ns: &str, key: &str, value: &str) -> Result<(), StoreError> {
            self.inner.set(ns, key, value)
        }
        fn delete(&self, ns: &str, key: &str) -> Result<bool, StoreError> {
            self.inner.delete(ns, key)
        }
        fn list(&self, ns: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
            self.inner.list(ns, prefix)
        }
        fn scan(&self, ns: &str) -> Result<Vec<(String, String)>, StoreError> {
            self.inner.scan(ns)
        }
        fn scan_prefix(&self, ns: &str, p: &str) -> Result<Vec<(String, String)>, StoreError> {
            self.inner.scan_prefix(ns, p)
        }
        fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
            if *self.fail.lock().unwrap() {
                return Err(StoreError::Refused("disk full (injected)".into()));
            }
            self.inner.commit(batch)
        }
        fn compare_and_swap(
            &self,
            ns: &str,
            key: &str,
            old: Option<&str>,
            new: Option<&str>,
        ) -> Result<bool, StoreError> {
            self.inner.compare_and_swap(ns, key, old, new)
        }
        fn flush(&self) -> Result<(), StoreError> {
            self.inner.flush()
        }
    }

    fn conformance<S: Store + 'static>(inner: S) {
        let store = Flaky {
            inner,
            fail: Mutex::new(false),
        };
        // Through the IndexStore trait: what a backend offers.
        assert_eq!(store.prepare_index().unwrap(), 0);
        let rs = recs(history());
        let at: Vec<u64> = rs.iter().map(|r| 1000 + r.seq).collect();
        // A failed commit applies nothing, not even applied_seq.
        *store.fail.lock().unwrap() = true;
        let err = apply(&store, &rs[..6], &at[..6]).unwrap_err();
        assert!(matches!(err, IndexError::Store(_)), "{err}");
        assert_eq!(applied_seq(&store), 0);
        assert_eq!(store.get("p", "k").unwrap(), None);
        assert!(run_positions(&store, "r1").unwrap().is_empty());
        *store.fail.lock().unwrap() = false;
        // Records that do not follow applied_seq are refused.
        let err = apply(&store, &rs[2..6], &at[2..6]).unwrap_err();
        assert!(
            matches!(err, IndexError::Gap { applied: 0, got: 3 }),
            "{err}"
        );
        store
            .apply_records(&rs[..6], &at[..6], &|_, _| None)
            .unwrap();
        assert_eq!(store.applied().unwrap(), 6);
        assert_eq!(store.get("p", "k").unwrap().as_deref(), Some("v"));
        let err = apply(&store, &rs[5..], &at[5..]).unwrap_err();
        assert!(
            matches!(err, IndexError::Gap { applied: 6, got: 6 }),
            "{err}"
        );
        // A node of a shared log catching up from an older read passes
        // over what another node applied meanwhile; a real gap is still
        // refused.
        let mut cache = RunCache::default();
        let err =
            apply_cached_skipping_applied(&store, &rs[7..], &at[7..], &|_, _| None, &mut cache)
                .unwrap_err();
        assert!(
            matches!(err, IndexError::Gap { applied: 6, got: 8 }),
            "{err}"
        );
        apply_cached_skipping_applied(&store, &rs[3..6], &at[3..6], &|_, _| None, &mut cache)
            .unwrap();
        assert_eq!(applied_seq(&store), 6, "nothing new: nothing applied");
        apply(&store, &rs[6..], &at[6..]).unwrap();
        assert_eq!(applied_seq(&store), 13);
        assert_eq!(
            store.get(META, "applied_at").unwrap().as_deref(),
            Some("1013")
        );
        // The per-run index: r1's own events, its call's result, its
        // proposal and the decisions on it; nothing of the look-alikes.
        let seqs = |run: &str| -> Vec<u64> {
            store
                .positions_of_run(run)
                .unwrap()
                .into_iter()
                .map(|(s, a)| {
                    assert_eq!(a, 1000 + s);
                    s
                })
                .collect()
        };
        assert_eq!(seqs("r1"), vec![1, 5, 8, 9, 10, 11, 12]);
        assert_eq!(seqs("r1/x"), vec![2, 6, 7]);
        assert_eq!(seqs("1:r1"), vec![3, 13]);
        assert!(seqs("r").is_empty() && seqs("").is_empty() && seqs("r1/").is_empty());
        // Packed per run: one key per run, and a call's entry in
        // CALL_RUNS goes with its result.
        assert_eq!(store.scan(RUN_EVENTS).unwrap().len(), 3);
        assert!(store.scan(CALL_RUNS).unwrap().is_empty());
        // Run state and proposals as before.
        let run: RunState = get_json(&store, RUNS, "r1").unwrap();
        assert_eq!(run.history.len(), 1);
        let p = proposal(&store, "P1").unwrap();
        assert_eq!((p.status.as_str(), p.approvals.len()), ("approved", 1));
        // A store of an older index version is re-applied from the start,
        // its per-run entries (version 2 kept one key per event) and call
        // entries cleared first.
        store.set(META, "index_version", "2").unwrap();
        store
            .set(RUN_EVENTS, "2:r1/00000000000000000007", "1")
            .unwrap();
        store.set(CALL_RUNS, "stale", "r1").unwrap();
        assert_eq!(prepare(&store).unwrap(), 0);
        assert!(store.scan(RUN_EVENTS).unwrap().is_empty());
        assert!(store.scan(CALL_RUNS).unwrap().is_empty());
        apply(&store, &rs, &at).unwrap();
        assert_eq!(seqs("r1"), vec![1, 5, 8, 9, 10, 11, 12]);
        assert_eq!(prepare(&store).unwrap(), 13);
        damaged_values(&store);
        long_run(&store);
        leases(Arc::new(store));
    }

    /// Damaged per-run values are errors, never other positions; the
    /// store ends as it began.
    fn damaged_values(store: &dyn Store) {
        let seqs = |run: &str| -> Vec<u64> {
            run_positions(store, run)
                .unwrap()
                .into_iter()
                .map(|(s, _)| s)
                .collect()
        };
        for bad in ["1@x", "1@2,,3@4", "1@2@3", "-1@2", "1@2,1@3"] {
            let was = store.get(RUN_EVENTS, "2:r1").unwrap().unwrap();
            store.set(RUN_EVENTS, "2:r1", bad).unwrap();
            let err = run_positions(store, "r1");
            assert!(
                matches!(err, Err(IndexError::Mismatch(_))),
                "{bad}: {err:?}"
            );
            store.set(RUN_EVENTS, "2:r1", &was).unwrap();
        }
        // A chunk whose key does not name its first seq, or that repeats
        // a seq, is refused.
        store
            .set(RUN_EVENTS, "2:r1/00000000000000000004", "5@1005")
            .unwrap();
        assert!(matches!(
            run_positions(store, "r1"),
            Err(IndexError::Mismatch(_))
        ));
        store
            .set(RUN_EVENTS, "2:r1/00000000000000000005", "5@1005")
            .unwrap();
        store
            .delete(RUN_EVENTS, "2:r1/00000000000000000004")
            .unwrap();
        assert!(matches!(
            run_positions(store, "r1"),
            Err(IndexError::Mismatch(_))
        ));
        store
            .delete(RUN_EVENTS, "2:r1/00000000000000000005")
            .unwrap();
        assert_eq!(seqs("r1"), vec![1, 5, 8, 9, 10, 11, 12]);
    }

    /// A run longer than a chunk: every entry, in order, across chunks
    /// written by applies of every size; its keys stay a handful.
    fn long_run(store: &dyn Store) {
        let first = applied_seq(store) + 1;
        let n = 3 * RUN_EVENTS_CHUNK as u64 + 7;
        let mut events = vec![ev(json!({"type": "run-started", "run": "long",
            "workflow": "w", "workflow_digest": "sha256:00", "input": {}, "first": "s"}))];
        for _ in 1..n {
            events.push(ev(
                json!({"type": "step-attempt", "run": "long", "step": "s",
                "attempt": 1, "plugin": "p", "input": {}, "outcome": "failed",
                "duration_us": 1}),
            ));
        }
        let rs: Vec<Record> = recs(events)
            .into_iter()
            .map(|mut r| {
                r.seq += first - 1;
                r
            })
            .collect();
        let mut i = 0;
        for size in [1, 300, 2, RUN_EVENTS_CHUNK, 1, 500].into_iter().cycle() {
            if i >= rs.len() {
                break;
            }
            let end = (i + size).min(rs.len());
            let at: Vec<u64> = rs[i..end].iter().map(|r| 7 * r.seq).collect();
            apply(store, &rs[i..end], &at).unwrap();
            i = end;
        }
        let got = run_positions(store, "long").unwrap();
        let want: Vec<(u64, u64)> = rs.iter().map(|r| (r.seq, 7 * r.seq)).collect();
        assert_eq!(got, want);
        let keys = store.scan_prefix(RUN_EVENTS, "4:long").unwrap();
        assert_eq!(
            keys.len(),
            4,
            "{:?}",
            keys.iter().map(|k| &k.0).collect::<Vec<_>>()
        );
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// The lease part of the suite. (Long: one lease's life, claim to
    /// takeover to fence, told in order against one store.)
    fn leases(store: Arc<dyn Store>) {
        let a = claim_run(&store, "r1", "A", 60_000).unwrap().unwrap();
        assert!(a.held());
        assert!(
            claim_run(&store, "r1", "B", 60_000).unwrap().is_none(),
            "a second driver cannot take a held run"
        );
        assert!(claim_run(&store, "r2", "B", 60_000).unwrap().is_some());
        assert_eq!(lease(&*store, "r1").unwrap().holder, "A");
        drop(a);
        assert!(
            lease(&*store, "r1").is_none(),
            "dropping the guard releases"
        );
        let b = claim_run(&store, "r1", "B", 60_000).unwrap().unwrap();
        drop(b);
        // An expired lease (its holder died) is taken over.
        let dead = Lease {
            holder: "dead".into(),
            token: "t".into(),
            expires_ms: 1,
        };
        store
            .set(LEASES, "r1", &serde_json::to_string(&dead).unwrap())
            .unwrap();
        let c = claim_run(&store, "r1", "C", 30).unwrap().unwrap();
        // A holder that stalled past its expiry and lost the lease learns
        // it at its next renewal.
        let taker = Lease {
            holder: "D".into(),
            token: "u".into(),
            expires_ms: u64::MAX,
        };
        store
            .set(LEASES, "r1", &serde_json::to_string(&taker).unwrap())
            .unwrap();
        // Its late append is fenced: refused at the write, nothing of it
        // in the log, whether or not its renewer noticed yet.
        {
            use charter_audit::Log;
            let disk = charter_audit::MemDisk::default();
            let log = charter_audit::MemLog::open(&disk).unwrap();
            let late = Event::RunFinished {
                auth: None,
                run: "r1".into(),
                status: "completed".into(),
                output: None,
                error: None,
                by: None,
            };
            let refused = block_on(log.append_guarded(vec![late], c.fence()));
            match refused {
                Err(charter_audit::LogError::Refused(e)) => {
                    assert!(e.contains("no longer holds the run's lease"), "{e}")
                }
                other => panic!("a lost lease's append went through: {other:?}"),
            }
            assert_eq!(log.last_seq(), 0);
            assert!(c.confirm().is_err() && !c.held());
        }
        let t0 = std::time::Instant::now();
        while c.held() && t0.elapsed() < std::time::Duration::from_secs(5) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!c.held());
        drop(c);
        assert_eq!(
            lease(&*store, "r1").unwrap().holder,
            "D",
            "a guard never releases a lease it lost"
        );
        // A fresh lease (confirmed by reading it back, not renewed) that
        // another driver's claim replaced refuses the append all the same.
        let fresh = claim_run(&store, "r3", "E", 60_000).unwrap().unwrap();
        assert!(fresh.confirm().is_ok());
        let taken = lease(&*store, "r3").unwrap();
        store
            .set(
                LEASES,
                "r3",
                &serde_json::to_string(&Lease {
                    holder: "F".into(),
                    token: "v".into(),
                    ..taken
                })
                .unwrap(),
            )
            .unwrap();
        {
            use charter_audit::Log;
            let disk = charter_audit::MemDisk::default();
            let log = charter_audit::MemLog::open(&disk).unwrap();
            let late = Event::RunFinished {
                auth: None,
                run: "r3".into(),
                status: "completed".into(),
                output: None,
                error: None,
                by: None,
            };
            assert!(matches!(
                block_on(log.append_guarded(vec![late], fresh.fence())),
                Err(charter_audit::LogError::Refused(_))
            ));
            assert_eq!(log.last_seq(), 0);
            assert!(!fresh.held());
        }
        drop(fresh);
        assert_eq!(lease(&*store, "r3").unwrap().holder, "F");
        clear_leases(&*store).unwrap();
        assert!(lease(&*store, "r1").is_none() && lease(&*store, "r2").is_none());
    }

    /// The renewer keeps every held lease alive, all of a store's leases
    /// in one call; a lease another driver took turns that one guard's
    /// `held` false and leaves the others held.
    #[test]
    fn the_renewer_renews_every_lease_and_notices_one_taken() {
        let store: Arc<dyn Store> = Arc::new(MemStore::default());
        let ttl = 90;
        let guards: Vec<_> = (0..5)
            .map(|i| {
                claim_run(&store, &format!("k{i}"), "A", ttl)
                    .unwrap()
                    .unwrap()
            })
            .collect();
        let first: Vec<u64> = (0..5)
            .map(|i| lease(&*store, &format!("k{i}")).unwrap().expires_ms)
            .collect();
        // Past three TTLs: each was renewed (its expiry moved on), and is
        // still this holder's. (Not "unexpired now": a loaded machine may
        // starve the renewer for a TTL; no one else claims here.)
        std::thread::sleep(std::time::Duration::from_millis(3 * ttl));
        for (i, g) in guards.iter().enumerate() {
            assert!(g.held(), "lease {i} lost");
            let l = lease(&*store, &format!("k{i}")).unwrap();
            assert!(l.expires_ms > first[i], "lease {i} never renewed");
            assert_eq!(l.holder, "A");
        }
        let taker = Lease {
            holder: "B".into(),
            token: "b".into(),
            expires_ms: u64::MAX,
        };
        store
            .set(LEASES, "k2", &serde_json::to_string(&taker).unwrap())
            .unwrap();
        let t0 = std::time::Instant::now();
        while guards[2].held() && t0.elapsed() < std::time::Duration::from_secs(5) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!guards[2].held(), "the renewer did not notice the takeover");
        for i in [0, 1, 3, 4] {
            assert!(guards[i].held(), "lease {i} lost with another");
        }
        drop(guards);
        assert_eq!(lease(&*store, "k2").unwrap().holder, "B");
        assert!(lease(&*store, "k0").is_none(), "released on drop");
    }

    /// A run state kept decoded across applies is used only while the
    /// stored text is the one it came from: a write by anyone else wins.
    #[test]
    fn the_run_cache_never_hides_another_writer() {
        let store = MemStore::default();
        let mut cache = RunCache::default();
        let attempt = |n: u32| {
            ev(
                json!({"type": "step-attempt", "run": "r1", "step": "s", "attempt": n,
                "plugin": "p", "input": {}, "outcome": "failed", "error": "x",
                "failure": "retryable", "retry_at_ms": 5, "duration_us": 1}),
            )
        };
        let started = ev(json!({"type": "run-started", "run": "r1", "workflow": "w",
            "workflow_digest": "sha256:00", "input": {}, "first": "s"}));
        let mut all = recs(vec![started, attempt(1), attempt(2), attempt(3)]);
        for r in &mut all {
            r.end = true;
        }
        let none = &|_: &str, _: &str| None;
        apply_cached(&store, &all[..2], &[1, 2], none, &mut cache).unwrap();
        let st: RunState = get_json(&store, RUNS, "r1").unwrap();
        assert_eq!((st.attempt, cache.runs.len()), (1, 1));
        // Someone else rewrites the run's row: the cached state is stale.
        let mut other = st.clone();
        other.retries = 40;
        store
            .set(RUNS, "r1", &serde_json::to_string(&other).unwrap())
            .unwrap();
        apply_cached(&store, &all[2..3], &[3], none, &mut cache).unwrap();
        let st: RunState = get_json(&store, RUNS, "r1").unwrap();
        assert_eq!(st.attempt, 2);
        assert!(st.retries >= 40, "the other writer's state was lost");
        // Unchanged since: the cached state is the stored one.
        apply_cached(&store, &all[3..], &[4], none, &mut cache).unwrap();
        let cached: RunState = get_json(&store, RUNS, "r1").unwrap();
        assert_eq!(cached.attempt, 3);
        assert!(cached.retries >= 40);
    }

    /// An executed proposal's result is kept in its index entry (what its
    /// agent polls, without reading the log), and the entry still agrees
    /// with the log's fold of the proposal, which has no result.
    #[test]
    fn an_executed_proposal_keeps_its_result_and_agrees_with_the_log() {
        let store = MemStore::default();
        let history = vec![
            ev(
                json!({"type": "proposal", "id": "P9", "call": "c9", "plugin": "p",
                "digest": "d", "function": "f", "args": {}, "args_digest": "a",
                "rationale": null, "policies": [], "approver_role": "x",
                "approvals_needed": 1, "expires_at_ms": 9, "initiator": "agent:a",
                "owner": null}),
            ),
            ev(
                json!({"type": "call-result", "call": "c9", "plugin": "p", "function": "f",
                "ok": true, "summary": "", "duration_us": 1, "proposal": "P9",
                "result": [{"refund": "R-1"}]}),
            ),
            ev(json!({"type": "proposal-resolved", "proposal": "P9",
                "status": "executed", "detail": null})),
        ];
        let all = recs(history);
        apply(&store, &all, &[]).unwrap();
        let p = proposal(&store, "P9").unwrap();
        assert_eq!(p.result, Some(json!({"refund": "R-1"})));
        // Its outcome too, for `proposals show`: the call-result's seq.
        assert_eq!(
            p.execution,
            Some(ProposalExecution {
                seq: all[1].seq,
                ok: true,
                summary: String::new()
            })
        );
        let logged = ProposalState::from_log(&all, "P9").unwrap();
        assert_eq!(logged.result, None);
        assert!(p.agrees_with(&logged));
        let mut forged = p.clone();
        forged.args = json!({"amount": 1});
        assert!(
            !forged.agrees_with(&logged),
            "what was proposed still counts"
        );
    }

    /// A failed execution is kept as the outcome `proposals show` prints,
    /// with no result; a later result naming the proposal (a retry after
    /// a crash) does not replace the first outcome, as the log's first
    /// record is the one shown.
    #[test]
    fn a_failed_execution_is_kept_as_the_first_outcome() {
        let store = MemStore::default();
        let proposal_ev = json!({"type": "proposal", "id": "P8", "call": "c8", "plugin": "p",
            "digest": "d", "function": "f", "args": {}, "args_digest": "a",
            "rationale": null, "policies": [], "approver_role": "x",
            "approvals_needed": 1, "expires_at_ms": 9, "initiator": null, "owner": null});
        let result = |ok: bool, summary: &str| {
            ev(
                json!({"type": "call-result", "call": "c8", "plugin": "p", "function": "f",
                "ok": ok, "summary": summary, "duration_us": 1, "proposal": "P8",
                "result": null}),
            )
        };
        let all = recs(vec![
            ev(proposal_ev),
            result(false, "connector refused"),
            result(true, "later"),
        ]);
        apply(&store, &all, &[]).unwrap();
        let p = proposal(&store, "P8").unwrap();
        let e = p.execution.expect("execution");
        assert_eq!(
            (e.seq, e.ok, e.summary.as_str()),
            (all[1].seq, false, "connector refused")
        );
    }

    /// Ended runs move to the store's archive as they accumulate; every
    /// run's state and per-run events then read exactly as a store that
    /// keeps everything live has them, before and after a reopen, and an
    /// event for an archived run brings it back live, merged.
    #[test]
    fn ended_runs_move_to_the_archive_and_read_as_before() {
        let run = |id: &str, end: bool| {
            let mut v = vec![
                ev(json!({"type": "run-started", "run": id, "workflow": "w",
                    "workflow_digest": "sha256:00", "input": {}, "first": "s"})),
                ev(
                    json!({"type": "step-attempt", "run": id, "step": "s", "attempt": 1,
                    "plugin": "p", "input": {}, "outcome": "ok", "duration_us": 1}),
                ),
            ];
            if end {
                v.push(ev(
                    json!({"type": "run-finished", "run": id, "status": "completed"}),
                ));
            }
            v
        };
        let mut events = run("live", false);
        let ids: Vec<String> = (0..9).map(|i| format!("r{i}")).collect();
        for id in &ids {
            events.extend(run(id, true));
        }
        // A late event for a run archived by then.
        events.push(ev(
            json!({"type": "step-attempt", "run": "r0", "step": "s", "attempt": 2,
            "plugin": "p", "input": {}, "outcome": "ok", "duration_us": 1}),
        ));
        let rs = recs(events);
        let at: Vec<u64> = rs.iter().map(|r| 1000 + r.seq).collect();
        let dir = tempfile::tempdir().unwrap();
        let sled = SledStore::open(dir.path()).unwrap();
        let mem = MemStore::default();
        prepare(&sled).unwrap();
        prepare(&mem).unwrap();
        let mut cache = RunCache::archiving_after(2);
        // One apply per run, as a host's group commits would.
        for (chunk, pos) in rs.chunks(3).zip(at.chunks(3)) {
            apply_cached(&sled, chunk, pos, &|_, _| None, &mut cache).unwrap();
        }
        apply(&mem, &rs, &at).unwrap();
        assert!(!sled.segment_files().is_empty());
        let live: Vec<String> = sled
            .scan_live(RUNS)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert!(live.len() <= 4, "ended runs stay live: {live:?}");
        assert!(live.contains(&"live".to_string()) && live.contains(&"r0".to_string()));
        let same = |s: &dyn Store| {
            for id in ids.iter().map(String::as_str).chain(["live"]) {
                assert_eq!(
                    run_positions(s, id).unwrap(),
                    run_positions(&mem, id).unwrap(),
                    "{id}"
                );
                assert_eq!(s.get(RUNS, id).unwrap(), mem.get(RUNS, id).unwrap(), "{id}");
            }
            assert_eq!(s.scan(RUNS).unwrap(), mem.scan(RUNS).unwrap());
        };
        same(&sled);
        assert_eq!(run_positions(&sled, "r0").unwrap().len(), 4);
        let unended: Vec<String> = mem
            .scan(RUNS)
            .unwrap()
            .into_iter()
            .filter(|(_, v)| {
                !serde_json::from_str::<RunState>(v)
                    .unwrap()
                    .status
                    .is_terminal()
            })
            .map(|(k, _)| k)
            .collect();
        let live_keys = |s: &SledStore| -> Vec<String> {
            s.scan_live(RUNS)
                .unwrap()
                .into_iter()
                .map(|(k, _)| k)
                .collect()
        };
        // A run that goes on (r0, after its late event) is never archived:
        // start-up finds the runs to resume in the live store alone.
        assert!(unended.contains(&"r0".to_string()), "{unended:?}");
        assert!(unended.iter().all(|r| live_keys(&sled).contains(r)));
        // What is left moves at the next start; the answers stay the same.
        assert!(archive_ended_live(&sled).unwrap() >= 1);
        assert_eq!(
            live_keys(&sled),
            unended,
            "only runs that have not ended stay live"
        );
        same(&sled);
        sled.flush().unwrap();
        drop(sled);
        let sled = SledStore::open(dir.path()).unwrap();
        same(&sled);
    }

    /// A run that ended and then goes on again (a late event) before the
    /// archive pass stays live: start-up resumes from the live store.
    #[test]
    fn a_run_that_goes_on_again_is_not_archived() {
        let started = |id: &str| {
            ev(json!({"type": "run-started", "run": id, "workflow": "w",
                "workflow_digest": "sha256:00", "input": {}, "first": "s"}))
        };
        let finished =
            |id: &str| ev(json!({"type": "run-finished", "run": id, "status": "completed"}));
        let attempt = ev(
            json!({"type": "step-attempt", "run": "a", "step": "s", "attempt": 2,
            "plugin": "p", "input": {}, "outcome": "failed", "error": "x",
            "failure": "retryable", "retry_at_ms": 5, "duration_us": 1}),
        );
        let rs = recs(vec![
            started("a"),
            finished("a"),
            attempt,
            started("b"),
            finished("b"),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let sled = SledStore::open(dir.path()).unwrap();
        prepare(&sled).unwrap();
        let mut cache = RunCache::archiving_after(2);
        for (i, r) in rs.iter().enumerate() {
            apply_cached(
                &sled,
                std::slice::from_ref(r),
                &[i as u64],
                &|_, _| None,
                &mut cache,
            )
            .unwrap();
        }
        let a: RunState = get_json(&sled, RUNS, "a").unwrap();
        assert!(!a.status.is_terminal(), "{:?}", a.status);
        let live = || -> Vec<String> {
            sled.scan_live(RUNS)
                .unwrap()
                .into_iter()
                .map(|(k, _)| k)
                .collect()
        };
        // `a` ended and went on before a pass: it left the ended runs, so
        // the pass is not due yet, and `a` is never archived.
        assert_eq!(live(), ["a", "b"]);
        archive_ended_live(&sled).unwrap();
        assert_eq!(
            live(),
            ["a"],
            "the run that goes on stays live, the ended one moves"
        );
    }

    #[test]
    fn memory_index_passes_the_conformance_suite() {
        conformance(MemStore::default());
    }

    #[test]
    fn sled_index_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        conformance(SledStore::open(dir.path()).unwrap());
    }

    /// A failing index write stops the log with an error naming the data
    /// directory and the fix; reopening re-applies from `applied_seq`,
    /// and reads through the per-run index match a whole-log read.
    #[test]
    fn a_failed_apply_stops_the_log_and_the_next_start_re_applies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(charter_audit::LOG_FILE);
        let store = Arc::new(Flaky::<MemStore>::default());
        let open = |store: &Arc<Flaky<MemStore>>| {
            let s = store.clone();
            let d = dir.path().to_owned();
            charter_audit::EventLog::open_with(
                &path,
                prepare(&**store).unwrap(),
                Box::new(move |r, at| apply(&*s, r, at).map_err(|e| e.stop_message(&d))),
                false,
            )
        };
        let log = open(&store).unwrap();
        let events = history();
        log.append_blocking(events[..4].to_vec()).unwrap();
        *store.fail.lock().unwrap() = true;
        let err = log.append_blocking(events[4..8].to_vec()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("disk full (injected)"), "{msg}");
        assert!(
            msg.contains(&dir.path().join("state").display().to_string()),
            "{msg}"
        );
        assert!(msg.contains("Restart the host"), "{msg}");
        *store.fail.lock().unwrap() = false;
        let err = log.append_blocking(events[8..].to_vec()).unwrap_err();
        assert!(
            err.to_string().contains("disk full"),
            "stays stopped: {err}"
        );
        assert_eq!(applied_seq(&*store), 4);
        drop(log);
        let log = AnyLog::File(open(&store).unwrap());
        assert_eq!(
            applied_seq(&*store),
            8,
            "the next start re-applied the tail"
        );
        log.append_blocking(events[8..].to_vec()).unwrap();
        assert_eq!(applied_seq(&*store), 13);
        let all = charter_audit::read_records(&path).unwrap();
        for run in ["r1", "r1/x", "1:r1"] {
            let by_index: Vec<u64> = run_records(&*store, &log, run)
                .unwrap()
                .iter()
                .map(|r| r.seq)
                .collect();
            let expected = run_positions(&*store, run).unwrap();
            assert_eq!(
                by_index,
                expected.iter().map(|(s, _)| *s).collect::<Vec<_>>()
            );
            assert!(by_index.iter().all(|s| all[*s as usize - 1].seq == *s));
        }
        // A per-run entry pointing at another record is refused, never
        // returned as the run's.
        let (seq, _) = run_positions(&*store, "r1").unwrap()[1];
        let other = run_positions(&*store, "r1/x").unwrap()[0].1;
        assert!(
            repoint_run_entry(&*store, "r1", seq, other)
                .unwrap()
                .is_some()
        );
        let err = run_records(&*store, &log, "r1").unwrap_err();
        assert!(matches!(err, IndexError::Mismatch(_)), "{err}");
    }
}
