//! `charter run`, `charter runs …` and `charter escalations …`: durable
//! workflow runs and the failed steps handed to people.

use std::collections::{BTreeMap, HashSet};

use charter_audit::{Event, Record};
use charter_runtime::error::{EXIT_ERROR, EXIT_OK, EXIT_WAITING};
use charter_runtime::workflow::{EscalationState, RunState, status};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::control::Control;
use crate::error::ApiError;
use crate::validate;

/// One step attempt as the run remembers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// The step id.
    pub step: String,
    /// 1, 2, ... per entry into the step.
    pub attempt: u32,
    /// `ok`, `failed`, `waiting-approval`, `skipped`, ...
    pub outcome: String,
    /// The failure class (`retryable`, `timeout`, `denied`, ...).
    pub failure: Option<String>,
    /// The error.
    pub error: Option<String>,
    /// Calls replayed from the journal.
    pub replayed: u64,
    /// How long it ran.
    pub duration_us: u64,
    /// When it ended.
    pub time_ms: u64,
}

/// A workflow run, folded from its events (`runs list --json` entries).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// `R-…`
    pub id: String,
    /// The workflow's name.
    pub workflow: String,
    /// `sha256:` of the definition it started on.
    pub workflow_digest: String,
    /// The run's input.
    pub input: Value,
    /// Who started it.
    pub initiator: Option<String>,
    /// running, retry-wait, waiting-approval, escalated, completed,
    /// failed, cancelled.
    pub status: String,
    /// When it started.
    pub started_ms: u64,
    /// The sequence number of its `run-started` event.
    pub started_seq: u64,
    /// When it ended.
    pub finished_ms: Option<u64>,
    /// The step to run next (or the one waiting or escalated).
    pub cursor: Option<String>,
    /// Attempts made of the cursor step since it was entered.
    pub attempt: u32,
    /// Attempts that do not count against the retry policy.
    #[serde(default)]
    pub budget_from: u32,
    /// When the next retry is due.
    pub retry_at_ms: Option<u64>,
    /// The proposal it waits on.
    pub proposal: Option<String>,
    /// The escalation it waits on.
    pub escalation: Option<String>,
    /// Outputs of the steps that completed.
    pub outputs: BTreeMap<String, Value>,
    /// The last completed step's output; the run's output once it ends
    /// (absent before any step completed; a `null` output is present).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "charter_audit::present"
    )]
    pub output: Option<Value>,
    /// Why it failed.
    pub error: Option<String>,
    /// Every step attempt.
    pub history: Vec<Attempt>,
    /// Attempts retried.
    pub retries: u64,
    /// Escalations raised.
    pub escalations: u64,
    /// The plugin versions it runs (plugin → digest), recorded at its start.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub plugins: BTreeMap<String, String>,
}

impl From<RunState> for Run {
    fn from(st: RunState) -> Run {
        // Every field named: a field the runtime adds must be decided here.
        let RunState {
            id,
            workflow,
            workflow_digest,
            input,
            initiator,
            status,
            started_ms,
            started_seq,
            finished_ms,
            cursor,
            attempt,
            budget_from,
            retry_at_ms,
            proposal,
            escalation,
            outputs,
            output,
            error,
            history,
            retries,
            escalations,
            plugins,
        } = st;
        Run {
            id,
            workflow,
            workflow_digest,
            input,
            initiator,
            status: status.to_string(),
            started_ms,
            started_seq,
            finished_ms,
            cursor,
            attempt,
            budget_from,
            retry_at_ms,
            proposal,
            escalation,
            outputs,
            output,
            error,
            history: history.into_iter().map(Attempt::from).collect(),
            retries,
            escalations,
            plugins,
        }
    }
}

impl From<charter_runtime::workflow::state::AttemptRecord> for Attempt {
    fn from(a: charter_runtime::workflow::state::AttemptRecord) -> Attempt {
        let charter_runtime::workflow::state::AttemptRecord {
            step,
            attempt,
            outcome,
            failure,
            error,
            replayed,
            duration_us,
            time_ms,
        } = a;
        Attempt {
            step,
            attempt,
            outcome,
            failure,
            error,
            replayed,
            duration_us,
            time_ms,
        }
    }
}

