//! The framework's KPIs, computed from the event log alone.

use std::collections::{BTreeMap, HashMap, HashSet};

use charter_audit::{Decision, Event, Record};
use serde::{Deserialize, Serialize};

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

/// The KPIs, folded from the log in one pass.
///
/// Long on purpose: one arm per event kind, each a few lines, sharing the
/// maps that tie an execution back to the decision and the approvals behind
/// it (the "unauthorized actions executed" check); split into functions,
/// those maps would be passed around, not clarified.
pub fn compute(records: &[Record]) -> Kpi {
    let mut k = Kpi {
        events: records.len() as u64,
        ..Default::default()
    };
    // Allowed call → the digest of the arguments that were allowed.
    let mut allowed_calls: HashMap<&str, &str> = HashMap::new();
    // Proposal → the digest of the arguments people were asked about.
    let mut proposal_args: HashMap<&str, &str> = HashMap::new();
    let mut kv_allowance: HashMap<&str, i64> = HashMap::new();
    let mut needed: HashMap<&str, u32> = HashMap::new();
    let mut approvals: HashMap<&str, HashSet<&str>> = HashMap::new();
    let mut created_at: HashMap<&str, u64> = HashMap::new();
    let mut latencies = Vec::new();
    // Workflow runs: run → (workflow, start time); cycle times per workflow.
    let mut run_wf: HashMap<&str, (&str, u64)> = HashMap::new();
    let mut cycle: HashMap<&str, Vec<u64>> = HashMap::new();
    let mut handed: HashSet<&str> = HashSet::new();
    let mut retried: HashSet<(&str, &str)> = HashSet::new();
    // Proposals already executed: one approval, one execution.
    let mut executed: HashSet<&str> = HashSet::new();
    for r in records {
        let wf_of = |run: &str| run_wf.get(run).map(|(w, _)| *w);
        match &r.event {
            Event::RunStarted { run, workflow, .. } => {
                run_wf.insert(run, (workflow, r.time_ms));
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
                if let Some(wf) = wf_of(run) {
                    let w = k.workflows.entry(wf.to_string()).or_default();
                    if outcome != "skipped" {
                        w.step_attempts += 1;
                    }
                    if retry_at_ms.is_some() {
                        w.retries += 1;
                        retried.insert((run, step));
                    }
                    if outcome == "ok" && retried.remove(&(run.as_str(), step.as_str())) {
                        w.escalations_avoided += 1;
                    }
                    if proposal.is_some() && handed.insert(run) {
                        w.handoffs += 1;
                    }
                }
            }
            Event::Escalated { run, .. } => {
                if let Some(wf) = wf_of(run) {
                    let w = k.workflows.entry(wf.to_string()).or_default();
                    w.escalations += 1;
                    if handed.insert(run) {
                        w.handoffs += 1;
                    }
                }
            }
            Event::RunFinished { run, status, .. } => {
                if let Some((wf, t0)) = run_wf.get(run.as_str()).copied() {
                    let w = k.workflows.entry(wf.to_string()).or_default();
                    w.in_progress = w.in_progress.saturating_sub(1);
                    match status.as_str() {
                        "completed" => w.completed += 1,
                        "cancelled" => w.cancelled += 1,
                        _ => w.failed += 1,
                    }
                    cycle
                        .entry(wf)
                        .or_default()
                        .push(r.time_ms.saturating_sub(t0));
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
                        allowed_calls.insert(call, args_digest);
                        if function.starts_with("charter:host/kv@")
                            && (function.ends_with("#set") || function.ends_with("#delete"))
                        {
                            *kv_allowance.entry(plugin).or_default() += 1;
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
                    approvals.entry(proposal).or_default().insert(by);
                }
            }
            Event::Proposal {
                id,
                approvals_needed,
                args_digest,
                ..
            } => {
                proposal_args.insert(id, args_digest);
                k.proposals.created += 1;
                needed.insert(id, *approvals_needed);
                created_at.insert(id, r.time_ms);
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
                if let Some(t) = created_at.get(proposal.as_str()) {
                    latencies.push(r.time_ms.saturating_sub(*t));
                }
            }
            Event::CallResult {
                call,
                plugin,
                function,
                proposal,
                ..
            } => {
                let decided = allowed_calls.get(call.as_str());
                let approved = match proposal {
                    None => true,
                    Some(p) => {
                        let have = approvals.get(p.as_str()).map_or(0, |s| s.len() as u32);
                        // People approved these arguments: an execution of
                        // any others is unauthorized, whatever it claims.
                        let same_args = proposal_args.get(p.as_str()).copied() == decided.copied();
                        same_args
                            && needed.get(p.as_str()).is_some_and(|n| have >= *n)
                            && executed.insert(p.as_str())
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
                let a = kv_allowance.entry(plugin).or_default();
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
    p.decision_latency_ms_p50 = pct(&mut latencies, 50);
    p.decision_latency_ms_p95 = pct(&mut latencies, 95);
    for (name, w) in &mut k.workflows {
        if let Some(c) = cycle.get_mut(name.as_str()) {
            w.cycle_time_ms_p50 = pct(c, 50);
            w.cycle_time_ms_p95 = pct(c, 95);
        }
        w.handoff_rate = (w.runs > 0).then(|| w.handoffs as f64 / w.runs as f64);
    }
    k
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
}
