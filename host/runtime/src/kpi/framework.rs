//! The framework's KPI table: five dimensions per deployment pattern and
//! overall, from the event log alone.
//!
//! A record belongs to a pattern by the workflow run it is part of (the
//! workflow's pattern, else the deployment's), and a record outside any
//! run (a `charter call`, a decision on its proposal) to the deployment's
//! pattern. Each pattern's records are folded with the same [`KpiFold`]
//! `charter kpi` uses, so a pattern's figures are that fold's on its share
//! of the log; overall is the fold over the whole log.
//!
//! The measures, precisely:
//!
//! - **efficiency**
//!   - `cycle_time_ms_p50`: the median, over the pattern's ended runs, of
//!     `run-finished.time − run-started.time` (nearest rank).
//!   - `retries`: `step-attempt` records of the pattern's runs that carry a
//!     retry time (an attempt that failed and will run again).
//!   - `escalations_avoided`: steps of the pattern's runs that failed, were
//!     retried and then succeeded (a person would otherwise have been
//!     asked).
//! - **customer**
//!   - `resolution_confidence`: the mean `confidence` of the pattern's
//!     successful `charter:host/llm.classify` results (`call-result` with
//!     `ok` and a recorded `result.confidence`), at any version: how sure
//!     the model was of what it resolved. `None` without one.
//!   - `handoff_rate`: runs handed to people (a step that made a proposal,
//!     or an escalation; each run counted once) / runs started.
//! - **decision quality**
//!   - `exception_consistency`: among the inputs decided more than once —
//!     `call` records with the same plugin, function and `args_digest` —
//!     the share whose decisions (allow / propose / deny) were all the
//!     same. `None` when no input was decided twice. A configuration
//!     change between two decisions counts as an inconsistency: the same
//!     inputs got another answer. The execution of an approved proposal
//!     (its `call` names `approved-by:`) is not a decision of its own: it
//!     carries out the people's decision on the proposed call.
//!   - `policy_adherence`: executions (`call-result` records) with an
//!     allow decision, or the approvals their proposal needed, behind them
//!     / executions. `None` without an execution.
//! - **adoption**: `proposal_acceptance_rate`: proposals executed /
//!   proposals decided (executed, rejected, expired, failed).
//! - **risk**: `unauthorized_actions`: executions with no allow decision
//!   or sufficient approval behind them, and kv writes with no allowed kv
//!   call (the fold's `unauthorized_actions_executed`; target 0).
//!
//! Attribution of what carries no run: a `call-result` follows its `call`;
//! `proposal`, `approval-decision` and `proposal-resolved` follow the
//! proposal's call; a `kv-write` follows its plugin's last call.

use std::collections::{BTreeMap, HashMap};

use charter_audit::{Decision, Event, Record};
use serde::{Deserialize, Serialize};

use super::{KpiFold, pct};

/// How a deployment's records map to patterns: the deployment's own
/// pattern, and any workflow that declares another.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Patterns {
    /// The deployment's pattern (`[deployment] pattern`), or
    /// [`UNDECLARED`].
    pub deployment: String,
    /// Workflow → its pattern, where it differs from the deployment's.
    pub workflows: BTreeMap<String, String>,
}

/// The pattern of a deployment that declares none.
pub const UNDECLARED: &str = "undeclared";

impl Patterns {
    /// The deployment's patterns as its file declares them.
    pub fn of(dep: &charter_config::Deployment) -> Patterns {
        Patterns {
            deployment: dep.pattern.clone().unwrap_or_else(|| UNDECLARED.into()),
            workflows: BTreeMap::new(),
        }
    }
}

/// Efficiency.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Efficiency {
    pub runs: u64,
    pub cycle_time_ms_p50: Option<u64>,
    pub retries: u64,
    pub escalations_avoided: u64,
}

/// Customer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    pub resolution_confidence: Option<f64>,
    pub handoff_rate: Option<f64>,
}

/// Decision quality.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DecisionQuality {
    pub exception_consistency: Option<f64>,
    pub policy_adherence: Option<f64>,
}

/// Adoption.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Adoption {
    pub proposal_acceptance_rate: Option<f64>,
}

/// Risk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Risk {
    /// Target 0.
    pub unauthorized_actions: u64,
}

/// The five dimensions of one pattern (or of all of them).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dimensions {
    pub efficiency: Efficiency,
    pub customer: Customer,
    pub decision_quality: DecisionQuality,
    pub adoption: Adoption,
    pub risk: Risk,
}