impl Run {
    /// The exit code the run's state reads as: 0 completed, 4 waiting for
    /// people (an approval, an escalation), 1 failed or cancelled (or not
    /// finished here: running, retry-wait).
    pub fn exit_code(&self) -> i32 {
        match self.status.as_str() {
            status::COMPLETED => EXIT_OK,
            status::WAITING_APPROVAL | status::ESCALATED => EXIT_WAITING,
            _ => EXIT_ERROR,
        }
    }

    /// What a person or script should do next with the run.
    pub fn next(&self) -> Option<String> {
        match self.status.as_str() {
            status::WAITING_APPROVAL => self.proposal.as_ref().map(|p| {
                format!("waiting for approval of {p}: `charter proposals show {p}`, then approve or reject (the run resumes)")
            }),
            status::ESCALATED => self.escalation.as_ref().map(|e| {
                format!("escalated as {e}: `charter escalations resolve {e} --as USER --action retry|skip|fail`")
            }),
            status::RUNNING | status::RETRY_WAIT => Some(format!(
                "not finished here: `charter runs resume {}`",
                self.id
            )),
            _ => None,
        }
    }
}

/// A decision people made on a run (`runs show --json`'s `decisions`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunDecision {
    /// The proposal decided on (or `escalation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposal: Option<String>,
    /// The escalation resolved (or `proposal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<String>,
    /// Who.
    pub by: String,
    /// How they were proven: `token` or `claimed` (absent for decisions
    /// recorded before Charter recorded it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    /// `approve`, `reject`, `retry`, `skip`, `fail`.
    pub action: String,
    /// Whether it was accepted (a refused attempt is recorded too).
    pub accepted: bool,
    /// Their comment.
    pub comment: Option<String>,
    /// Why it was refused.
    pub reason: Option<String>,
    /// When.
    pub time_ms: u64,
}

/// `charter run --json`, `runs show --json`, `runs cancel --json`,
/// `escalations resolve --json`: the run, `exit_code` and `next`
/// (`decisions` in `runs show` only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The run.
    #[serde(flatten)]
    pub run: Run,
    /// Who decided on its proposals and escalations (`runs show`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decisions: Option<Vec<RunDecision>>,
    /// The host calls of each step attempt, in the order of `history`
    /// (`runs show`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal: Option<Vec<AttemptJournal>>,
    /// The exit code its state reads as.
    pub exit_code: i32,
    /// What to do next, or null.
    pub next: Option<String>,
}

impl RunReport {
    /// The report of `run` (no decisions).
    pub fn new(run: Run) -> RunReport {
        RunReport {
            exit_code: run.exit_code(),
            next: run.next(),
            run,
            decisions: None,
            journal: None,
        }
    }
}

/// The host calls one step attempt made (`runs show --json`'s `journal`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptJournal {
    /// The step.
    pub step: String,
    /// The attempt (as in `history`).
    pub attempt: u32,
    /// Its calls, in the order the plugin made them.
    pub calls: Vec<JournalCall>,
}

/// One host call of a step attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalCall {
    /// 1-based position among the attempt's journaled calls.
    pub seq: u64,
    /// The call's id in the log (`call`, `call-result` events).
    pub call: String,
    /// The host function (`charter:host/kv@0.1.0#set`, ...).
    pub function: String,
    /// `allow`, `propose` or `deny`.
    pub decision: String,
    /// Answered from the journal (an earlier attempt's recorded result)
    /// instead of executed.
    pub replayed: bool,
    /// Whether the execution succeeded (none: not executed, or no result
    /// recorded).
    pub ok: Option<bool>,
    /// How long it took, when recorded (microseconds).
    pub duration_us: Option<u64>,
    /// The proposal it made or ran on.
    pub proposal: Option<String>,
}

