//! The workflow engine's behaviour as data: every `workflow-cases/*.toml`
//! is one scenario — a workflow definition (as `charter.toml` writes it),
//! the things that happen to one run of it in order, and the events the
//! engine must record. The runner below is a driver without IO: it asks
//! [`engine::next`] what to do, answers planned attempts with the case's
//! outcomes, hands people's decisions to [`engine::decide`], and folds the
//! events as the index does. A mismatch names the file and the first event
//! that differs.
//!
//! A case file:
//!
//! ```toml
//! description = "what it shows"
//! input = { order = 7 }          # the run's input (default {})
//! now_ms = 1000                   # the clock when the run starts (default 1000)
//! status = "completed"            # the run's status at the end (optional)
//!
//! [workflow]                      # as [workflows.NAME] in charter.toml
//! [[workflow.steps]]
//! id = "a"
//! plugin = "p"
//!
//! [approvers.olga]                # default: olga (operator), rita (refund-approver)
//! roles = ["operator"]
//!
//! [[feed]]                        # what happens, in order; one of:
//! ok = { x = 1 }                  #   the planned attempt returned this output
//! fail = "retryable"              #   it failed with this class (error = "...")
//! awaiting = "P-1"                #   it proposed a call; the run waits for P-1
//! proposal = "approved"           #   people decided the run's proposal
//! resolve = "retry"               #   an escalation's resolution (by, output, comment, escalation)
//! cancel = "olga"                 #   someone cancels the run
//! advance_ms = 5000               #   the clock moves on
//! # An attempt feed may name `step` and `attempt` to report an outcome the
//! # engine did not ask for (stale). Any feed may carry `refused = "rule"`
//! # (a recorded refusal) or `error = "text"` on a non-attempt feed /
//! # `expect_error` (nothing recorded, the engine's error contains it).
//!
//! [[expect]]                      # every event after run-started, in order;
//! type = "step-attempt"           # only the fields given are compared
//! step = "a"
//! outcome = "ok"
//! absent = ["next"]               # fields that must be absent or null
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use charter_audit::{Event, Record};
use charter_config::Deployment;
use charter_runtime::workflow::engine::{
    self, Attempted, Env, Input, Next, Outcome, ProposalView, Resolution,
};
use charter_runtime::workflow::{
    EscalationState, FailureClass, ProposalStatus, RunState, RunStatus,
};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    #[allow(dead_code)]
    description: String,
    #[serde(default = "empty_object")]
    input: Value,
    #[serde(default = "start_ms")]
    now_ms: u64,
    initiator: Option<String>,
    status: Option<String>,
    workflow: toml::Table,
    approvers: Option<toml::Table>,
    #[serde(default)]
    feed: Vec<Feed>,
    #[serde(default)]
    expect: Vec<Value>,
}

fn empty_object() -> Value {
    json!({})
}