/// The table: per pattern, and overall.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FrameworkKpi {
    pub patterns: BTreeMap<String, Dimensions>,
    pub overall: Dimensions,
    /// The deployments folded, when the table is over more than one
    /// deployment's log (`charter kpi --framework --config A --config B`);
    /// empty for one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deployments: Vec<String>,
}

/// One pattern's share of the log, folded.
#[derive(Default)]
struct Share {
    fold: KpiFold,
    started: HashMap<String, u64>,
    cycles: Vec<u64>,
    confidences: Vec<f64>,
    /// (plugin, function, args digest) → the decisions it got.
    decided: HashMap<(String, String, String), Vec<Decision>>,
    executions: u64,
}

impl Share {
    fn add(&mut self, r: &Record) {
        self.fold.add(r);
        match &r.event {
            Event::RunStarted { run, .. } => {
                self.started.insert(run.clone(), r.time_ms);
            }
            Event::RunFinished { run, .. } => {
                if let Some(t0) = self.started.get(run) {
                    self.cycles.push(r.time_ms.saturating_sub(*t0));
                }
            }
            // The execution of an approved proposal (`approved-by:` /
            // `approved:` markers, which only the host writes) carries out
            // the decision people made on the proposed call: it is not a
            // second decision on the same input.
            Event::Call {
                plugin,
                function,
                args_digest,
                decision,
                policies,
                ..
            } if !policies.iter().any(|p| {
                (p.starts_with("approved-by:") || p.starts_with("approved:")) && !p.contains('/')
            }) =>
            {
                self.decided
                    .entry((plugin.clone(), function.clone(), args_digest.clone()))
                    .or_default()
                    .push(*decision)
            }
            Event::CallResult {
                function,
                ok,
                result,
                ..
            } => {
                self.executions += 1;
                let classify =
                    function.starts_with("charter:host/llm") && function.ends_with("#classify");
                if let (true, true, Some(c)) = (
                    classify,
                    *ok,
                    result.as_ref().and_then(|v| v["confidence"].as_f64()),
                ) {
                    self.confidences.push(c);
                }
            }
            _ => {}
        }
    }

    /// What this share adds to a table: counts and samples that sum
    /// across shares of other logs.
    fn tally(&self) -> Tally {
        let k = self.fold.counts();
        let mut t = Tally::default();
        for w in k.workflows.values() {
            t.runs += w.runs;
            t.handoffs += w.handoffs;
            t.retries += w.retries;
            t.escalations_avoided += w.escalations_avoided;
        }
        for d in self.decided.values().filter(|d| d.len() > 1) {
            t.repeated += 1;
            t.consistent += u64::from(d.iter().all(|x| *x == d[0]));
        }
        t.cycles.clone_from(&self.cycles);
        t.confidences.clone_from(&self.confidences);
        t.executions = self.executions;
        t.unauthorized = k.unauthorized_actions_executed;
        let p = &k.proposals;
        t.proposals_executed = p.executed;
        t.proposals_decided = p.executed + p.rejected + p.expired + p.failed;
        t
    }
}

/// The sums behind one column of the table: what folding a pattern's
/// share of several logs adds up (records of different deployments are
/// never matched with each other: call, run and proposal ids, plugin names
/// are a deployment's own).
#[derive(Debug, Clone, Default)]
struct Tally {
    runs: u64,
    handoffs: u64,
    retries: u64,
    escalations_avoided: u64,
    cycles: Vec<u64>,
    confidences: Vec<f64>,
    /// Inputs decided more than once, and those always decided alike.
    repeated: u64,
    consistent: u64,
    executions: u64,
    unauthorized: u64,
    proposals_executed: u64,
    proposals_decided: u64,
}

impl Tally {
    fn merge(&mut self, o: &Tally) {
        self.runs += o.runs;
        self.handoffs += o.handoffs;
        self.retries += o.retries;
        self.escalations_avoided += o.escalations_avoided;
        self.cycles.extend_from_slice(&o.cycles);
        self.confidences.extend_from_slice(&o.confidences);
        self.repeated += o.repeated;
        self.consistent += o.consistent;
        self.executions += o.executions;
        self.unauthorized += o.unauthorized;
        self.proposals_executed += o.proposals_executed;
        self.proposals_decided += o.proposals_decided;
    }