/// The journal of run `run`: per `step-attempt` event (the order of
/// `history`), the calls it executed (the `call` events carrying its
/// journal position) and the ones it replayed (an earlier attempt's
/// record of the same step's call at the positions it did not execute).
///
/// Long on purpose: one arm per event kind it joins (call, proposal,
/// result, attempt), sharing the maps that tie them together.
fn journal(records: &[Record], run: &str) -> Vec<AttemptJournal> {
    use std::collections::HashMap;
    // (step, attempt) → calls executed so far; (step, seq) → the latest
    // recorded call there; call id → where it is.
    let mut open: HashMap<(String, u32), Vec<JournalCall>> = HashMap::new();
    let mut latest: HashMap<(String, u64), JournalCall> = HashMap::new();
    let mut at: HashMap<String, (String, u32, u64)> = HashMap::new();
    let mut proposals: HashMap<String, String> = HashMap::new();
    let mut out = Vec::new();
    for r in records {
        match &r.event {
            Event::Call {
                call,
                function,
                decision,
                journal: Some(j),
                ..
            } if j.run == run => {
                let c = JournalCall {
                    seq: j.seq,
                    call: call.clone(),
                    function: function.clone(),
                    decision: decision.to_string(),
                    replayed: false,
                    ok: None,
                    duration_us: None,
                    proposal: None,
                };
                at.insert(call.clone(), (j.step.clone(), j.attempt, j.seq));
                latest.insert((j.step.clone(), j.seq), c.clone());
                open.entry((j.step.clone(), j.attempt)).or_default().push(c);
            }
            Event::Proposal {
                id,
                call,
                journal: Some(j),
                ..
            } if j.run == run => {
                proposals.insert(call.clone(), id.clone());
            }
            Event::CallResult {
                call,
                ok,
                duration_us,
                proposal,
                ..
            } => {
                let Some((step, attempt, seq)) = at.get(call.as_str()) else {
                    continue;
                };
                let set = |c: &mut JournalCall| {
                    c.ok = Some(*ok);
                    c.duration_us = (*duration_us > 0).then_some(*duration_us);
                    if proposal.is_some() {
                        c.proposal.clone_from(proposal);
                    }
                };
                if let Some(c) = open
                    .get_mut(&(step.clone(), *attempt))
                    .and_then(|v| v.iter_mut().rev().find(|c| &c.call == call))
                {
                    set(c);
                }
                if let Some(c) = latest.get_mut(&(step.clone(), *seq)) {
                    set(c);
                }
            }
            Event::StepAttempt {
                run: of,
                step,
                attempt,
                replayed,
                ..
            } if of == run => {
                let mut calls = open.remove(&(step.clone(), *attempt)).unwrap_or_default();
                for c in &mut calls {
                    if c.proposal.is_none() {
                        c.proposal = proposals.get(&c.call).cloned();
                    }
                }
                // The positions it did not execute, from 1 up: replayed.
                let executed: HashSet<u64> = calls.iter().map(|c| c.seq).collect();
                let mut replays = Vec::new();
                let mut seq = 0;
                while (replays.len() as u64) < *replayed && seq < *replayed + executed.len() as u64
                {
                    seq += 1;
                    if executed.contains(&seq) {
                        continue;
                    }
                    if let Some(c) = latest.get(&(step.clone(), seq)) {
                        replays.push(JournalCall {
                            replayed: true,
                            duration_us: None,
                            ..c.clone()
                        });
                    }
                }
                calls.extend(replays);
                calls.sort_by_key(|c| c.seq);
                out.push(AttemptJournal {
                    step: step.clone(),
                    attempt: *attempt,
                    calls,
                });
            }
            _ => {}
        }
    }
    out
}

/// `charter run WORKFLOW`: start a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRequest {
    /// The workflow's name.
    pub workflow: String,
    /// The run's input (at most 4 MiB as JSON).
    pub input: Value,
    /// Who starts it (recorded; may not approve what it proposes).
    pub initiator: String,
    /// Only record the run; the caller drives it elsewhere
    /// (`charter run --detach` hands it to a background process).
    #[serde(default)]
    pub detach: bool,
}

/// What `charter run` answers: the run driven as far as it goes, or
/// (detached) only recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RunResponse {
    /// Driven until it completed, failed or waits for people.
    Driven(Box<RunReport>),
    /// Recorded only.
    Detached(Detached),
}

/// `charter run --detach --json`: `{run, status: "started", detached: true}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detached {
    /// The run's id.
    pub run: String,
    /// `started`.
    pub status: String,
    /// Always true.
    pub detached: bool,
}

/// `charter runs list [--status S]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunsListRequest {
    /// Only runs in this status.
    #[serde(default)]
    pub status: Option<String>,
    /// Only runs of this workflow.
    #[serde(default)]
    pub workflow: Option<String>,
    /// Only runs this identity started.
    #[serde(default)]
    pub initiator: Option<String>,
    /// Only runs started at or after this time ([`validate::time`]).
    #[serde(default)]
    pub from: Option<String>,
    /// Only runs started at or before this time.
    #[serde(default)]
    pub to: Option<String>,
}

/// `charter runs list --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunsList {
    /// Runs, newest first.
    pub runs: Vec<Run>,
}

