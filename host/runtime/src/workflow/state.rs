//! Run and escalation state, derived from the log's events alone.
//!
//! [`RunState::apply`] folds one event into a run; the index keeps the
//! folded state of every run in the store (`@runs`) and of every
//! escalation (`@escalations`), and the engine folds the events it appends
//! the same way, so both always agree with the log.

use std::collections::BTreeMap;

use charter_audit::Event;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::types::{EscalationAction, RunStatus, StepOutcome};

/// Namespace of runs in the state store.
pub const RUNS: &str = "@runs";
/// Namespace of escalations in the state store.
pub const ESCALATIONS: &str = "@escalations";

/// Run statuses as strings (for callers that match on text; the typed
/// form is [`RunStatus`]).
pub mod status {
    use super::RunStatus;

    pub const RUNNING: &str = RunStatus::Running.as_str();
    pub const RETRY_WAIT: &str = RunStatus::RetryWait.as_str();
    pub const WAITING_APPROVAL: &str = RunStatus::WaitingApproval.as_str();
    pub const ESCALATED: &str = RunStatus::Escalated.as_str();
    pub const COMPLETED: &str = RunStatus::Completed.as_str();
    pub const FAILED: &str = RunStatus::Failed.as_str();
    pub const CANCELLED: &str = RunStatus::Cancelled.as_str();

    pub fn is_terminal(s: &str) -> bool {
        s.parse::<RunStatus>().is_ok_and(RunStatus::is_terminal)
    }
}

/// One step attempt as the run remembers it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub step: String,
    pub attempt: u32,
    pub outcome: String,
    pub failure: Option<String>,
    pub error: Option<String>,
    pub replayed: u64,
    pub duration_us: u64,
    pub time_ms: u64,
}

/// A workflow run, folded from its events.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunState {
    pub id: String,
    pub workflow: String,
    pub workflow_digest: String,
    pub input: Value,
    pub initiator: Option<String>,
    pub status: RunStatus,
    pub started_ms: u64,
    pub started_seq: u64,
    pub finished_ms: Option<u64>,
    /// The step to run next (or the one waiting / escalated).
    pub cursor: Option<String>,
    /// Attempts made of the cursor step since it was entered.
    pub attempt: u32,
    /// Attempts that do not count against the retry policy (those before
    /// an approval or an escalation's `retry`).
    #[serde(default)]
    pub budget_from: u32,
    pub retry_at_ms: Option<u64>,
    pub proposal: Option<String>,
    pub escalation: Option<String>,
    /// Outputs of the steps that completed, by step id.
    pub outputs: BTreeMap<String, Value>,
    /// The last completed step's output; the run's output when it ends
    /// (a `null` output is `Some(Null)`, also when read back).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "charter_audit::present"
    )]
    pub output: Option<Value>,
    pub error: Option<String>,
    pub history: Vec<AttemptRecord>,
    pub retries: u64,
    pub escalations: u64,
    /// The plugin versions the run recorded at its start (plugin →
    /// digest); its attempts run those (`hot.rs`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub plugins: BTreeMap<String, String>,
}

/// An escalation: a failed step handed to people.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EscalationState {
    pub id: String,
    pub run: String,
    pub step: String,
    pub role: String,
    pub reason: String,
    pub created_ms: u64,
    /// `open` or `resolved`.
    pub status: String,
    pub resolved_by: Option<String>,
    pub action: Option<String>,
    pub comment: Option<String>,
}

impl RunState {
    /// A run from its `run-started` event.
    pub fn start(ev: &Event, seq: u64, time_ms: u64) -> Option<RunState> {
        let Event::RunStarted {
            run,
            workflow,
            workflow_digest,
            input,
            initiator,
            first,
            plugins,
            ..
        } = ev
        else {
            return None;
        };
        Some(RunState {
            id: run.clone(),
            workflow: workflow.clone(),
            workflow_digest: workflow_digest.clone(),
            input: input.clone(),
            initiator: initiator.clone(),
            status: RunStatus::Running,
            started_ms: time_ms,
            started_seq: seq,
            finished_ms: None,
            cursor: first.clone(),
            attempt: 0,
            budget_from: 0,
            retry_at_ms: None,
            proposal: None,
            escalation: None,
            outputs: BTreeMap::new(),
            output: None,
            error: None,
            history: Vec::new(),
            retries: 0,
            escalations: 0,
            plugins: plugins.clone(),
        })
    }