    fn dimensions(&self) -> Dimensions {
        let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
        Dimensions {
            efficiency: Efficiency {
                runs: self.runs,
                cycle_time_ms_p50: pct(&mut self.cycles.clone(), 50),
                retries: self.retries,
                escalations_avoided: self.escalations_avoided,
            },
            customer: Customer {
                resolution_confidence: (!self.confidences.is_empty())
                    .then(|| self.confidences.iter().sum::<f64>() / self.confidences.len() as f64),
                handoff_rate: ratio(self.handoffs, self.runs),
            },
            decision_quality: DecisionQuality {
                exception_consistency: ratio(self.consistent, self.repeated),
                policy_adherence: ratio(
                    self.executions
                        .saturating_sub(self.unauthorized.min(self.executions)),
                    self.executions,
                ),
            },
            adoption: Adoption {
                proposal_acceptance_rate: ratio(self.proposals_executed, self.proposals_decided),
            },
            risk: Risk {
                unauthorized_actions: self.unauthorized,
            },
        }
    }
}

/// The table over several deployments' logs (`charter kpi --framework
/// --config A --config B`): each log folded on its own, with its own
/// deployment's patterns; columns of the same pattern name add up, and
/// overall is every log together.
#[derive(Default)]
pub struct FrameworkFold {
    patterns: BTreeMap<String, Tally>,
    overall: Tally,
    deployments: Vec<String>,
}

impl FrameworkFold {
    /// Fold deployment `name`'s log (`records`, in log order).
    pub fn add_deployment(&mut self, name: &str, records: &[Record], patterns: &Patterns) {
        let (shares, all) = shares(records, patterns);
        // Every pattern the deployment declares has its column, with
        // nothing recorded yet too.
        for p in std::iter::once(&patterns.deployment).chain(patterns.workflows.values()) {
            self.patterns.entry(p.clone()).or_default();
        }
        for (p, s) in &shares {
            self.patterns
                .entry(p.clone())
                .or_default()
                .merge(&s.tally());
        }
        self.overall.merge(&all.tally());
        self.deployments.push(name.to_string());
    }

    /// The table of what was folded.
    pub fn table(&self) -> FrameworkKpi {
        FrameworkKpi {
            patterns: self
                .patterns
                .iter()
                .map(|(p, t)| (p.clone(), t.dimensions()))
                .collect(),
            overall: self.overall.dimensions(),
            deployments: self.deployments.clone(),
        }
    }
}

/// The framework's table over one deployment's `records` (in log order).
pub fn framework(records: &[Record], patterns: &Patterns) -> FrameworkKpi {
    let mut f = FrameworkFold::default();
    f.add_deployment(&patterns.deployment, records, patterns);
    let mut t = f.table();
    t.deployments.clear();
    t
}