/// `charter runs show ID`, `charter runs resume ID`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunId {
    /// The run's id.
    pub id: String,
}

/// `charter runs resume [ID]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeRequest {
    /// The run; none: every run that can go on.
    #[serde(default)]
    pub id: Option<String>,
}

/// One resumed run, or why it could not be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Resumed {
    /// The run, driven as far as it goes.
    Run(Box<Run>),
    /// It could not be driven.
    Failed {
        /// The run's id.
        id: String,
        /// Why.
        error: String,
    },
}

/// `charter runs resume --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResumeReport {
    /// Every run resumed.
    pub runs: Vec<Resumed>,
}

impl ResumeReport {
    /// The worst exit code of the runs: any failure outranks waiting for
    /// people, and waiting outranks success.
    pub fn exit_code(&self) -> i32 {
        self.runs
            .iter()
            .map(|r| match r {
                Resumed::Run(run) => run.exit_code(),
                // A resume is never refused by governance (only a decision
                // is): a run that cannot be driven is an error.
                Resumed::Failed { .. } => EXIT_ERROR,
            })
            .fold(EXIT_OK, worst)
    }
}

/// The worse of two exit codes: any failure outranks waiting for people,
/// and waiting outranks success.
pub fn worst(a: i32, b: i32) -> i32 {
    let rank = |c: i32| match c {
        EXIT_OK => 0,
        EXIT_WAITING => 1,
        c => 2 + c,
    };
    if rank(b) > rank(a) { b } else { a }
}

/// `charter runs cancel ID --as USER`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelRequest {
    /// The run.
    pub id: String,
    /// Who cancels it (recorded).
    pub by: String,
}

/// An escalation: a failed step handed to people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escalation {
    /// `E-…`
    pub id: String,
    /// The run.
    pub run: String,
    /// The step that failed.
    pub step: String,
    /// The role that may resolve it.
    pub role: String,
    /// Why the step was escalated.
    pub reason: String,
    /// When.
    pub created_ms: u64,
    /// `open` or `resolved`.
    pub status: String,
    /// Who resolved it.
    pub resolved_by: Option<String>,
    /// `retry`, `skip` or `fail`.
    pub action: Option<String>,
    /// Their comment.
    pub comment: Option<String>,
}

impl From<EscalationState> for Escalation {
    fn from(e: EscalationState) -> Escalation {
        let EscalationState {
            id,
            run,
            step,
            role,
            reason,
            created_ms,
            status,
            resolved_by,
            action,
            comment,
        } = e;
        Escalation {
            id,
            run,
            step,
            role,
            reason,
            created_ms,
            status,
            resolved_by,
            action,
            comment,
        }
    }
}

/// `charter escalations list [--all]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationsListRequest {
    /// Resolved escalations too.
    #[serde(default)]
    pub all: bool,
}

/// `charter escalations list --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationsList {
    /// The escalations.
    pub escalations: Vec<Escalation>,
}

/// What resolving an escalation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResolveAction {
    /// Run the step again.
    Retry,
    /// Skip it, with `output` standing for its output.
    Skip,
    /// Fail the run.
    Fail,
}

impl ResolveAction {
    /// `retry`, `skip`, `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            ResolveAction::Retry => "retry",
            ResolveAction::Skip => "skip",
            ResolveAction::Fail => "fail",
        }
    }
}

impl std::str::FromStr for ResolveAction {
    type Err = ApiError;
    fn from_str(s: &str) -> Result<ResolveAction, ApiError> {
        match s {
            "retry" => Ok(ResolveAction::Retry),
            "skip" => Ok(ResolveAction::Skip),
            "fail" => Ok(ResolveAction::Fail),
            other => Err(ApiError::usage(format!(
                "action {} is not retry, skip or fail",
                validate::shown(other)
            ))),
        }
    }
}

/// `charter escalations resolve ID --as USER --action A`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolveRequest {
    /// The escalation.
    pub id: String,
    /// Who resolves it: an approver holding its role.
    pub by: String,
    /// What to do.
    pub action: ResolveAction,
    /// For `skip`: the step's output (at most 4 MiB as JSON).
    #[serde(default)]
    pub output: Option<Value>,
    /// Recorded with the resolution.
    #[serde(default)]
    pub comment: Option<String>,
}

