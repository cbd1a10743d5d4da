//! The framework's KPIs, computed from the event log alone.

use std::collections::{BTreeMap, HashMap, HashSet};

use charter_audit::{Decision, Event, Record};
use serde::{Deserialize, Serialize};

pub mod agents;
pub mod framework;
pub mod series;

pub use series::{Bucket, KpiSeries, MAX_BUCKETS};

/// Calls of one function, by decision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallCounts {
    /// Allowed.
    pub allowed: u64,
    /// Routed to people.
    pub proposed: u64,
    /// Denied.
    pub denied: u64,
}

/// Proposals, by what became of them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProposalCounts {
    /// Made.
    pub created: u64,
    /// Approved and executed.
    pub executed: u64,
    /// Rejected.
    pub rejected: u64,
    /// Expired (counts as rejected).
    pub expired: u64,
    /// Approved, but the execution failed.
    pub failed: u64,
    /// Still waiting.
    pub pending: u64,
    /// executed / decided.
    pub acceptance_rate: Option<f64>,
    /// From proposal to resolution, milliseconds, median.
    pub decision_latency_ms_p50: Option<u64>,
    /// ... 95th percentile.
    pub decision_latency_ms_p95: Option<u64>,
}

/// Efficiency and customer figures of one workflow.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkflowKpi {
    /// Runs started.
    pub runs: u64,
    /// Completed.
    pub completed: u64,
    /// Failed.
    pub failed: u64,
    /// Cancelled.
    pub cancelled: u64,
    /// Not ended.
    pub in_progress: u64,
    /// Start to end of ended runs, milliseconds, median.
    pub cycle_time_ms_p50: Option<u64>,
    /// ... 95th percentile.
    pub cycle_time_ms_p95: Option<u64>,
    /// Attempts that ran.
    pub step_attempts: u64,
    /// Attempts that failed and were retried.
    pub retries: u64,
    /// Escalations.
    pub escalations: u64,
    /// Runs handed to people.
    pub handoffs: u64,
    /// handoffs / runs.
    pub handoff_rate: Option<f64>,
    /// Steps that failed, were retried and then succeeded.
    pub escalations_avoided: u64,
}

/// Blocked unauthorized attempts, by what blocked them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedByKind {
    /// Plugins refused at load.
    pub plugin_refused_at_load: u64,
    /// Calls denied.
    pub call_denied: u64,
    /// Refused attempts to decide a proposal.
    pub approval_refused: u64,
    /// Refused attempts to resolve an escalation.
    pub escalation_resolution_refused: u64,
    /// Requests to a running host refused because the caller was not
    /// authenticated (recorded ones and those counted in a suppression
    /// summary).
    #[serde(default)]
    pub authentication_refused: u64,
}

/// `charter kpi --json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Kpi {
    /// Entries in the log, of every type.
    pub events: u64,
    /// Plugin executions of every outcome.
    pub steps: u64,
    /// `plugin` → `function` → counts.
    pub calls: BTreeMap<String, BTreeMap<String, CallCounts>>,
    /// Proposals.
    pub proposals: ProposalCounts,
    /// The sum of `blocked_by_kind`.
    pub blocked_unauthorized_attempts: u64,
    /// Blocked attempts by kind.
    pub blocked_by_kind: BlockedByKind,
    /// Executions with no allow decision or approval behind them (target 0).
    pub unauthorized_actions_executed: u64,
    /// What each was.
    pub unauthorized_detail: Vec<String>,
    /// Per workflow.
    pub workflows: BTreeMap<String, WorkflowKpi>,
    /// Per AI agent (tool calls over MCP), see [`agents`].
    #[serde(default)]
    pub agents: BTreeMap<String, agents::AgentKpi>,
}

fn pct(v: &mut [u64], p: usize) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    // Nearest rank: the smallest value with at least p% of values at or below.
    let rank = (v.len() * p).div_ceil(100).max(1);
    Some(v[rank - 1])
}

/// The KPIs, folded from the log in one pass ([`KpiFold`] over every
/// record): what `charter kpi` reports.
pub fn compute(records: &[Record]) -> Kpi {
    let mut f = KpiFold::default();
    for r in records {
        f.add(r);
    }
    f.kpi()
}

