//! Per-agent KPIs (issue 15): for every AI agent that called a tool, its
//! calls by policy decision, its calls refused before policy (by rule),
//! its proposals and their acceptance rate, and the actions executed for
//! it without an allow or an approval behind them (target 0). Folded
//! record by record beside the framework's fold ([`super::KpiFold`]).

use std::collections::{BTreeMap, HashMap};

use charter_audit::{Decision, Event, Record};
use serde::{Deserialize, Serialize};

use super::CallCounts;

/// One agent's proposals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentProposals {
    pub created: u64,
    pub executed: u64,
    /// Rejected (and cancelled).
    pub rejected: u64,
    pub expired: u64,
    /// Approved, but the execution failed.
    pub failed: u64,
    pub pending: u64,
    /// executed / decided.
    pub acceptance_rate: Option<f64>,
}

/// One agent's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentKpi {
    /// Tool calls policy decided, by decision (an approved proposal's
    /// execution is counted under `proposals`, not again here).
    pub calls: CallCounts,
    /// Tool calls refused before policy (`tool-refused`): rule → count
    /// (`unknown-tool`, `schema`, `too-large`, `rate-limit`). Not denials.
    pub refused: BTreeMap<String, u64>,
    pub proposals: AgentProposals,
    /// Tool executions for this agent with no allow decision or approval
    /// recorded before them (target 0).
    pub unauthorized_actions_executed: u64,
}

/// The per-agent fold.
#[derive(Debug, Clone, Default)]
pub struct AgentFold {
    agents: BTreeMap<String, AgentKpi>,
    /// An agent's call → (agent, allowed or approved).
    calls: HashMap<String, (String, bool)>,
    /// An agent's proposal → the agent.
    proposals: HashMap<String, String>,
}

fn agent_of(initiator: &Option<String>) -> Option<&str> {
    initiator.as_deref()?.strip_prefix("agent:")
}

impl AgentFold {
    /// Fold one record (in log order).
    pub fn add(&mut self, r: &Record) {
        match &r.event {
            Event::Call {
                call,
                decision,
                policies,
                initiator,
                ..
            } => {
                let Some(agent) = agent_of(initiator) else {
                    return;
                };
                // The tool's own kv/http/connector calls carry the agent as
                // initiator too: only the tool-level call is the agent's.
                if !call.starts_with(crate::tools::TOOL_CALL_PREFIX) {
                    return;
                }
                let approved = policies.iter().any(|p| p.starts_with("approved-by:"));
                let a = self.agents.entry(agent.to_string()).or_default();
                if !approved {
                    match decision {
                        Decision::Allow => a.calls.allowed += 1,
                        Decision::Propose => a.calls.proposed += 1,
                        Decision::Deny => a.calls.denied += 1,
                    }
                }
                let allowed = *decision == Decision::Allow;
                self.calls
                    .insert(call.clone(), (agent.to_string(), allowed));
            }
            Event::Proposal { id, initiator, .. } => {
                if let Some(agent) = agent_of(initiator) {
                    let a = self.agents.entry(agent.to_string()).or_default();
                    a.proposals.created += 1;
                    self.proposals.insert(id.clone(), agent.to_string());
                }
            }
            Event::ProposalResolved {
                proposal, status, ..
            } => {
                let Some(agent) = self.proposals.get(proposal) else {
                    return;
                };
                let p = &mut self.agents.entry(agent.clone()).or_default().proposals;
                match status.as_str() {
                    "executed" | "approved" => p.executed += 1,
                    "rejected" | "cancelled" => p.rejected += 1,
                    "expired" => p.expired += 1,
                    _ => p.failed += 1,
                }
            }
            Event::ToolRefused {
                agent, rule, count, ..
            } => {
                let a = self.agents.entry(agent.clone()).or_default();
                *a.refused.entry(rule.clone()).or_default() += count;
            }
            Event::CallResult { call, .. } => {
                if let Some((agent, false)) = self.calls.get(call) {
                    let a = self.agents.entry(agent.clone()).or_default();
                    a.unauthorized_actions_executed += 1;
                }
            }
            _ => {}
        }
    }

    /// The figures of what was folded so far.
    pub fn kpi(&self) -> BTreeMap<String, AgentKpi> {
        let mut out = self.agents.clone();
        for a in out.values_mut() {
            let p = &mut a.proposals;
            let decided = p.executed + p.rejected + p.expired + p.failed;
            p.pending = p.created.saturating_sub(decided);
            p.acceptance_rate = (decided > 0).then(|| p.executed as f64 / decided as f64);
        }
        out
    }
}