/// The decisions people made on a run, from the log: on the proposals
/// its steps waited on (approvals, rejections, refused attempts) and on
/// its escalations.
fn decisions(records: &[Record], run: &str) -> Vec<RunDecision> {
    let proposals: HashSet<&str> = records
        .iter()
        .filter_map(|r| match &r.event {
            Event::StepAttempt {
                run: of,
                proposal: Some(p),
                ..
            } if of == run => Some(p.as_str()),
            _ => None,
        })
        .collect();
    records
        .iter()
        .filter_map(|r| match &r.event {
            Event::ApprovalDecision {
                proposal,
                by,
                approve,
                comment,
                accepted,
                reason,
                auth,
            } if proposals.contains(proposal.as_str()) => Some(RunDecision {
                proposal: Some(proposal.clone()),
                escalation: None,
                by: by.clone(),
                auth: auth.clone(),
                action: if *approve { "approve" } else { "reject" }.to_string(),
                accepted: *accepted,
                comment: comment.clone(),
                reason: reason.clone(),
                time_ms: r.time_ms,
            }),
            Event::EscalationResolved {
                id,
                run: of,
                by,
                action,
                comment,
                accepted,
                reason,
                auth,
                ..
            } if of == run => Some(RunDecision {
                proposal: None,
                escalation: Some(id.clone()),
                by: by.clone(),
                auth: auth.clone(),
                action: action.clone(),
                accepted: *accepted,
                comment: comment.clone(),
                reason: reason.clone(),
                time_ms: r.time_ms,
            }),
            _ => None,
        })
        .collect()
}

impl Control {
    /// `charter run`: start a run and drive it until it completes, fails or
    /// waits for people; with `detach`, only record it.
    pub async fn run(&self, req: &RunRequest) -> Result<RunResponse, ApiError> {
        validate::name("workflow", &req.workflow)?;
        validate::name("initiator", &req.initiator)?;
        validate::json_size("the input", &req.input)?;
        let host = self.host()?;
        let res = if req.detach {
            host.start_run(&req.workflow, req.input.clone(), Some(&req.initiator))
                .await
                .map(|st| {
                    RunResponse::Detached(Detached {
                        run: st.id,
                        status: "started".into(),
                        detached: true,
                    })
                })
        } else {
            host.run_workflow(&req.workflow, req.input.clone(), Some(&req.initiator))
                .await
                .map(|st| RunResponse::Driven(Box::new(RunReport::new(st.into()))))
        };
        self.flush()?;
        Ok(res?)
    }

    /// A long-running host's `run`: record the run (durable before this
    /// returns), drive it in this process in the background, and answer
    /// at once with its id. Its progress is `runs_show`; a crash leaves it
    /// to the next start-up's resume like any run.
    pub async fn start_run(&self, req: &RunRequest) -> Result<Detached, ApiError> {
        validate::name("workflow", &req.workflow)?;
        validate::name("initiator", &req.initiator)?;
        validate::json_size("the input", &req.input)?;
        let host = self.host()?;
        let st = host
            .start_run(&req.workflow, req.input.clone(), Some(&req.initiator))
            .await?;
        host.drive_soon(&st.id);
        Ok(Detached {
            run: st.id,
            status: "started".into(),
            detached: true,
        })
    }

    /// Every run and escalation: through the state index (this process's
    /// host's, or opened read-only when no other process holds the
    /// deployment; its cost follows the runs, not the log), from the whole
    /// log file otherwise.
    fn runs_and_escalations(&self) -> Result<(Vec<RunState>, Vec<EscalationState>), ApiError> {
        if let Some(h) = self.existing_host() {
            return Ok((h.runs(), h.escalations()));
        }
        // (A shared backend's index is not the data directory's.)
        let offline = match self.shared_backend() {
            true => None,
            false => charter_runtime::index::runs_offline(&self.deployment().data_dir),
        };
        match offline {
            Some(r) => Ok(r),
            None => Ok(charter_runtime::workflow::state::from_records(
                &self.records()?,
            )),
        }
    }