/// The KPI fold, record by record: [`compute`] is this over the whole log,
/// and a long-running host's `/metrics` keeps one and feeds it only the
/// records appended since its last scrape, so the two agree exactly
/// (`tests::a_fold_in_pieces_is_the_fold_in_one_pass`). It keeps what ties
/// an execution back to the decision and the approvals behind it, so its
/// memory grows with the calls, proposals and runs the log holds.
#[derive(Debug, Clone, Default)]
pub struct KpiFold {
    k: Kpi,
    /// Allowed call → the digest of the arguments that were allowed.
    allowed_calls: HashMap<String, String>,
    /// Proposal → the digest of the arguments people were asked about.
    proposal_args: HashMap<String, String>,
    kv_allowance: HashMap<String, i64>,
    needed: HashMap<String, u32>,
    approvals: HashMap<String, HashSet<String>>,
    created_at: HashMap<String, u64>,
    latencies: Vec<u64>,
    /// Workflow runs: run → (workflow, start time); cycle times per workflow.
    run_wf: HashMap<String, (String, u64)>,
    cycle: HashMap<String, Vec<u64>>,
    handed: HashSet<String>,
    retried: HashSet<(String, String)>,
    /// Proposals already executed: one approval, one execution.
    executed: HashSet<String>,
    /// Per agent.
    agents: agents::AgentFold,
}