/// `charter kpi`'s per-agent lines (text), one block per agent.
pub fn text(agents: &BTreeMap<String, AgentKpi>) -> String {
    let mut out = String::new();
    if agents.is_empty() {
        return out;
    }
    out.push_str("agents (tool calls over MCP):\n");
    for (name, a) in agents {
        let refused: u64 = a.refused.values().sum();
        let rules: Vec<String> = a.refused.iter().map(|(r, n)| format!("{r} {n}")).collect();
        let rate = a
            .proposals
            .acceptance_rate
            .map(|r| format!("{:.0}%", r * 100.0))
            .unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "  {name}: calls allowed {}, proposed {}, denied by policy {}; refused before policy {refused}{}; proposals {} (executed {}, rejected {}, expired {}, failed {}, pending {}; acceptance {rate}); unauthorized actions executed {}\n",
            a.calls.allowed,
            a.calls.proposed,
            a.calls.denied,
            if rules.is_empty() { String::new() } else { format!(" ({})", rules.join(", ")) },
            a.proposals.created,
            a.proposals.executed,
            a.proposals.rejected,
            a.proposals.expired,
            a.proposals.failed,
            a.proposals.pending,
            a.unauthorized_actions_executed,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(seq: u64, event: Event) -> Record {
        Record {
            seq,
            time_ms: seq,
            end: true,
            event,
        }
    }

    fn call(id: &str, agent: &str, decision: Decision, policies: &[&str]) -> Event {
        // Tool-level ids (`tools::call_id`); `inner` below: the tool's own.
        Event::Call {
            call: format!("agent-{id}"),
            plugin: "orders".into(),
            digest: String::new(),
            function: "acme:shop/orders#cancel-order".into(),
            args: json!({}),
            args_digest: String::new(),
            decision,
            policies: policies.iter().map(|p| p.to_string()).collect(),
            reason: None,
            initiator: Some(format!("agent:{agent}")),
            journal: None,
            request: None,
        }
    }

    fn result(id: &str, proposal: Option<&str>) -> Event {
        Event::CallResult {
            call: format!("agent-{id}"),
            plugin: "orders".into(),
            function: "acme:shop/orders#cancel-order".into(),
            ok: true,
            summary: String::new(),
            duration_us: 1,
            proposal: proposal.map(str::to_string),
            result: None,
        }
    }

    /// Calls by decision, refusals by rule (not denials), proposals and
    /// their acceptance, and an execution with no allow behind it counted
    /// as unauthorized — each per agent, people's calls left out.
    #[test]
    fn agents_are_counted_apart() {
        let proposal = |id: &str, agent: &str| Event::Proposal {
            id: id.into(),
            call: format!("c-{id}"),
            plugin: "orders".into(),
            digest: String::new(),
            function: "f".into(),
            args: json!({}),
            args_digest: String::new(),
            rationale: None,
            policies: vec![],
            approver_role: None,
            approvals_needed: 1,
            expires_at_ms: 0,
            initiator: Some(format!("agent:{agent}")),
            owner: None,
            journal: None,
        };
        let resolved = |id: &str, status: &str| Event::ProposalResolved {
            proposal: id.into(),
            status: status.into(),
            detail: None,
        };
        // A call the running tool made itself (its kv, http, a connector):
        // it carries the agent as initiator, but is not the agent's call.
        let inner = |decision| {
            let mut e = call("", "copilot", decision, &[]);
            if let Event::Call { call, function, .. } = &mut e {
                *call = "1a2b-3/1".into();
                *function = "charter:host/kv@0.1.0#set".into();
            }
            e
        };
        let events = vec![
            call("a1", "copilot", Decision::Allow, &["lookups"]),
            inner(Decision::Allow),
            inner(Decision::Deny),
            result("a1", None),
            call("a2", "copilot", Decision::Deny, &["no-locked-orders"]),
            call("c-P1", "copilot", Decision::Propose, &["large"]),
            proposal("P1", "copilot"),
            call("c-P2", "copilot", Decision::Propose, &["large"]),
            proposal("P2", "copilot"),
            call("c-P3", "copilot", Decision::Propose, &["large"]),
            proposal("P3", "copilot"),
            call("c-P1", "copilot", Decision::Allow, &["approved-by:bob"]),
            result("c-P1", Some("P1")),
            resolved("P1", "executed"),
            resolved("P2", "rejected"),
            Event::ToolRefused {
                agent: "bot".into(),
                tool: "refunds.issue-refund".into(),
                tools: vec![],
                rule: "rate-limit".into(),
                count: 11,
                detail: String::new(),
            },
            // A denied call that ran anyway: unauthorized.
            call("b1", "bot", Decision::Deny, &["x"]),
            result("b1", None),
        ];
        let mut f = AgentFold::default();
        for (i, e) in events.into_iter().enumerate() {
            f.add(&rec(i as u64, e));
        }
        let k = f.kpi();
        let c = &k["copilot"];
        assert_eq!(
            c.calls,
            CallCounts {
                allowed: 1,
                proposed: 3,
                denied: 1
            }
        );
        assert_eq!(c.proposals.created, 3);
        assert_eq!(c.proposals.executed, 1);
        assert_eq!(c.proposals.rejected, 1);
        assert_eq!(c.proposals.pending, 1);
        assert_eq!(c.proposals.acceptance_rate, Some(0.5));
        assert_eq!(c.unauthorized_actions_executed, 0);
        let b = &k["bot"];
        assert_eq!(b.refused["rate-limit"], 11);
        assert_eq!(b.calls.denied, 1);
        assert_eq!(b.unauthorized_actions_executed, 1);
        assert!(text(&k).contains("copilot: calls allowed 1, proposed 3, denied by policy 1"));
    }
}