    /// `charter runs list`: every run, read without a host.
    pub fn runs_list(&self, req: &RunsListRequest) -> Result<RunsList, ApiError> {
        if let Some(s) = &req.status {
            validate::filter("status", s)?;
        }
        for (what, v) in [("workflow", &req.workflow), ("initiator", &req.initiator)] {
            if let Some(v) = v {
                validate::filter_name(what, v)?;
            }
        }
        let (from, to) = validate::time_range(req.from.as_deref(), req.to.as_deref())?;
        let (from, to) = (from.unwrap_or(0), to.unwrap_or(u64::MAX));
        let (runs, _) = self.runs_and_escalations()?;
        Ok(RunsList {
            runs: runs
                .into_iter()
                .filter(|r| req.status.as_ref().is_none_or(|s| &r.status == s))
                .filter(|r| req.workflow.as_ref().is_none_or(|w| &r.workflow == w))
                .filter(|r| {
                    req.initiator
                        .as_ref()
                        .is_none_or(|i| r.initiator.as_ref() == Some(i))
                })
                .filter(|r| (from..=to).contains(&r.started_ms))
                .map(Run::from)
                .collect(),
        })
    }

    /// `charter runs show`: one run and who decided what on it. Only that
    /// run's events are read, through the state index: the open index of
    /// this process's host (a served `charter up`, whatever the backend),
    /// or the data directory's, opened for the read when no other process
    /// holds it. Otherwise (or if the index and the log disagree) the
    /// whole log is read.
    pub fn runs_show(&self, req: &RunId) -> Result<RunReport, ApiError> {
        validate::id("run", &req.id)?;
        let indexed = match self.existing_host() {
            Some(h) => h
                .records_of_run(&req.id)
                .inspect_err(|e| {
                    tracing::warn!(run = %req.id, "runs show through the index failed ({e}); reading the whole log");
                })
                .ok(),
            None if self.shared_backend() => None,
            None => {
                charter_runtime::index::run_records_offline(&self.deployment().data_dir, &req.id)
            }
        };
        let records = match indexed {
            Some(r) => r,
            None => self.records()?,
        };
        let runs = charter_runtime::workflow::state::from_records(&records).0;
        match runs.into_iter().find(|r| r.id == req.id) {
            Some(st) => {
                let mut report = RunReport::new(st.into());
                report.decisions = Some(decisions(&records, &req.id));
                report.journal = Some(journal(&records, &req.id));
                Ok(report)
            }
            None => Err(charter_runtime::workflow::RunError::UnknownRun(req.id.clone()).into()),
        }
    }

    /// `charter runs resume`: drive one run, or every run that can go on,
    /// from its last event.
    pub async fn runs_resume(&self, req: &ResumeRequest) -> Result<ResumeReport, ApiError> {
        if let Some(id) = &req.id {
            validate::id("run", id)?;
        }
        let host = self.host()?;
        let results = match &req.id {
            Some(id) => vec![(id.clone(), host.drive(id).await)],
            None => host.resume_runs().await,
        };
        self.flush()?;
        Ok(ResumeReport {
            runs: results
                .into_iter()
                .map(|(id, r)| match r {
                    Ok(st) => Resumed::Run(Box::new(st.into())),
                    Err(e) => Resumed::Failed {
                        id,
                        error: e.to_string(),
                    },
                })
                .collect(),
        })
    }

    /// `charter runs cancel`: end a run that has not ended.
    pub async fn runs_cancel(&self, req: &CancelRequest) -> Result<RunReport, ApiError> {
        validate::id("run", &req.id)?;
        validate::name("user", &req.by)?;
        let host = self.host()?;
        let res = host.cancel_run(&req.id, &req.by).await;
        self.flush()?;
        Ok(RunReport::new(res?.into()))
    }

    /// `charter escalations list`: read without a host (see
    /// `runs_and_escalations`).
    pub fn escalations_list(
        &self,
        req: &EscalationsListRequest,
    ) -> Result<EscalationsList, ApiError> {
        let (_, escalations) = self.runs_and_escalations()?;
        Ok(EscalationsList {
            escalations: escalations
                .into_iter()
                .filter(|e| req.all || e.status == "open")
                .map(Escalation::from)
                .collect(),
        })
    }

    /// `charter escalations resolve`: only an approver holding the
    /// escalation's role may; the run goes on at once.
    pub async fn escalations_resolve(&self, req: &ResolveRequest) -> Result<RunReport, ApiError> {
        validate::id("escalation", &req.id)?;
        validate::name("user", &req.by)?;
        validate::comment(req.comment.as_deref())?;
        if let Some(o) = &req.output {
            validate::json_size("the output", o)?;
        }
        let host = self.host()?;
        let res = host
            .resolve_escalation(
                &req.id,
                &req.by,
                req.action.as_str(),
                req.output.clone(),
                req.comment.clone(),
            )
            .await;
        self.flush()?;
        Ok(RunReport::new(res?.into()))
    }
}