    /// This state without the run's input, its steps' outputs and its
    /// attempt history, which are most of a copy's cost: enough to fold
    /// an attempt's events and ask [`crate::workflow::engine::settled`]
    /// whether the run ends (status, cursor, last output, what the
    /// driver's `env` reads). Not for `engine::next`, whose templates and
    /// conditions read the input and outputs.
    pub fn without_history(&self) -> RunState {
        RunState {
            id: self.id.clone(),
            workflow: self.workflow.clone(),
            workflow_digest: self.workflow_digest.clone(),
            input: Value::Null,
            initiator: self.initiator.clone(),
            status: self.status,
            started_ms: self.started_ms,
            started_seq: self.started_seq,
            finished_ms: self.finished_ms,
            cursor: self.cursor.clone(),
            attempt: self.attempt,
            budget_from: self.budget_from,
            retry_at_ms: self.retry_at_ms,
            proposal: self.proposal.clone(),
            escalation: self.escalation.clone(),
            outputs: BTreeMap::new(),
            output: self.output.clone(),
            error: self.error.clone(),
            history: Vec::new(),
            retries: self.retries,
            escalations: self.escalations,
            plugins: self.plugins.clone(),
        }
    }

    /// Fold one later event of this run.
    pub fn apply(&mut self, ev: &Event, time_ms: u64) {
        match ev {
            Event::StepAttempt { .. } => self.attempt_ended(ev, time_ms),
            Event::Escalated { id, .. } => {
                self.escalations += 1;
                self.escalation = Some(id.clone());
                self.status = RunStatus::Escalated;
            }
            Event::EscalationResolved {
                action,
                output,
                accepted: true,
                next,
                ..
            } => {
                self.escalation = None;
                match action.parse::<EscalationAction>() {
                    Ok(EscalationAction::Retry) => {
                        self.budget_from = self.attempt;
                        self.status = RunStatus::Running;
                    }
                    Ok(EscalationAction::Skip) => {
                        if let (Some(step), Some(o)) = (&self.cursor, output) {
                            self.outputs.insert(step.clone(), o.clone());
                            self.output = Some(o.clone());
                        }
                        self.enter(next.clone());
                    }
                    _ => {}
                }
            }
            Event::RunFinished {
                status,
                output,
                error,
                ..
            } => {
                // A finish the log does not know still ends the run.
                self.status = status.parse().unwrap_or(RunStatus::Failed);
                self.finished_ms = Some(time_ms);
                if output.is_some() {
                    self.output = output.clone();
                }
                if error.is_some() {
                    self.error = error.clone();
                }
                self.cursor = None;
            }
            _ => {}
        }
    }

    /// Fold a `step-attempt`: the attempt joins the history, and the run
    /// moves on, waits (to retry, or for people) or takes the failure path.
    fn attempt_ended(&mut self, ev: &Event, time_ms: u64) {
        let Event::StepAttempt {
            step,
            attempt,
            outcome,
            output,
            error,
            failure,
            retry_at_ms,
            proposal,
            replayed,
            duration_us,
            next,
            ..
        } = ev
        else {
            return;
        };
        self.history.push(AttemptRecord {
            step: step.clone(),
            attempt: *attempt,
            outcome: outcome.clone(),
            failure: failure.clone(),
            error: error.clone(),
            replayed: *replayed,
            duration_us: *duration_us,
            time_ms,
        });
        self.retry_at_ms = None;
        self.proposal = None;
        // An outcome the log does not know reads as a failure.
        match outcome.parse().unwrap_or(StepOutcome::Failed) {
            StepOutcome::Ok | StepOutcome::Skipped => {
                if let Some(o) = output {
                    self.outputs.insert(step.clone(), o.clone());
                    self.output = Some(o.clone());
                }
                self.enter(next.clone());
            }
            StepOutcome::AwaitingApproval => {
                self.attempt = *attempt;
                self.budget_from = *attempt;
                self.proposal = proposal.clone();
                self.status = RunStatus::WaitingApproval;
            }
            StepOutcome::Failed => {
                self.error = error.clone();
                if retry_at_ms.is_some() {
                    self.retries += 1;
                    self.attempt = *attempt;
                    self.retry_at_ms = *retry_at_ms;
                    self.status = RunStatus::RetryWait;
                } else if let Some(n) = next {
                    // The failure path runs another step.
                    self.enter(Some(n.clone()));
                } else {
                    self.attempt = *attempt;
                }
            }
        }
    }