impl KpiFold {
    /// Fold one record (in log order).
    ///
    /// Long on purpose: one arm per event kind, each a few lines, sharing
    /// the maps that tie an execution back to the decision and the
    /// approvals behind it (the "unauthorized actions executed" check).
    pub fn add(&mut self, r: &Record) {
        self.agents.add(r);
        let k = &mut self.k;
        k.events += 1;
        let wf_of = |runs: &HashMap<String, (String, u64)>, run: &str| {
            runs.get(run).map(|(w, _)| w.clone())
        };
        match &r.event {
            Event::RunStarted { run, workflow, .. } => {
                self.run_wf
                    .insert(run.clone(), (workflow.clone(), r.time_ms));
                let w = k.workflows.entry(workflow.clone()).or_default();
                w.runs += 1;
                w.in_progress += 1;
            }
            Event::StepAttempt {
                run,
                step,
                outcome,
                retry_at_ms,
                proposal,
                ..
            } => {
                if let Some(wf) = wf_of(&self.run_wf, run) {
                    let w = k.workflows.entry(wf).or_default();
                    if outcome != "skipped" {
                        w.step_attempts += 1;
                    }
                    let key = (run.clone(), step.clone());
                    if retry_at_ms.is_some() {
                        w.retries += 1;
                        self.retried.insert(key.clone());
                    }
                    if outcome == "ok" && self.retried.remove(&key) {
                        w.escalations_avoided += 1;
                    }
                    if proposal.is_some() && self.handed.insert(run.clone()) {
                        w.handoffs += 1;
                    }
                }
            }
            Event::Escalated { run, .. } => {
                if let Some(wf) = wf_of(&self.run_wf, run) {
                    let w = k.workflows.entry(wf).or_default();
                    w.escalations += 1;
                    if self.handed.insert(run.clone()) {
                        w.handoffs += 1;
                    }
                }
            }
            Event::RunFinished { run, status, .. } => {
                if let Some((wf, t0)) = self.run_wf.get(run.as_str()) {
                    let w = k.workflows.entry(wf.clone()).or_default();
                    w.in_progress = w.in_progress.saturating_sub(1);
                    match status.as_str() {
                        "completed" => w.completed += 1,
                        "cancelled" => w.cancelled += 1,
                        _ => w.failed += 1,
                    }
                    self.cycle
                        .entry(wf.clone())
                        .or_default()
                        .push(r.time_ms.saturating_sub(*t0));
                }
            }
            Event::Step { .. } => k.steps += 1,
            Event::Call {
                call,
                plugin,
                function,
                decision,
                args_digest,
                ..
            } => {
                let c = k
                    .calls
                    .entry(plugin.clone())
                    .or_default()
                    .entry(function.clone())
                    .or_default();
                match decision {
                    Decision::Allow => {
                        c.allowed += 1;
                        self.allowed_calls.insert(call.clone(), args_digest.clone());
                        if function.starts_with("charter:host/kv@")
                            && (function.ends_with("#set") || function.ends_with("#delete"))
                        {
                            *self.kv_allowance.entry(plugin.clone()).or_default() += 1;
                        }
                    }
                    Decision::Propose => c.proposed += 1,
                    Decision::Deny => {
                        c.denied += 1;
                        k.blocked_by_kind.call_denied += 1;
                    }
                }
            }
            Event::PluginRefused { .. } => k.blocked_by_kind.plugin_refused_at_load += 1,
            Event::AuthRefused { .. } => k.blocked_by_kind.authentication_refused += 1,
            Event::AuthRefusalsSuppressed { count, .. } => {
                k.blocked_by_kind.authentication_refused += count
            }
            Event::EscalationResolved {
                accepted: false, ..
            } => k.blocked_by_kind.escalation_resolution_refused += 1,
            Event::ApprovalDecision {
                proposal,
                by,
                approve,
                accepted,
                ..
            } => {
                if !accepted {
                    k.blocked_by_kind.approval_refused += 1;
                } else if *approve {
                    self.approvals
                        .entry(proposal.clone())
                        .or_default()
                        .insert(by.clone());
                }
            }
            Event::Proposal {
                id,
                approvals_needed,
                args_digest,
                ..
            } => {
                self.proposal_args.insert(id.clone(), args_digest.clone());
                k.proposals.created += 1;
                self.needed.insert(id.clone(), *approvals_needed);
                self.created_at.insert(id.clone(), r.time_ms);
            }
            Event::ProposalResolved {
                proposal, status, ..
            } => {
                match status.as_str() {
                    "executed" | "approved" => k.proposals.executed += 1,
                    "rejected" | "cancelled" => k.proposals.rejected += 1,
                    "expired" => k.proposals.expired += 1,
                    _ => k.proposals.failed += 1,
                }
                if let Some(t) = self.created_at.get(proposal.as_str()) {
                    self.latencies.push(r.time_ms.saturating_sub(*t));
                }
            }
            Event::CallResult {
                call,
                plugin,
                function,
                proposal,
                ..
            } => {
                let decided = self.allowed_calls.get(call.as_str());
                let approved = match proposal {
                    None => true,
                    Some(p) => {
                        let have = self.approvals.get(p.as_str()).map_or(0, |s| s.len() as u32);
                        // People approved these arguments: an execution of
                        // any others is unauthorized, whatever it claims.
                        let same_args = self.proposal_args.get(p.as_str()) == decided;
                        same_args
                            && self.needed.get(p.as_str()).is_some_and(|n| have >= *n)
                            && self.executed.insert(p.clone())
                    }
                };
                if !(decided.is_some() && approved) {
                    k.unauthorized_actions_executed += 1;
                    k.unauthorized_detail.push(format!(
                        "seq {}: {plugin} executed {function} ({call})",
                        r.seq
                    ));
                }
            }
            Event::KvWrite {
                plugin,
                by: None,
                key,
                ..
            } => {
                let a = self.kv_allowance.entry(plugin.clone()).or_default();
                *a -= 1;
                if *a < 0 {
                    k.unauthorized_actions_executed += 1;
                    k.unauthorized_detail.push(format!(
                        "seq {}: {plugin} wrote kv {key:?} with no allowed kv call",
                        r.seq
                    ));
                    *a = 0;
                }
            }
            _ => {}
        }
    }

    /// The KPIs of what was folded so far, percentiles and all.
    pub fn kpi(&self) -> Kpi {
        let mut k = self.counts();
        let p = &mut k.proposals;
        p.decision_latency_ms_p50 = pct(&mut self.latencies.clone(), 50);
        p.decision_latency_ms_p95 = pct(&mut self.latencies.clone(), 95);
        for (name, w) in &mut k.workflows {
            if let Some(c) = self.cycle.get(name.as_str()) {
                w.cycle_time_ms_p50 = pct(&mut c.clone(), 50);
                w.cycle_time_ms_p95 = pct(&mut c.clone(), 95);
            }
        }
        k
    }

