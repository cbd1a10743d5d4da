//! The indexes derived from the event log, kept in the state store: plugin
//! kv data, proposals, workflow runs and escalations, and the last applied
//! sequence number.
//!
//! **Invariant:** the index is only ever written here, from committed
//! records in log order (the log writer calls [`apply`] after each
//! `fdatasync`, and at start-up for the tail the store has not seen). So
//! losing the store's unsynced tail loses nothing.

use charter_audit::{Event, Record};
use charter_store::Store;
use serde::{Deserialize, Serialize};

use crate::workflow::state::{ESCALATIONS, EscalationState, RUNS, RunState};

/// Namespace of proposals in the state store.
pub const PROPOSALS: &str = "@proposals";
/// Namespace of index metadata.
pub const META: &str = "@meta";

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

    /// Does the index's copy say the same as the log's?
    pub fn agrees_with(&self, logged: &ProposalState) -> bool {
        let a = serde_json::to_value(self).ok();
        let b = serde_json::to_value(logged).ok();
        a.is_some() && a == b
    }

    /// Pending but past its expiry.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.status == "pending" && now_ms >= self.expires_at_ms
    }
}

/// The last sequence number the store has applied.
pub fn applied_seq(store: &dyn Store) -> u64 {
    store
        .get(META, "applied_seq")
        .ok()
        .flatten()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

pub fn proposal(store: &dyn Store, id: &str) -> Option<ProposalState> {
    store
        .get(PROPOSALS, id)
        .ok()
        .flatten()
        .and_then(|s| serde_json::from_str(&s).ok())
}

pub fn proposals(store: &dyn Store) -> Vec<ProposalState> {
    store
        .scan(PROPOSALS)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_str(&v).ok())
        .collect()
}

fn put(store: &dyn Store, p: &ProposalState) {
    if let Ok(text) = serde_json::to_string(p) {
        let _ = store.set(PROPOSALS, &p.id, &text);
    }
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

fn put_json<T: Serialize>(
    store: &dyn Store,
    ns: &str,
    key: &str,
    v: &T,
) -> Result<(), charter_store::StoreError> {
    match serde_json::to_string(v) {
        Ok(text) => store.set(ns, key, &text),
        Err(_) => Ok(()),
    }
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

/// Apply committed records, in order (kv writes that held a secret keep
/// its `[secret:NAME]` placeholder: see [`apply_with`]).
pub fn apply(store: &dyn Store, records: &[Record]) {
    apply_with(store, records, &|_, _| None)
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

/// Apply committed records, in order. `resolve` reads a secret's value
/// (from its declared source) for kv writes recorded with the secret
/// replaced by `[secret:NAME]`, only while the writing plugin is granted
/// that secret: the store holds what the plugin wrote, the log never holds
/// the secret, and a plugin whose grant was taken away never gets the
/// (rotated) value back through its kv.
pub fn apply_with(store: &dyn Store, records: &[Record], resolve: Resolve<'_>) {
    let Some(last) = records.last() else { return };
    for r in records {
        let res = match &r.event {
            Event::KvWrite {
                plugin,
                key,
                value: Some(v),
                secrets,
                ..
            } if !secrets.is_empty() => store.set(
                plugin,
                &restore(key, plugin, secrets, resolve),
                &restore(v, plugin, secrets, resolve),
            ),
            Event::KvWrite {
                plugin,
                key,
                value: None,
                secrets,
                ..
            } if !secrets.is_empty() => store
                .delete(plugin, &restore(key, plugin, secrets, resolve))
                .map(|_| ()),
            Event::KvWrite {
                plugin,
                key,
                value: Some(v),
                ..
            } => store.set(plugin, key, v),
            Event::KvWrite {
                plugin,
                key,
                value: None,
                ..
            } => store.delete(plugin, key).map(|_| ()),
            Event::Proposal { .. } => {
                if let Some(p) = ProposalState::created(r) {
                    put(store, &p);
                }
                Ok(())
            }
            Event::ApprovalDecision {
                proposal: id,
                by,
                approve: true,
                accepted: true,
                ..
            } => {
                if let Some(mut p) = proposal(store, id)
                    && !p.approvals.contains(by)
                {
                    p.approvals.push(by.clone());
                    put(store, &p);
                }
                Ok(())
            }
            Event::ProposalResolved {
                proposal: id,
                status,
                detail,
            } => {
                if let Some(mut p) = proposal(store, id) {
                    p.status = status.clone();
                    p.detail = detail.clone();
                    put(store, &p);
                }
                Ok(())
            }
            // The configuration last recorded: a host records it again
            // only when it changed.
            Event::ConfigLoaded { digest, .. } => store.set(META, "config_digest", digest),
            Event::RunStarted { run, .. } => match RunState::start(&r.event, r.seq, r.time_ms) {
                Some(st) => put_json(store, RUNS, run, &st),
                None => Ok(()),
            },
            Event::StepAttempt { run, .. }
            | Event::Escalated { run, .. }
            | Event::EscalationResolved { run, .. }
            | Event::RunFinished { run, .. } => {
                if let Some(mut st) = get_json::<RunState>(store, RUNS, run) {
                    st.apply(&r.event, r.time_ms);
                    let _ = put_json(store, RUNS, run, &st);
                }
                match &r.event {
                    Event::Escalated { id, .. } => {
                        match EscalationState::from_event(&r.event, r.time_ms) {
                            Some(e) => put_json(store, ESCALATIONS, id, &e),
                            None => Ok(()),
                        }
                    }
                    Event::EscalationResolved {
                        id, accepted: true, ..
                    } => match get_json::<EscalationState>(store, ESCALATIONS, id) {
                        Some(mut e) => {
                            e.apply(&r.event);
                            put_json(store, ESCALATIONS, id, &e)
                        }
                        None => Ok(()),
                    },
                    _ => Ok(()),
                }
            }
            _ => Ok(()),
        };
        if let Err(e) = res {
            tracing::error!(seq = r.seq, "index: cannot apply event: {e}");
        }
    }
    let _ = store.set(META, "applied_seq", &last.seq.to_string());
}