fn start_ms() -> u64 {
    1000
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Feed {
    ok: Option<Value>,
    fail: Option<String>,
    awaiting: Option<String>,
    /// With `awaiting`: when the proposal expires (default never).
    expires_at_ms: Option<u64>,
    step: Option<String>,
    attempt: Option<u32>,
    #[serde(default)]
    replayed: u64,
    #[serde(default)]
    duration_us: u64,
    proposal: Option<String>,
    resolve: Option<String>,
    escalation: Option<String>,
    by: Option<String>,
    output: Option<Value>,
    comment: Option<String>,
    cancel: Option<String>,
    advance_ms: Option<u64>,
    /// With `fail`: the error text; elsewhere see `expect_error`.
    error: Option<String>,
    expect_error: Option<String>,
    refused: Option<String>,
}

impl Feed {
    fn is_outcome(&self) -> bool {
        self.ok.is_some() || self.fail.is_some() || self.awaiting.is_some()
    }

    fn outcome(&self) -> Result<Outcome, String> {
        if let Some(output) = &self.ok {
            return Ok(Outcome::Ok {
                output: output.clone(),
            });
        }
        if let Some(p) = &self.awaiting {
            return Ok(Outcome::AwaitingApproval {
                proposal: p.clone(),
            });
        }
        let class = self.fail.as_deref().unwrap_or_default();
        Ok(Outcome::Failed {
            class: class.parse::<FailureClass>().map_err(|e| e.to_string())?,
            error: self.error.clone().unwrap_or_else(|| "boom".into()),
        })
    }
}

/// One run, driven by the case.
struct Sim {
    def: charter_config::Workflow,
    approvers: HashMap<String, Vec<String>>,
    st: RunState,
    now_ms: u64,
    proposals: HashMap<String, ProposalView>,
    records: Vec<Record>,
}

impl Sim {
    fn env(&self) -> Env {
        Env {
            now_ms: self.now_ms,
            proposal: self
                .st
                .proposal
                .as_ref()
                .and_then(|p| self.proposals.get(p).cloned()),
            escalation_due_ms: None,
        }
    }

    /// Append events as the driver's commit does: record, fold into the run.
    fn append(&mut self, events: Vec<Event>) {
        for ev in events {
            match &ev {
                Event::StepAttempt {
                    proposal: Some(p), ..
                } => {
                    self.proposals.entry(p.clone()).or_insert(ProposalView {
                        id: p.clone(),
                        status: ProposalStatus::Pending,
                        expires_at_ms: u64::MAX,
                    });
                }
                Event::ProposalResolved {
                    proposal, status, ..
                } => {
                    if let Some(p) = self.proposals.get_mut(proposal) {
                        p.status = status.parse().expect("proposal status");
                    }
                }
                _ => {}
            }
            if ev.run() == Some(self.st.id.as_str()) {
                self.st.apply(&ev, self.now_ms);
            }
            self.records.push(Record {
                seq: self.records.len() as u64 + 1,
                time_ms: self.now_ms,
                end: true,
                event: ev,
            });
        }
    }

    /// Drive the run until the engine stops or asks for an attempt outcome
    /// the next feed does not give.
    fn drive(
        &mut self,
        feeds: &mut std::iter::Peekable<std::vec::IntoIter<(usize, Feed)>>,
    ) -> Result<(), String> {
        for _ in 0..1000 {
            match engine::next(&self.st, &self.def, &self.env()) {
                Next::Stop => return Ok(()),
                Next::Append(events) => self.append(events),
                Next::Attempt(plan) => {
                    let takes = feeds
                        .peek()
                        .is_some_and(|(_, f)| f.is_outcome() && f.step.is_none());
                    if !takes {
                        return Ok(());
                    }
                    let (n, f) = feeds.next().unwrap();
                    if let Some(t) = plan.not_before_ms {
                        self.now_ms = self.now_ms.max(t);
                    }
                    if let (Some(p), Some(t)) = (&f.awaiting, f.expires_at_ms) {
                        self.proposals.insert(
                            p.clone(),
                            ProposalView {
                                id: p.clone(),
                                status: ProposalStatus::Pending,
                                expires_at_ms: t,
                            },
                        );
                    }
                    let a = Attempted {
                        step: plan.step,
                        attempt: plan.attempt,
                        input: plan.input,
                        outcome: f.outcome().map_err(|e| format!("feed {n}: {e}"))?,
                        replayed: f.replayed,
                        duration_us: f.duration_us,
                    };
                    let res =
                        engine::decide(&self.st, Some(&self.def), Input::Attempted(a), &self.env());
                    self.settle(n, &f, res)?;
                }
            }
        }
        Err("the run did not stop within 1000 decisions".into())
    }

    /// Check a decision against what the feed expects, and append it.
    fn settle(
        &mut self,
        n: usize,
        f: &Feed,
        res: Result<engine::Decision, engine::Refusal>,
    ) -> Result<(), String> {
        match (res, &f.expect_error) {
            (Err(e), Some(want)) if e.to_string().contains(want.as_str()) => Ok(()),
            (Err(e), _) => Err(format!("feed {n}: the engine refused: {e}")),
            (Ok(_), Some(want)) => Err(format!(
                "feed {n}: expected the engine to refuse with {want:?}, it decided"
            )),
            (Ok(d), None) => {
                let rule = d.refused.as_ref().map(|r| r.rule);
                if rule != f.refused.as_deref() {
                    return Err(format!(
                        "feed {n}: refused rule {rule:?}, expected {:?}",
                        f.refused
                    ));
                }
                self.append(d.events);
                Ok(())
            }
        }
    }

    /// A feed that is not the outcome of a planned attempt.
    fn feed(&mut self, n: usize, f: Feed) -> Result<(), String> {
        if let Some(ms) = f.advance_ms {
            self.now_ms += ms;
            return Ok(());
        }
        if let Some(status) = &f.proposal {
            let id = self
                .st
                .proposal
                .clone()
                .ok_or(format!("feed {n}: the run waits for no proposal"))?;
            let view = self.proposals.get_mut(&id).expect("proposal");
            view.status = status.parse().map_err(|e| format!("feed {n}: {e}"))?;
            return Ok(());
        }
        let input = if f.is_outcome() {
            // An outcome the engine did not ask for.
            let step = f.step.clone().unwrap_or_default();
            Input::Attempted(Attempted {
                step,
                attempt: f.attempt.unwrap_or(1),
                input: Value::Null,
                outcome: f.outcome().map_err(|e| format!("feed {n}: {e}"))?,
                replayed: f.replayed,
                duration_us: f.duration_us,
            })
        } else if let Some(by) = &f.cancel {
            Input::Cancel { by: by.clone() }
        } else if let Some(action) = &f.resolve {
            let id = f
                .escalation
                .clone()
                .or_else(|| self.st.escalation.clone())
                .or_else(|| self.last_escalation())
                .ok_or(format!("feed {n}: no escalation to resolve"))?;
            let escalation = EscalationState::from_records(&id, &self.records)
                .ok_or(format!("feed {n}: no escalation {id}"))?;
            let by = f.by.clone().unwrap_or_else(|| "olga".into());
            Input::Resolve(Resolution {
                escalation,
                roles: self.approvers.get(&by).cloned(),
                by,
                action: action.clone(),
                output: f.output.clone(),
                comment: f.comment.clone(),
            })
        } else {
            return Err(format!(
                "feed {n}: nothing to do (or an outcome nobody asked for)"
            ));
        };
        let res = engine::decide(&self.st, Some(&self.def), input, &self.env());
        self.settle(n, &f, res)
    }

    fn last_escalation(&self) -> Option<String> {
        self.records.iter().rev().find_map(|r| match &r.event {
            Event::Escalated { id, .. } => Some(id.clone()),
            _ => None,
        })
    }
}

fn deployment(case: &Case) -> Result<Deployment, String> {
    let mut doc = toml::Table::new();
    let mut dep = toml::Table::new();
    dep.insert("name".into(), "cases".into());
    dep.insert("phase".into(), 1.into());
    doc.insert("deployment".into(), dep.into());
    let approvers = case.approvers.clone().unwrap_or_else(|| {
        toml::from_str(
            "olga = { roles = [\"operator\"] }\nrita = { roles = [\"refund-approver\"] }",
        )
        .unwrap()
    });
    doc.insert("approvers".into(), approvers.into());
    let mut wfs = toml::Table::new();
    wfs.insert("case".into(), case.workflow.clone().into());
    doc.insert("workflows".into(), wfs.into());
    let text = toml::to_string(&doc).map_err(|e| e.to_string())?;
    Deployment::parse(
        &text,
        Path::new("/nonexistent/charter.toml"),
        charter_runtime::host_catalog(),
    )
    .map_err(|e| e.to_string())
}

/// Run one case; `Err` says what differs.
fn run(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let case: Case = toml::from_str(&text).map_err(|e| e.to_string())?;
    let d = deployment(&case)?;
    let def = d.workflows["case"].clone();
    let plugins = def.steps.iter().map(|s| s.plugin.as_str()).collect();
    let problems = def.problems(&plugins);
    if !problems.is_empty() {
        return Err(format!("the workflow has problems: {problems:?}"));
    }
    let started = engine::start(
        &def,
        "R-case",
        case.input.clone(),
        case.initiator.as_deref(),
    );
    let st = RunState::start(&started, 1, case.now_ms).expect("run-started");
    let mut sim = Sim {
        def,
        approvers: d
            .approvers
            .iter()
            .map(|(k, a)| (k.clone(), a.roles.clone()))
            .collect(),
        st,
        now_ms: case.now_ms,
        proposals: HashMap::new(),
        records: vec![],
    };
    let mut feeds = case
        .feed
        .into_iter()
        .enumerate()
        .map(|(i, f)| (i + 1, f))
        .collect::<Vec<_>>()
        .into_iter()
        .peekable();
    sim.drive(&mut feeds)?;
    while let Some((n, f)) = feeds.next() {
        sim.feed(n, f)?;
        sim.drive(&mut feeds)?;
    }
    compare(&sim.records, &case.expect)?;
    if let Some(want) = &case.status
        && sim.st.status != *want
    {
        return Err(format!("the run ends {}, expected {want}", sim.st.status));
    }
    Ok(())
}

/// Every expected event against the recorded one at its position: the
/// fields the case names must be equal, and those it lists as `absent`
/// missing (or null).
fn compare(records: &[Record], expect: &[Value]) -> Result<(), String> {
    let got: Vec<Value> = records
        .iter()
        .map(|r| serde_json::to_value(&r.event).unwrap())
        .collect();
    for (i, want) in expect.iter().enumerate() {
        let Some(have) = got.get(i) else {
            return Err(format!(
                "event {}: expected {want}, but only {} events were recorded",
                i + 1,
                got.len()
            ));
        };
        let fields = want
            .as_object()
            .ok_or(format!("expect {}: not a table", i + 1))?;
        let absent = fields.get("absent").and_then(Value::as_array);
        for k in absent.into_iter().flatten().filter_map(Value::as_str) {
            if let Some(h) = have.get(k).filter(|h| !h.is_null()) {
                return Err(format!(
                    "event {}: {k} is {h}, expected none\n  recorded: {have}",
                    i + 1
                ));
            }
        }
        for (k, v) in fields.iter().filter(|(k, _)| k.as_str() != "absent") {
            let h = have.get(k).unwrap_or(&Value::Null);
            if h != v {
                return Err(format!(
                    "event {}: {k} is {h}, expected {v}\n  recorded: {have}",
                    i + 1
                ));
            }
        }
    }
    if got.len() > expect.len() {
        return Err(format!(
            "event {}: recorded {}, expected no more events",
            expect.len() + 1,
            got[expect.len()]
        ));
    }
    Ok(())
}

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/workflow-cases")
}