    /// [`KpiFold::kpi`] without the percentiles (left `None`), which need a
    /// sort of every latency and cycle time: what `/metrics` renders (its
    /// histograms carry the distributions), at a cost that does not grow
    /// with the log.
    pub fn counts(&self) -> Kpi {
        let mut k = self.k.clone();
        k.agents = self.agents.kpi();
        let b = &k.blocked_by_kind;
        k.blocked_unauthorized_attempts = b.plugin_refused_at_load
            + b.call_denied
            + b.approval_refused
            + b.escalation_resolution_refused
            + b.authentication_refused;
        let p = &mut k.proposals;
        p.pending = p.created - (p.executed + p.rejected + p.expired + p.failed).min(p.created);
        let decided = p.executed + p.rejected + p.expired + p.failed;
        p.acceptance_rate = (decided > 0).then(|| p.executed as f64 / decided as f64);
        for w in k.workflows.values_mut() {
            w.handoff_rate = (w.runs > 0).then(|| w.handoffs as f64 / w.runs as f64);
        }
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, event: Event) -> Record {
        Record {
            seq,
            time_ms: seq,
            end: true,
            event,
        }
    }

    /// The total of blocked attempts is broken down by what blocked them,
    /// and the kinds add up to it.
    #[test]
    fn blocked_attempts_are_broken_down_by_kind() {
        let records = vec![
            rec(
                1,
                Event::PluginRefused {
                    plugin: "p".into(),
                    digest: None,
                    rule: "ungranted".into(),
                    reasons: vec![],
                },
            ),
            rec(
                2,
                Event::PluginRefused {
                    plugin: "p".into(),
                    digest: None,
                    rule: "phase-gate".into(),
                    reasons: vec![],
                },
            ),
            rec(
                3,
                Event::Call {
                    call: "c1".into(),
                    plugin: "p".into(),
                    digest: "d".into(),
                    function: "f".into(),
                    args_digest: "a".into(),
                    args: serde_json::json!({}),
                    decision: Decision::Deny,
                    policies: vec![],
                    reason: None,
                    initiator: None,
                    journal: None,
                    request: None,
                },
            ),
            rec(
                4,
                Event::ApprovalDecision {
                    auth: None,
                    proposal: "P-1".into(),
                    by: "carol".into(),
                    approve: true,
                    comment: None,
                    accepted: false,
                    reason: Some("self-approval".into()),
                },
            ),
            rec(
                5,
                Event::EscalationResolved {
                    auth: None,
                    id: "E-1".into(),
                    run: "R-1".into(),
                    by: "mallory".into(),
                    action: "skip".into(),
                    output: None,
                    comment: None,
                    accepted: false,
                    reason: Some("no role".into()),
                    next: None,
                },
            ),
        ];
        let k = compute(&records);
        let b = &k.blocked_by_kind;
        assert_eq!(
            (
                b.plugin_refused_at_load,
                b.call_denied,
                b.approval_refused,
                b.escalation_resolution_refused
            ),
            (2, 1, 1, 1)
        );
        assert_eq!(k.blocked_unauthorized_attempts, 5);
        let v = serde_json::to_value(&k).unwrap();
        assert_eq!(v["blocked_unauthorized_attempts"], 5);
        assert_eq!(v["blocked_by_kind"]["plugin_refused_at_load"], 2);
    }

    fn ev(v: serde_json::Value) -> Event {
        serde_json::from_value(v).unwrap()
    }

