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
    /// Outbound HTTP: the digest of the whole request that was sent.
    pub request: Option<String>,
}

/// The journal of (run, step), with the attempt about to run.
#[derive(Debug, Clone)]
pub(crate) struct Journal {
    pub run: String,
    pub step: String,
    pub attempt: u32,
    entries: BTreeMap<u64, Entry>,
    /// proposal id → (status, expires_at_ms, plugin digest)
    proposals: HashMap<String, (String, u64, String)>,
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
                    request,
                    ..
                } if mine(r) => {
                    by_call.insert(call.clone(), r.seq);
                    let e = j.entries.entry(r.seq).or_default();
                    if e.function.is_empty() {
                        e.function = function.clone();
                        e.args_digest = args_digest.clone();
                    }
                    if e.request.is_none() {
                        e.request = request.clone();
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
                    digest,
                    journal: Some(r),
                    ..
                } if mine(r) => {
                    if let Some(e) = j.entries.get_mut(&r.seq) {
                        e.proposal = Some(id.clone());
                    }
                    j.proposals.insert(
                        id.clone(),
                        ("pending".into(), *expires_at_ms, digest.clone()),
                    );
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

    /// The digest of the whole outbound request recorded at `seq`, if one
    /// was sent there.
    pub fn request_digest(&self, seq: u64) -> Option<String> {
        self.entries.get(&seq).and_then(|e| e.request.clone())
    }

    pub fn jref(&self, seq: u64) -> JournalRef {
        JournalRef {
            run: self.run.clone(),
            step: self.step.clone(),
            attempt: self.attempt,
            seq,
        }
    }

    /// The journal's answer for call `seq` of `function` with `args_digest`,
    /// made by plugin bytes `plugin_digest`. `replayable`: whether a
    /// recorded result may stand in for the call.
    pub fn check(
        &self,
        seq: u64,
        function: &str,
        args_digest: &str,
        plugin_digest: &str,
        replayable: bool,
    ) -> Check {
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
            let (status, expires, approved_digest) = self
                .proposals
                .get(p)
                .cloned()
                .unwrap_or_else(|| ("pending".into(), u64::MAX, String::new()));
            return match status.as_str() {
                // People approved what these plugin bytes proposed; other
                // bytes do not inherit the approval.
                "approved" | "executed" if approved_digest != plugin_digest => Check::Refused {
                    proposal: p.clone(),
                    status: format!(
                        "approved for plugin {approved_digest}, but the plugin is now {plugin_digest}; propose again"
                    ),
                },
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

#[cfg(test)]
mod tests {
    use super::*;
    use charter_audit::Decision;
    use serde_json::json;

    fn rec(seq: u64, event: Event) -> Record {
        Record {
            seq,
            time_ms: 0,
            end: true,
            event,
        }
    }

    fn jref(step: &str, seq: u64) -> Option<JournalRef> {
        Some(JournalRef {
            run: "R-1".into(),
            step: step.into(),
            attempt: 1,
            seq,
        })
    }

    fn call(id: &str, seq: u64, args: &Value) -> Event {
        Event::Call {
            call: id.into(),
            plugin: "bot".into(),
            digest: "sha256:a".into(),
            function: "acme:payments/refunds@0.1.0#issue-refund".into(),
            args_digest: charter_audit::json_digest(args),
            args: args.clone(),
            decision: Decision::Allow,
            policies: vec![],
            reason: None,
            initiator: None,
            journal: jref("s", seq),
            request: None,
        }
    }

    fn proposal(id: &str, seq: u64, expires_at_ms: u64) -> Event {
        Event::Proposal {
            id: id.into(),
            call: format!("c{seq}"),
            plugin: "bot".into(),
            digest: "sha256:a".into(),
            function: "acme:payments/refunds@0.1.0#issue-refund".into(),
            args: json!({}),
            args_digest: String::new(),
            rationale: None,
            policies: vec![],
            approver_role: None,
            approvals_needed: 1,
            expires_at_ms,
            initiator: None,
            owner: None,
            journal: jref("s", seq),
        }
    }

    #[test]
    fn every_answer_of_the_journal() {
        const F: &str = "acme:payments/refunds@0.1.0#issue-refund";
        let small = json!({"order": "S-1", "amount": 900});
        let big = json!({"order": "A-7", "amount": 200000});
        let late = json!({"order": "L-1", "amount": 300000});
        let records = vec![
            rec(1, call("c1", 1, &small)),
            rec(
                2,
                Event::CallResult {
                    call: "c1".into(),
                    plugin: "bot".into(),
                    function: F.into(),
                    ok: true,
                    summary: String::new(),
                    duration_us: 0,
                    proposal: None,
                    result: Some(json!(["R-S-1"])),
                },
            ),
            rec(3, call("c2", 2, &big)),
            rec(4, proposal("P-big", 2, u64::MAX)),
            rec(
                5,
                Event::ProposalResolved {
                    proposal: "P-big".into(),
                    status: "approved".into(),
                    detail: None,
                },
            ),
            rec(6, call("c3", 3, &late)),
            rec(7, proposal("P-late", 3, 1)),
            // Another step's call at the same position is not ours.
            rec(8, {
                let mut e = call("c9", 4, &small);
                if let Event::Call { journal, .. } = &mut e {
                    *journal = jref("other", 4);
                }
                e
            }),
        ];
        let j = Journal::build("R-1", "s", 2, &records);
        let d = |v: &Value| charter_audit::json_digest(v);
        assert!(
            matches!(j.check(1, F, &d(&small), "sha256:a", true), Check::Replay(v) if v == json!(["R-S-1"]))
        );
        assert!(matches!(
            j.check(1, F, &d(&small), "sha256:a", false),
            Check::Fresh
        ));
        assert!(matches!(
            j.check(1, F, &d(&big), "sha256:a", true),
            Check::Diverged(_)
        ));
        assert!(matches!(
            j.check(1, "other#fn", &d(&small), "sha256:a", true),
            Check::Diverged(_)
        ));
        assert!(
            matches!(j.check(2, F, &d(&big), "sha256:a", true), Check::Approved(p) if p == "P-big")
        );
        // Other plugin bytes do not inherit the approval.
        assert!(matches!(
            j.check(2, F, &d(&big), "sha256:b", true),
            Check::Refused { .. }
        ));
        assert!(
            matches!(j.check(3, F, &d(&late), "sha256:a", true), Check::Refused { status, .. } if status == "expired")
        );
        assert!(matches!(
            j.check(4, F, &d(&small), "sha256:a", true),
            Check::Fresh
        ));
        assert_eq!(j.jref(5).idempotency_key(), "charter:R-1:s:5");
    }
}