#[test]
fn workflow_cases() {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .expect("tests/workflow-cases")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 25, "only {} cases", paths.len());
    let mut failed: BTreeMap<String, String> = BTreeMap::new();
    for p in &paths {
        if let Err(e) = run(p) {
            failed.insert(p.file_name().unwrap().to_string_lossy().into(), e);
        }
    }
    let report: Vec<String> = failed.iter().map(|(f, e)| format!("{f}: {e}")).collect();
    assert!(
        failed.is_empty(),
        "{} of {} workflow cases failed:\n{}",
        failed.len(),
        paths.len(),
        report.join("\n")
    );
}

/// The runner itself: a case whose expectation is wrong fails, naming the
/// event that differs.
#[test]
fn a_wrong_expectation_names_the_first_differing_event() {
    let dir = std::env::temp_dir().join(format!("charter-wf-case-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("wrong.toml");
    std::fs::write(
        &p,
        r#"
description = "wrong on purpose"
[workflow]
[[workflow.steps]]
id = "a"
plugin = "p"
[[feed]]
ok = 1
[[expect]]
type = "step-attempt"
outcome = "failed"
"#,
    )
    .unwrap();
    let e = run(&p).unwrap_err();
    assert!(e.starts_with("event 1: outcome is \"ok\""), "{e}");
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(RunStatus::Completed.as_str(), "completed");
}