    /// A history with something for every counter: runs that complete,
    /// retry and escalate, calls allowed, denied and proposed, a proposal
    /// approved and executed, one executed twice (unauthorized the second
    /// time), a kv write with no allowed call, refusals.
    pub(super) fn history() -> Vec<Record> {
        use serde_json::json;
        let call = |id: &str, decision: &str, function: &str| {
            ev(
                json!({"type": "call", "call": id, "plugin": "p", "digest": "d",
                "function": function, "args_digest": "a", "args": {},
                "decision": decision, "policies": [], "reason": null, "initiator": null}),
            )
        };
        let result = |id: &str, proposal: Option<&str>| {
            ev(
                json!({"type": "call-result", "call": id, "plugin": "p", "function": "f",
                "ok": true, "summary": "", "duration_us": 1, "proposal": proposal}),
            )
        };
        let attempt = |run: &str, outcome: &str, retry: Option<u64>| {
            ev(
                json!({"type": "step-attempt", "run": run, "step": "s", "attempt": 1,
                "plugin": "p", "input": {}, "outcome": outcome, "duration_us": 1,
                "retry_at_ms": retry}),
            )
        };
        let started = |run: &str| {
            ev(json!({"type": "run-started", "run": run, "workflow": "w",
                "workflow_digest": "sha256:00", "input": {}, "first": "s"}))
        };
        let events = vec![
            started("r1"),
            call("c1", "allow", "charter:host/kv@0.1.0#set"),
            result("c1", None),
            ev(json!({"type": "kv-write", "plugin": "p", "key": "k", "value": "v"})),
            ev(json!({"type": "kv-write", "plugin": "p", "key": "k2", "value": "v"})),
            attempt("r1", "failed", Some(5)),
            started("r2"),
            call("c2", "deny", "f"),
            call("c3", "propose", "f"),
            ev(
                json!({"type": "proposal", "id": "P1", "call": "c3", "plugin": "p",
                "digest": "d", "function": "f", "args": {}, "args_digest": "a",
                "rationale": null, "policies": [], "approver_role": "x",
                "approvals_needed": 1, "expires_at_ms": 9, "initiator": null,
                "owner": null}),
            ),
            attempt("r2", "failed", None),
            ev(
                json!({"type": "approval-decision", "proposal": "P1", "by": "eve",
                "approve": true, "comment": null, "accepted": false, "reason": "self"}),
            ),
            ev(
                json!({"type": "approval-decision", "proposal": "P1", "by": "ann",
                "approve": true, "comment": null, "accepted": true, "reason": null}),
            ),
            call("c4", "allow", "f"),
            result("c4", Some("P1")),
            result("c4", Some("P1")),
            ev(json!({"type": "proposal-resolved", "proposal": "P1",
                "status": "executed", "detail": null})),
            attempt("r1", "ok", None),
            ev(json!({"type": "run-finished", "run": "r1", "status": "completed"})),
            ev(
                json!({"type": "escalated", "id": "E1", "run": "r2", "step": "s",
                "role": "ops", "reason": "x"}),
            ),
            ev(json!({"type": "run-finished", "run": "r2", "status": "failed"})),
            ev(
                json!({"type": "step", "plugin": "p", "digest": "d", "initiator": null,
                "outcome": "ok", "error": null, "host_calls": 0, "duration_us": 5}),
            ),
        ];
        events
            .into_iter()
            .enumerate()
            .map(|(i, event)| rec(i as u64 + 1, event))
            .collect()
    }

    /// What `/metrics` does (keep a fold, feed it what arrived since the
    /// last scrape) gives exactly what `charter kpi` computes over the
    /// whole log, wherever the scrapes fall.
    #[test]
    fn a_fold_in_pieces_is_the_fold_in_one_pass() {
        let records = history();
        let whole = compute(&records);
        // The history reaches every counter it is meant to.
        assert_eq!(whole.unauthorized_actions_executed, 2, "{whole:?}");
        assert_eq!(whole.blocked_by_kind.approval_refused, 1);
        assert_eq!(whole.blocked_by_kind.call_denied, 1);
        assert_eq!(whole.proposals.executed, 1);
        let w = &whole.workflows["w"];
        assert_eq!((w.runs, w.completed, w.failed, w.retries), (2, 1, 1, 1));
        assert_eq!((w.escalations, w.escalations_avoided), (1, 1));
        assert!(w.cycle_time_ms_p50.is_some());
        for a in 0..=records.len() {
            for b in a..=records.len() {
                let mut f = KpiFold::default();
                for part in [&records[..a], &records[a..b], &records[b..]] {
                    for r in part {
                        f.add(r);
                    }
                    // A scrape between the parts reads, never changes.
                    let _ = f.counts();
                }
                assert_eq!(f.kpi(), whole, "split at {a} and {b}");
                let mut counts = whole.clone();
                counts.proposals.decision_latency_ms_p50 = None;
                counts.proposals.decision_latency_ms_p95 = None;
                for w in counts.workflows.values_mut() {
                    w.cycle_time_ms_p50 = None;
                    w.cycle_time_ms_p95 = None;
                }
                assert_eq!(f.counts(), counts);
            }
        }
    }
}
