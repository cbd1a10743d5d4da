//! The durable-execution journal of one workflow step: the calls its
//! earlier attempts made, read back from the event log.
//!
//! Each audited capability call of a step attempt carries a [`JournalRef`]
//! (run, step, attempt, seq). When the step runs again (after a crash, a
//! retry or an approval), the mediator asks the journal about every call
//! before deciding it:
//! - same function and argument digest as recorded, with a recorded result
//!   of a replayable call: the recorded result is returned, nothing runs;
//! - a recorded proposal that people approved: the call executes now;
//! - a recorded proposal still pending: the step suspends again;
//! - a rejected or expired proposal: the step fails closed;
//! - a different function or different arguments at the same position:
//!   the step is non-deterministic, which fails it and escalates;
//! - nothing recorded at that position: the call is decided and executed
//!   as usual (connectors and HTTP receive the same idempotency key as any
//!   earlier attempt that reached it).

use std::collections::{BTreeMap, HashMap};

use charter_audit::{Event, JournalRef, Record, now_ms};
use serde_json::Value;

/// What the log says about one call position.
#[derive(Debug, Clone, Default)]
pub(crate) struct Entry {
    pub function: String,
    pub args_digest: String,
    /// The recorded result of a successful execution.
    pub result: Option<Value>,
    pub proposal: Option<String>,
}

/// The journal of (run, step), with the attempt about to run.
#[derive(Debug, Clone)]
pub(crate) struct Journal {
    pub run: String,
    pub step: String,
    pub attempt: u32,
    entries: BTreeMap<u64, Entry>,
    /// proposal id → (status, expires_at_ms)
    proposals: HashMap<String, (String, u64)>,
}

/// The journal's answer for one call.
#[derive(Debug)]
pub(crate) enum Check {
    /// Nothing recorded here: decide and execute as usual.
    Fresh,
    /// Return this recorded result; do not execute.
    Replay(Value),
    /// People approved this exact call: execute it.
    Approved(String),
    /// Still waiting for people.
    Pending(String),
    /// Rejected or expired: fail closed.
    Refused { proposal: String, status: String },
    /// The call differs from the record.
    Diverged(String),
}

impl Journal {
    pub fn empty(run: &str, step: &str, attempt: u32) -> Journal {
        Journal {
            run: run.to_string(),
            step: step.to_string(),
            attempt,
            entries: BTreeMap::new(),
            proposals: HashMap::new(),
        }
    }

    /// Fold the records of `run`'s step `step`.
    pub fn build<'a>(
        run: &str,
        step: &str,
        attempt: u32,
        records: impl IntoIterator<Item = &'a Record>,
    ) -> Journal {
        let mut j = Journal::empty(run, step, attempt);
        let mut by_call: HashMap<String, u64> = HashMap::new();
        let mine = |r: &JournalRef| r.run == run && r.step == step;
        for rec in records {
            match &rec.event {
                Event::Call {
                    call,
                    function,
                    args_digest,
                    journal: Some(r),
                    ..
                } if mine(r) => {
                    by_call.insert(call.clone(), r.seq);
                    let e = j.entries.entry(r.seq).or_default();
                    if e.function.is_empty() {
                        e.function = function.clone();
                        e.args_digest = args_digest.clone();
                    }
                }
                Event::CallResult {
                    call,
                    ok: true,
                    result: Some(v),
                    ..
                } => {
                    if let Some(seq) = by_call.get(call)
                        && let Some(e) = j.entries.get_mut(seq)
                        && e.result.is_none()
                    {
                        e.result = Some(v.clone());
                    }
                }
                Event::Proposal {
                    id,
                    expires_at_ms,
                    journal: Some(r),
                    ..
                } if mine(r) => {
                    if let Some(e) = j.entries.get_mut(&r.seq) {
                        e.proposal = Some(id.clone());
                    }
                    j.proposals
                        .insert(id.clone(), ("pending".into(), *expires_at_ms));
                }
                Event::ProposalResolved {
                    proposal, status, ..
                } => {
                    if let Some(p) = j.proposals.get_mut(proposal) {
                        p.0 = status.clone();
                    }
                }
                _ => {}
            }
        }
        j
    }

    pub fn jref(&self, seq: u64) -> JournalRef {
        JournalRef {
            run: self.run.clone(),
            step: self.step.clone(),
            attempt: self.attempt,
            seq,
        }
    }

    /// The journal's answer for call `seq` of `function` with `args_digest`.
    /// `replayable`: whether a recorded result may stand in for the call.
    pub fn check(&self, seq: u64, function: &str, args_digest: &str, replayable: bool) -> Check {
        let Some(e) = self.entries.get(&seq) else {
            return Check::Fresh;
        };
        if e.function != function || e.args_digest != args_digest {
            return Check::Diverged(format!(
                "call {seq} of step {} was {} with arguments {}, but this attempt called {function} with arguments {}",
                self.step,
                e.function,
                short(&e.args_digest),
                short(args_digest),
            ));
        }
        if replayable && let Some(v) = &e.result {
            return Check::Replay(v.clone());
        }
        if let Some(p) = &e.proposal {
            let (status, expires) = self
                .proposals
                .get(p)
                .cloned()
                .unwrap_or_else(|| ("pending".into(), u64::MAX));
            return match status.as_str() {
                "approved" | "executed" => Check::Approved(p.clone()),
                "pending" if now_ms() >= expires => Check::Refused {
                    proposal: p.clone(),
                    status: "expired".into(),
                },
                "pending" => Check::Pending(p.clone()),
                other => Check::Refused {
                    proposal: p.clone(),
                    status: other.to_string(),
                },
            };
        }
        Check::Fresh
    }
}

fn short(d: &str) -> &str {
    &d[..d.len().min(19)]
}