    /// The run goes to step `cursor` (none: it ends), attempt 1.
    fn enter(&mut self, cursor: Option<String>) {
        self.cursor = cursor;
        self.attempt = 0;
        self.budget_from = 0;
        self.status = RunStatus::Running;
    }

    pub fn is_terminal(&self) -> bool {
        self.status.is_terminal()
    }
}

impl EscalationState {
    /// Fold an accepted `escalation-resolved` event into this escalation.
    pub fn apply(&mut self, ev: &Event) {
        if let Event::EscalationResolved {
            by,
            action,
            comment,
            accepted: true,
            ..
        } = ev
        {
            self.status = "resolved".into();
            self.resolved_by = Some(by.clone());
            self.action = Some(action.clone());
            self.comment = comment.clone();
        }
    }

    /// Escalation `id` folded from `records` (a run's records from the
    /// log): what a resolution decides on.
    pub fn from_records(id: &str, records: &[charter_audit::Record]) -> Option<EscalationState> {
        records
            .iter()
            .fold(None::<EscalationState>, |acc, r| match &r.event {
                Event::Escalated { id: e, .. } if e == id => {
                    EscalationState::from_event(&r.event, r.time_ms)
                }
                Event::EscalationResolved { id: e, .. } if e == id => acc.map(|mut x| {
                    x.apply(&r.event);
                    x
                }),
                _ => acc,
            })
    }

    pub fn from_event(ev: &Event, time_ms: u64) -> Option<EscalationState> {
        let Event::Escalated {
            id,
            run,
            step,
            role,
            reason,
        } = ev
        else {
            return None;
        };
        Some(EscalationState {
            id: id.clone(),
            run: run.clone(),
            step: step.clone(),
            role: role.clone(),
            reason: reason.clone(),
            created_ms: time_ms,
            status: "open".into(),
            resolved_by: None,
            action: None,
            comment: None,
        })
    }
}

/// Every run and escalation folded from log records alone: what read-only
/// commands show without opening the deployment (no lock, no store).
pub fn from_records(records: &[charter_audit::Record]) -> (Vec<RunState>, Vec<EscalationState>) {
    let mut runs: BTreeMap<String, RunState> = BTreeMap::new();
    let mut escs: BTreeMap<String, EscalationState> = BTreeMap::new();
    for r in records {
        match &r.event {
            Event::RunStarted { run, .. } => {
                if let Some(st) = RunState::start(&r.event, r.seq, r.time_ms) {
                    runs.insert(run.clone(), st);
                }
            }
            Event::StepAttempt { run, .. }
            | Event::Escalated { run, .. }
            | Event::EscalationResolved { run, .. }
            | Event::RunFinished { run, .. } => {
                if let Some(st) = runs.get_mut(run) {
                    st.apply(&r.event, r.time_ms);
                }
                if let Some(e) = EscalationState::from_event(&r.event, r.time_ms) {
                    escs.insert(e.id.clone(), e);
                }
                if let Event::EscalationResolved { id, .. } = &r.event
                    && let Some(e) = escs.get_mut(id)
                {
                    e.apply(&r.event);
                }
            }
            _ => {}
        }
    }
    let mut runs: Vec<RunState> = runs.into_values().collect();
    runs.sort_by_key(|r| std::cmp::Reverse(r.started_seq));
    let mut escs: Vec<EscalationState> = escs.into_values().collect();
    escs.sort_by_key(|e| std::cmp::Reverse(e.created_ms));
    (runs, escs)
}