/// Each pattern's share of one log, and the whole log's.
fn shares(records: &[Record], patterns: &Patterns) -> (BTreeMap<String, Share>, Share) {
    let mut shares: BTreeMap<String, Share> = BTreeMap::new();
    let mut all = Share::default();
    let mut run_pattern: HashMap<String, String> = HashMap::new();
    let mut call_pattern: HashMap<String, String> = HashMap::new();
    let mut proposal_pattern: HashMap<String, String> = HashMap::new();
    let mut plugin_pattern: HashMap<String, String> = HashMap::new();
    let default = || patterns.deployment.clone();
    for r in records {
        let of_run = |run: &str| run_pattern.get(run).cloned().unwrap_or_else(default);
        let pattern = match &r.event {
            Event::RunStarted { run, workflow, .. } => {
                let p = patterns
                    .workflows
                    .get(workflow)
                    .cloned()
                    .unwrap_or_else(default);
                run_pattern.insert(run.clone(), p.clone());
                p
            }
            Event::StepAttempt { run, .. }
            | Event::Escalated { run, .. }
            | Event::EscalationResolved { run, .. }
            | Event::RunFinished { run, .. } => of_run(run),
            Event::Call {
                call,
                plugin,
                journal,
                ..
            } => {
                let p = journal.as_ref().map_or_else(default, |j| of_run(&j.run));
                call_pattern.insert(call.clone(), p.clone());
                plugin_pattern.insert(plugin.clone(), p.clone());
                p
            }
            Event::CallResult { call, .. } => {
                call_pattern.get(call).cloned().unwrap_or_else(default)
            }
            Event::Proposal { id, call, .. } => {
                let p = call_pattern.get(call).cloned().unwrap_or_else(default);
                proposal_pattern.insert(id.clone(), p.clone());
                p
            }
            Event::ApprovalDecision { proposal, .. } | Event::ProposalResolved { proposal, .. } => {
                proposal_pattern
                    .get(proposal)
                    .cloned()
                    .unwrap_or_else(default)
            }
            Event::KvWrite { plugin, .. } => {
                plugin_pattern.get(plugin).cloned().unwrap_or_else(default)
            }
            _ => default(),
        };
        shares.entry(pattern).or_default().add(r);
        all.add(r);
    }
    (shares, all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use charter_audit::JournalRef;
    use serde_json::json;

    fn rec(seq: u64, event: Event) -> Record {
        Record {
            seq,
            time_ms: seq * 10,
            end: true,
            event,
        }
    }

    fn call(id: &str, run: Option<&str>, function: &str, args: &str, d: Decision) -> Event {
        Event::Call {
            call: id.into(),
            plugin: "p".into(),
            digest: "sha256:0".into(),
            function: function.into(),
            args_digest: args.into(),
            args: json!({}),
            decision: d,
            policies: vec![],
            reason: None,
            initiator: None,
            journal: run.map(|r| JournalRef {
                run: r.into(),
                step: "s".into(),
                attempt: 1,
                seq: 1,
            }),
            request: None,
        }
    }

    fn result(id: &str, function: &str, result: Option<serde_json::Value>) -> Event {
        Event::CallResult {
            call: id.into(),
            plugin: "p".into(),
            function: function.into(),
            ok: true,
            summary: String::new(),
            duration_us: 1,
            proposal: None,
            result,
        }
    }

    fn started(run: &str, workflow: &str) -> Event {
        serde_json::from_value(json!({
            "type": "run-started", "run": run, "workflow": workflow,
            "workflow_digest": "sha256:0", "input": {}, "initiator": null, "first": "s",
        }))
        .unwrap()
    }

    fn finished(run: &str) -> Event {
        serde_json::from_value(json!({"type": "run-finished", "run": run, "status": "completed"}))
            .unwrap()
    }

    const CLASSIFY: &str = "charter:host/llm@0.1.0#classify";

    #[test]
    fn records_go_to_their_runs_pattern_and_the_measures_follow() {
        let patterns = Patterns {
            deployment: "policy-assistant".into(),
            workflows: [("post-call".to_string(), "service-desk".to_string())].into(),
        };
        let records = vec![
            rec(1, started("R1", "post-call")),
            rec(2, call("c1", Some("R1"), CLASSIFY, "a", Decision::Allow)),
            rec(
                3,
                result(
                    "c1",
                    CLASSIFY,
                    Some(json!({"label": "x", "confidence": 0.8})),
                ),
            ),
            rec(4, call("c2", Some("R1"), CLASSIFY, "b", Decision::Allow)),
            rec(
                5,
                result(
                    "c2",
                    CLASSIFY,
                    Some(json!({"label": "y", "confidence": 0.4})),
                ),
            ),
            rec(6, finished("R1")),
            // Outside any run: the deployment's pattern; the same input
            // decided twice, differently.
            rec(
                7,
                call(
                    "c3",
                    None,
                    "charter:host/kv@0.1.0#get",
                    "k",
                    Decision::Allow,
                ),
            ),
            rec(8, result("c3", "charter:host/kv@0.1.0#get", None)),
            rec(
                9,
                call("c4", None, "charter:host/kv@0.1.0#get", "k", Decision::Deny),
            ),
        ];
        let t = framework(&records, &patterns);
        let desk = &t.patterns["service-desk"];
        assert_eq!(desk.efficiency.runs, 1);
        assert_eq!(desk.efficiency.cycle_time_ms_p50, Some(50));
        let c = desk.customer.resolution_confidence.unwrap();
        assert!((c - 0.6).abs() < 1e-9, "{c}");
        assert_eq!(desk.customer.handoff_rate, Some(0.0));
        assert_eq!(desk.decision_quality.exception_consistency, None);
        assert_eq!(desk.decision_quality.policy_adherence, Some(1.0));
        assert_eq!(desk.risk.unauthorized_actions, 0);
        let pa = &t.patterns["policy-assistant"];
        assert_eq!(pa.efficiency.runs, 0);
        assert_eq!(pa.decision_quality.exception_consistency, Some(0.0));
        assert_eq!(pa.customer.resolution_confidence, None);
        // Overall is the whole log.
        assert_eq!(t.overall.efficiency.runs, 1);
        assert_eq!(t.overall.decision_quality.exception_consistency, Some(0.0));
        assert_eq!(t.overall.decision_quality.policy_adherence, Some(1.0));
    }

    #[test]
    fn an_execution_without_a_decision_breaks_adherence_and_counts_as_unauthorized() {
        let patterns = Patterns {
            deployment: UNDECLARED.into(),
            workflows: BTreeMap::new(),
        };
        let records = vec![
            rec(1, call("c1", None, "x:y/z@1.0.0#f", "a", Decision::Allow)),
            rec(2, result("c1", "x:y/z@1.0.0#f", None)),
            rec(3, result("forged", "x:y/z@1.0.0#f", None)),
        ];
        let t = framework(&records, &patterns);
        let d = &t.patterns[UNDECLARED];
        assert_eq!(d.risk.unauthorized_actions, 1);
        assert_eq!(d.decision_quality.policy_adherence, Some(0.5));
        assert_eq!(t.overall, *d);
    }

    #[test]
    fn an_approved_proposals_execution_is_not_a_second_decision() {
        let patterns = Patterns {
            deployment: "refunds".into(),
            workflows: BTreeMap::new(),
        };
        const REFUND: &str = "acme:payments/refunds@0.1.0#issue-refund";
        let mut approved = call("c2", None, REFUND, "a", Decision::Allow);
        if let Event::Call { policies, .. } = &mut approved {
            *policies = vec![
                "approved-by:bob".into(),
                "copilot-tools/every-refund".into(),
            ];
        }
        // A policy named like the marker is a policy (`group/id`): it
        // decides, and differently from the proposal.
        let mut forged = call("c3", None, REFUND, "a", Decision::Allow);
        if let Event::Call { policies, .. } = &mut forged {
            *policies = vec!["g/approved-by:bob".into()];
        }
        let records = vec![
            rec(1, call("c1", None, REFUND, "a", Decision::Propose)),
            rec(2, approved),
            rec(3, result("c2", REFUND, None)),
        ];
        let t = framework(&records, &patterns);
        assert_eq!(t.overall.decision_quality.exception_consistency, None);
        let mut more = records.clone();
        more.push(rec(4, forged));
        let t = framework(&more, &patterns);
        assert_eq!(t.overall.decision_quality.exception_consistency, Some(0.0));
    }

    #[test]
    fn several_logs_fold_per_pattern_without_matching_each_others_ids() {
        // Two deployments whose ids collide (run R1, call c1, plugin p):
        // each log is folded on its own, so a result in one never pairs
        // with a call of the other.
        let desk = Patterns {
            deployment: "service-desk".into(),
            workflows: BTreeMap::new(),
        };
        let refunds = Patterns {
            deployment: "refunds".into(),
            workflows: BTreeMap::new(),
        };
        let a = vec![
            rec(1, started("R1", "post-call")),
            rec(2, call("c1", Some("R1"), CLASSIFY, "a", Decision::Allow)),
            rec(3, result("c1", CLASSIFY, Some(json!({"confidence": 0.9})))),
            rec(4, finished("R1")),
        ];
        // The refunds log: an execution with no decision behind it in
        // this log, though deployment a's log has an allowed c1.
        let b = vec![
            rec(1, started("R1", "refund")),
            rec(2, result("c1", "x:y/z@1.0.0#f", None)),
            rec(9, finished("R1")),
        ];
        let mut f = FrameworkFold::default();
        f.add_deployment("acme-service-desk", &a, &desk);
        f.add_deployment("acme-refunds", &b, &refunds);
        // A third deployment of the same pattern adds to its column.
        f.add_deployment("acme-service-desk-eu", &a, &desk);
        let t = f.table();
        assert_eq!(
            t.deployments,
            ["acme-service-desk", "acme-refunds", "acme-service-desk-eu"]
        );
        let d = &t.patterns["service-desk"];
        assert_eq!(d.efficiency.runs, 2);
        assert_eq!(d.efficiency.cycle_time_ms_p50, Some(30));
        assert_eq!(d.risk.unauthorized_actions, 0);
        assert_eq!(d.decision_quality.policy_adherence, Some(1.0));
        let r = &t.patterns["refunds"];
        assert_eq!(r.efficiency.runs, 1);
        assert_eq!(r.risk.unauthorized_actions, 1, "not excused by a's c1");
        assert_eq!(t.overall.efficiency.runs, 3);
        assert_eq!(t.overall.risk.unauthorized_actions, 1);
        assert_eq!(t.overall.decision_quality.policy_adherence, Some(2.0 / 3.0));
        assert_eq!(t.overall.efficiency.cycle_time_ms_p50, Some(30));
        // One deployment alone: the single-log table, no deployments key.
        let one = framework(&a, &desk);
        assert!(one.deployments.is_empty());
        assert_eq!(one.patterns["service-desk"].efficiency.runs, 1);
        let v = serde_json::to_value(&one).unwrap();
        assert!(v.get("deployments").is_none(), "{v}");
    }
}
