//! Durable workflows: runs of ordered steps whose every state change is an
//! event in the log, so a run survives crashes and restarts and can wait
//! days for people.
//!
//! Two halves:
//! - the engine (`engine.rs`) decides: given the run's state, its
//!   definition and what happened, which events to append. It does no IO
//!   and reads no clock; its behaviour is the cases in
//!   `host/runtime/tests/workflow-cases/`;
//! - the driver (this file, [`Host::drive`]) does the IO: it claims the
//!   run, asks the engine what comes next, runs the plugin step against its
//!   journal, feeds the outcome back, and commits the step's events (its
//!   calls, decisions, kv writes, the attempt and where the run goes next)
//!   in one append before asking again.
//!
//! After a crash, `charter runs resume` drives every incomplete run again;
//! a step that was cut off re-runs against its journal (`journal.rs`):
//! recorded results replay, approved calls execute, diverging calls
//! escalate as non-deterministic, and calls with an outside effect carry
//! the same idempotency key as before.
//!
//! Where a run goes is recorded, not recomputed: `run-started` names the
//! first step and every `step-attempt` names the next, so the log alone
//! tells the run's path (see `state.rs`).

pub mod engine;
pub(crate) mod journal;
pub mod state;
pub mod timers;
pub mod triggers;
pub mod types;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use charter_audit::{Event, Record, now_ms};
use charter_config::Workflow;
use serde_json::{Value, json};
use tracing::Instrument;

use crate::error::{CallError, LimitKind, LoadError};
use crate::{Host, StepOptions, index, record};
use engine::{
    AttemptPlan, Attempted, Env, Input, Next, Outcome, ProposalView, Refusal, Resolution,
};
pub use engine::{lookup, render, workflow_digest};
use journal::Journal;
pub use state::{EscalationState, RunState, status};
pub use types::{EscalationAction, FailureClass, ProposalStatus, RunStatus, StepOutcome};

/// Errors of the workflow commands.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(
        "no workflow {name:?} in the deployment (workflows: {known}); define it under [workflows.NAME] or in workflows/NAME.toml"
    )]
    UnknownWorkflow { name: String, known: String },
    #[error("no run {0} (see `charter runs list`)")]
    UnknownRun(String),
    #[error("no escalation {0} (see `charter escalations list`)")]
    UnknownEscalation(String),
    #[error(
        "run {run}: workflow {workflow} changed since the run started ({was} → {now}) and the definition it started on is not kept (or not intact) in the data directory's workflows/; restore that definition to resume the run, or cancel it"
    )]
    WorkflowChanged {
        run: String,
        workflow: String,
        was: String,
        now: String,
    },
    /// Refused by governance (recorded in the audit log).
    #[error("{id}: refused: {reason} [{rule}]")]
    Refused {
        id: String,
        rule: &'static str,
        reason: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("event log: {0}")]
    Log(String),
    /// This driver's lease on the run was taken over (it stalled past its
    /// expiry): nothing of what it was about to append was appended.
    #[error("{0}")]
    LeaseLost(String),
    /// Something this needs cannot be read now (a store error): nothing
    /// was done, and a retry may succeed.
    #[error("{0}")]
    Unavailable(String),
}

impl RunError {
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Refused { .. } => crate::error::EXIT_REFUSED,
            _ => crate::error::EXIT_ERROR,
        }
    }
}

impl From<Refusal> for RunError {
    fn from(r: Refusal) -> RunError {
        RunError::Invalid(r.to_string())
    }
}

/// The failure class of a step error (what retry policies name).
pub fn failure_class(e: &CallError) -> FailureClass {
    match e {
        CallError::Step {
            retryable: true, ..
        } => FailureClass::Retryable,
        CallError::Step { .. } => FailureClass::Fatal,
        CallError::Limit {
            kind: LimitKind::Deadline | LimitKind::HostCallTimeout,
            ..
        } => FailureClass::Timeout,
        CallError::Limit { .. } => FailureClass::Limit,
        CallError::Denied { .. } => FailureClass::Denied,
        CallError::Rejected { .. } => FailureClass::Rejected,
        CallError::NonDeterministic { .. } => FailureClass::NonDeterministic,
        CallError::AwaitingApproval { .. } => FailureClass::AwaitingApproval,
        CallError::Load(
            LoadError::Ungranted(_)
            | LoadError::Governance(_)
            | LoadError::DigestMismatch { .. }
            | LoadError::Tampered { .. }
            | LoadError::IndexDisagrees { .. }
            | LoadError::ActivationGone { .. },
        ) => FailureClass::Denied,
        CallError::Load(_) => FailureClass::Load,
        CallError::Trap { .. } | CallError::Invalid { .. } => FailureClass::Trap,
    }
}

static RUN_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A new run's id: a digest of what makes it unique in this process.
fn new_run_id(workflow: &str, deployment: &str) -> String {
    let n = RUN_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    engine::short_id(
        "R",
        &json!([workflow, now_ms(), n, std::process::id(), deployment]),
    )
}

/// Workflow `name` of `config` and its definition digest.
pub(crate) fn workflow_in(
    config: &crate::hot::config::Config,
    name: &str,
) -> Result<(Arc<Workflow>, String), RunError> {
    match (config.definitions.get(name), config.workflows.get(name)) {
        (Some(w), Some(d)) => Ok((w.clone(), d.clone())),
        _ => Err(RunError::UnknownWorkflow {
            name: name.to_string(),
            known: config
                .workflows
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

impl Host {
    /// The workflow `name` of the configuration in force: what a new run
    /// of it follows. A workflow removed from the configuration starts no
    /// run (its runs in flight go on, on their definition).
    pub fn workflow(&self, name: &str) -> Result<Arc<Workflow>, RunError> {
        workflow_in(&self.config(), name).map(|(w, _)| w)
    }

    /// The definition run `st` follows: the one it recorded at its start
    /// (`run-started.workflow_digest`), from the configuration in force if
    /// it is still that, else from the definitions kept by digest beside
    /// the plugin store (verified), so a run finishes on the steps it
    /// started on after its workflow changed, or was removed.
    pub fn definition(&self, st: &RunState) -> Result<Arc<Workflow>, RunError> {
        let config = self.config();
        if config.workflows.get(&st.workflow) == Some(&st.workflow_digest)
            && let Some(w) = config.definitions.get(&st.workflow)
        {
            return Ok(w.clone());
        }
        if let Some(w) = crate::hot::config::kept_definition(&self.data_dir, &st.workflow_digest) {
            return Ok(Arc::new(w));
        }
        Err(RunError::WorkflowChanged {
            run: st.id.clone(),
            workflow: st.workflow.clone(),
            was: st.workflow_digest.clone(),
            now: config
                .workflows
                .get(&st.workflow)
                .cloned()
                .unwrap_or_else(|| "(removed)".into()),
        })
    }

    /// Record a new run of `workflow` (durable before this returns); it
    /// does not run any step. See [`Host::run_workflow`].
    pub async fn start_run(
        &self,
        workflow: &str,
        input: Value,
        initiator: Option<&str>,
    ) -> Result<RunState, RunError> {
        self.start_run_event(workflow, input, initiator, None).await
    }

    /// Start a run and drive it until it completes, fails, waits for
    /// people or is escalated.
    pub async fn run_workflow(
        &self,
        workflow: &str,
        input: Value,
        initiator: Option<&str>,
    ) -> Result<RunState, RunError> {
        let st = self.start_run(workflow, input, initiator).await?;
        self.drive_state(st, true).await
    }

    pub fn run(&self, id: &str) -> Option<RunState> {
        index::get_json(&*self.services.store, state::RUNS, id)
    }

    /// Every run, newest first.
    pub fn runs(&self) -> Vec<RunState> {
        let mut all: Vec<RunState> = index::all_json(&*self.services.store, state::RUNS);
        all.sort_by_key(|r| std::cmp::Reverse(r.started_seq));
        all
    }

    /// Every run the store keeps live, newest first: every run that has
    /// not ended (ended runs move to the store's archive, which this does
    /// not read: see [`index::archive_runs`]), and some that have.
    pub fn live_runs(&self) -> Vec<RunState> {
        let mut all: Vec<RunState> = index::live_json(&*self.services.store, state::RUNS);
        all.sort_by_key(|r| std::cmp::Reverse(r.started_seq));
        all
    }

    /// Every escalation, newest first.
    pub fn escalations(&self) -> Vec<EscalationState> {
        let mut all: Vec<EscalationState> =
            index::all_json(&*self.services.store, state::ESCALATIONS);
        all.sort_by_key(|e| std::cmp::Reverse(e.created_ms));
        all
    }

    /// Drive run `id` on from where its events left it.
    pub async fn drive(&self, id: &str) -> Result<RunState, RunError> {
        let st = self
            .run(id)
            .ok_or_else(|| RunError::UnknownRun(id.to_string()))?;
        self.drive_state(st, false).await
    }

    /// Drive every run that can go on: running, waiting to retry, or
    /// waiting for a proposal that people have decided (or that expired).
    pub async fn resume_runs(&self) -> Vec<(String, Result<RunState, RunError>)> {
        let mut out = Vec::new();
        for r in self.live_runs().into_iter().rev() {
            if self.can_go_on(&r) {
                let res = self.drive_state(r.clone(), false).await;
                out.push((r.id, res));
            }
        }
        out
    }

    /// Whether a run can be driven on now: running, waiting to retry, or
    /// waiting for a proposal people decided (or that expired).
    fn can_go_on(&self, r: &RunState) -> bool {
        match r.status {
            RunStatus::Running | RunStatus::RetryWait => true,
            RunStatus::WaitingApproval => self.env(r).wait_is_over(),
            _ => false,
        }
    }

    /// Cancel a run that has not ended.
    pub async fn cancel_run(&self, id: &str, by: &str) -> Result<RunState, RunError> {
        let _serial = self.decisions.lock().await;
        let mut st = self
            .run(id)
            .ok_or_else(|| RunError::UnknownRun(id.to_string()))?;
        let by = by.to_string();
        let def = self.definition(&st).ok();
        let mut d = engine::decide(
            &st,
            def.as_deref(),
            Input::Cancel { by: by.clone() },
            &self.env(&st),
        )?;
        self.stamp_auth(&mut d.events, &by);
        self.commit(&mut st, d.events).await?;
        Ok(st)
    }

    /// `by` resolves escalation `id`: `retry` the step, `skip` it with
    /// `output` as its output, or `fail` the run. Only an approver holding
    /// the escalation's role may; every attempt is recorded.
    pub async fn resolve_escalation(
        &self,
        id: &str,
        by: &str,
        action: &str,
        output: Option<Value>,
        comment: Option<String>,
    ) -> Result<RunState, RunError> {
        // One decision at a time (see `Host::decisions`), released before
        // the run is driven on.
        let serial = self.decisions.lock().await;
        let indexed: EscalationState =
            index::get_json(&*self.services.store, state::ESCALATIONS, id)
                .ok_or_else(|| RunError::UnknownEscalation(id.to_string()))?;
        let mut st = self
            .run(&indexed.run)
            .ok_or_else(|| RunError::UnknownRun(indexed.run.clone()))?;
        // Who may decide is what the log recorded, not the index's copy.
        let esc = EscalationState::from_records(id, &self.run_records(&st)?)
            .ok_or_else(|| RunError::UnknownEscalation(id.to_string()))?;
        if esc.role != indexed.role || esc.status != indexed.status {
            return Err(RunError::Invalid(format!(
                "the state index's copy of escalation {id} differs from the event log's; nothing was done. The index is derived: stop Charter, move {} aside and it is rebuilt from the log",
                self.data_dir.join("state").display()
            )));
        }
        if let Some(v) = &output
            && let Err(e) = record::check_step_value("--output", v, record::MAX_STEP_VALUE)
        {
            return Err(RunError::Invalid(e));
        }
        let resolution = Resolution {
            escalation: esc,
            by: by.to_string(),
            roles: self.deployment().approvers.get(by).map(|a| a.roles.clone()),
            action: action.to_string(),
            output,
            comment,
        };
        let def = self.definition(&st).ok();
        let mut d = engine::decide(
            &st,
            def.as_deref(),
            Input::Resolve(resolution),
            &self.env(&st),
        )?;
        self.stamp_auth(&mut d.events, by);
        self.commit(&mut st, d.events).await?;
        if let Some(r) = d.refused {
            tracing::info!(escalation = id, by, reason = %r.reason, "escalation resolution refused");
            return Err(RunError::Refused {
                id: id.to_string(),
                rule: r.rule,
                reason: r.reason,
            });
        }
        drop(serial);
        self.drive_state(st, false).await
    }

    /// Append events of `st`'s run and fold them into `st`.
    async fn commit(&self, st: &mut RunState, events: Vec<Event>) -> Result<(), RunError> {
        self.commit_fenced(st, events, None).await
    }

    /// [`Host::commit`], fenced by `lease` when the driver holds one: the
    /// log's writer confirms the lease just before it takes the batch
    /// ([`index::RunLease::fence`]), so a driver whose lease another took
    /// while it stalled appends nothing ([`RunError::LeaseLost`]).
    async fn commit_fenced(
        &self,
        st: &mut RunState,
        events: Vec<Event>,
        lease: Option<&index::RunLease>,
    ) -> Result<(), RunError> {
        let folded: Vec<Event> = events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Event::StepAttempt { .. }
                        | Event::Escalated { .. }
                        | Event::EscalationResolved { .. }
                        | Event::RunFinished { .. }
                ) && e.run() == Some(st.id.as_str())
            })
            .cloned()
            .collect();
        let appended = match lease {
            None => self.services.log.append(events).await,
            Some(l) => self.services.log.append_guarded(events, l.fence()).await,
        };
        if let Err(e) = appended {
            if lease.is_some_and(|l| !l.held()) {
                let run = &st.id;
                tracing::error!(run = %run, "a late commit of a run whose lease was taken over was refused");
                return Err(RunError::LeaseLost(format!(
                    "run {run}: this driver no longer holds the run's lease (another driver took the run over while this one stalled); none of its events were appended"
                )));
            }
            return Err(RunError::Log(e.to_string()));
        }
        let now = now_ms();
        for e in &folded {
            st.apply(e, now);
            progress(e);
        }
        Ok(())
    }

    /// The run's records from the log (for its journal, and what an
    /// escalation's resolution decides on). Every read of the log for one
    /// run goes through here.
    fn run_records(&self, st: &RunState) -> Result<Vec<Record>, RunError> {
        self.records_of_run(&st.id)
            .map_err(|e| RunError::Log(e.to_string()))
    }

    /// What the engine is told about `st` now: the time, and the proposal
    /// it waits on as the index has it.
    fn env(&self, st: &RunState) -> Env {
        let proposal = st.proposal.as_deref().and_then(|p| self.proposal(p));
        Env {
            now_ms: now_ms(),
            proposal: proposal.map(|p| ProposalView {
                // A status the engine does not know is not `pending`.
                status: p.status.parse().unwrap_or(ProposalStatus::Failed),
                expires_at_ms: p.expires_at_ms,
                id: p.id,
            }),
            escalation_due_ms: self.escalation_due(st),
        }
    }

    /// When the escalation escalated run `st` waits on reaches its step's
    /// `escalation_deadline_ms` (from the index's copy: this only decides
    /// when to look; [`Host::deadline_if_due`] decides on the log's).
    fn escalation_due(&self, st: &RunState) -> Option<u64> {
        if st.status != RunStatus::Escalated {
            return None;
        }
        let def = self.definition(st).ok()?;
        let esc: EscalationState = index::get_json(
            &*self.services.store,
            state::ESCALATIONS,
            st.escalation.as_deref()?,
        )?;
        let ms = def.steps[def.index_of(&esc.step)?].escalation_deadline_ms?;
        Some(esc.created_ms.saturating_add(ms))
    }

    /// Fail escalated run `id` if its escalation is still open past its
    /// step's deadline: one decision under the decisions lock, on the
    /// escalation as the log recorded it, so a person's resolution and the
    /// deadline never both act (whichever is first wins; the other is
    /// stale). Whether it acted.
    pub(crate) async fn deadline_if_due(&self, id: &str) -> Result<bool, RunError> {
        let _serial = self.decisions.lock().await;
        let Some(mut st) = self.run(id) else {
            return Ok(false);
        };
        let Some(esc_id) = st
            .escalation
            .clone()
            .filter(|_| st.status == RunStatus::Escalated)
        else {
            return Ok(false);
        };
        let Some(esc) = EscalationState::from_records(&esc_id, &self.run_records(&st)?) else {
            return Ok(false);
        };
        let def = self.definition(&st).ok();
        let d = match engine::decide(&st, def.as_deref(), Input::Deadline(esc), &self.env(&st)) {
            Ok(d) => d,
            Err(Refusal::Stale(_)) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        self.commit(&mut st, d.events).await?;
        tracing::info!(run = %id, escalation = %esc_id, "escalation deadline passed; the run failed");
        Ok(true)
    }

    /// Drive `st` until the engine says stop (the run ended, is escalated,
    /// or waits for people). `fresh`: the run was just started here, so its
    /// first step has no journal to read.
    async fn drive_state(&self, st: RunState, fresh: bool) -> Result<RunState, RunError> {
        let Some(lease) = self
            .claim_run(&st.id)
            .map_err(|e| RunError::Log(e.to_string()))?
        else {
            // Another driver (a task of this process, or another host on
            // the store) holds the run's lease.
            return Ok(st);
        };
        // The state read before the claim may be older than the last
        // holder's final one (it could have driven the run on, or ended
        // it, in between): read it again now that the lease is this
        // driver's. A run just started here has no other holder to fear.
        let st = match fresh {
            true => st,
            false => self.run(&st.id).unwrap_or(st),
        };
        let _driving = self.drain.enter();
        let span = tracing::info_span!("run", run = %st.id, workflow = %st.workflow);
        // With timers running, a retry's wait is theirs, not this drive's.
        let wait = self.timers.get().is_none();
        let r = self
            .drive_loop(st, fresh, &lease, wait)
            .instrument(span)
            .await;
        drop(lease);
        if let Ok(st) = &r {
            self.timers_note(st);
        }
        r
    }

    /// Drive a run whose lease this driver holds: every append of it is
    /// fenced by `lease` ([`Host::commit_fenced`]).
    pub async fn drive_claimed(
        &self,
        st: RunState,
        fresh: bool,
        lease: &index::RunLease,
    ) -> Result<RunState, RunError> {
        self.drive_loop(st, fresh, lease, true).await
    }

    /// [`Host::drive_claimed`]; `wait`: sleep until a retry is due rather
    /// than return (the run stays `retry-wait` for the timers to drive).
    pub(crate) async fn drive_loop(
        &self,
        mut st: RunState,
        fresh: bool,
        lease: &index::RunLease,
        wait: bool,
    ) -> Result<RunState, RunError> {
        if lease.run() != st.id {
            return Err(RunError::Invalid(format!(
                "the lease held is run {}'s, not run {}'s",
                lease.run(),
                st.id
            )));
        }
        // The definition it started on, whatever was applied since.
        let def = self.definition(&st)?;
        // Steps entered by this drive: their first attempt has no journal.
        let mut entered: HashSet<String> = HashSet::new();
        if fresh && let Some(c) = &st.cursor {
            entered.insert(c.clone());
        }
        loop {
            // Before anything of a step runs (its plugin, whose calls the
            // mediator may record): a driver that lost the run stops here.
            // Its own commit is fenced again at the write.
            lease.confirm().map_err(RunError::LeaseLost)?;
            match engine::next(&st, &def, &self.env(&st)) {
                Next::Stop => return Ok(st),
                // The host is stopping: the run keeps its recorded state
                // and the next start resumes it.
                Next::Attempt(_) if self.drain.stopping() => return Ok(st),
                Next::Append(events) => {
                    entered.extend(engine::entered(&events).map(str::to_string));
                    self.commit_fenced(&mut st, events, Some(lease)).await?;
                }
                Next::Attempt(plan)
                    if !wait && plan.not_before_ms.is_some_and(|t| t > now_ms()) =>
                {
                    return Ok(st);
                }
                Next::Attempt(plan) => {
                    let span = tracing::info_span!(
                        "step",
                        run = %st.id,
                        workflow = %st.workflow,
                        step = %plan.step,
                        attempt = plan.attempt,
                        plugin = %plan.plugin,
                    );
                    self.step(&mut st, &def, plan, &mut entered, lease)
                        .instrument(span)
                        .await?;
                }
            }
        }
    }

    /// One attempt of the cursor step: wait for its retry time, read its
    /// journal, load and run the plugin, and commit the attempt's events
    /// with the engine's decision on its outcome, in one append.
    async fn step(
        &self,
        st: &mut RunState,
        def: &Workflow,
        plan: AttemptPlan,
        entered: &mut HashSet<String>,
        lease: &index::RunLease,
    ) -> Result<(), RunError> {
        if let Some(t) = plan.not_before_ms {
            let now = now_ms();
            if t > now {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(t - now)) => {}
                    // Stopping: the wait is recorded (retry-wait); the next
                    // start waits out the rest.
                    _ = self.drain.stopped() => return Ok(()),
                }
            }
        }
        let journal = if plan.attempt == 1 && entered.contains(&plan.step) {
            Journal::empty(&st.id, &plan.step, plan.attempt)
        } else {
            Journal::build(&st.id, &plan.step, plan.attempt, &self.run_records(st)?)
        };
        let (mut events, attempted) = self.run_plugin(st, plan, journal).await;
        let decided = engine::decide(st, Some(def), Input::Attempted(attempted), &self.env(st));
        match decided {
            Ok(d) => {
                entered.extend(engine::entered(&d.events).map(str::to_string));
                events.extend(d.events);
                events.extend(self.run_end(st, def, &events));
                self.commit_fenced(st, events, Some(lease)).await
            }
            Err(refusal) => {
                // Unreachable while one driver holds the claim. The calls the
                // attempt made are recorded all the same (what happened);
                // its kv writes are not: they commit only with the step.
                tracing::warn!(run = %st.id, "the engine refused an attempt's outcome: {refusal}");
                events.retain(|e| !matches!(e, Event::KvWrite { .. }));
                if !events.is_empty() {
                    self.commit_fenced(st, events, Some(lease)).await?;
                }
                Err(refusal.into())
            }
        }
    }

    /// The run's end, when the attempt's `events` end it: what the next
    /// turn of the driver's loop would append on its own, at once, so the
    /// run's last step and its end are one append (one group commit
    /// fewer per run). Only a `run-finished` is pulled forward.
    fn run_end(&self, st: &RunState, def: &Workflow, events: &[Event]) -> Vec<Event> {
        // `settled` below reads no input, outputs or history.
        let mut after = st.without_history();
        let now = now_ms();
        for e in events.iter().filter(|e| e.run() == Some(st.id.as_str())) {
            // What `commit_fenced` folds (a `run-finished` already among
            // them makes `after` terminal: nothing more is pulled).
            if matches!(
                e,
                Event::StepAttempt { .. }
                    | Event::Escalated { .. }
                    | Event::EscalationResolved { .. }
                    | Event::RunFinished { .. }
            ) {
                after.apply(e, now);
            }
        }
        // Only whether the run ends: no step's input is rendered.
        match engine::settled(&after, def, &self.env(&after)) {
            Some(Next::Append(end))
                if !end.is_empty()
                    && end.iter().all(|e| matches!(e, Event::RunFinished { .. })) =>
            {
                end
            }
            _ => vec![],
        }
    }

    /// Load the step's plugin and run it against its journal: the events
    /// the attempt made (its calls, decisions, kv writes; not yet
    /// committed) and its outcome for the engine.
    async fn run_plugin(
        &self,
        st: &RunState,
        plan: AttemptPlan,
        journal: Journal,
    ) -> (Vec<Event>, Attempted) {
        // The version the run recorded at its start, if it did (`hot.rs`).
        let loaded = match st.plugins.get(&plan.plugin) {
            Some(d) => self.load_version(&plan.plugin, d).await,
            None => self.load(&plan.plugin).await,
        };
        let (events, outcome, replayed, duration_us) = match loaded {
            Err(e) => {
                let e = CallError::Load(e);
                let class = failure_class(&e);
                let error = e.to_string();
                (vec![], Outcome::Failed { class, error }, 0, 0)
            }
            Ok(loaded) => {
                let opts = StepOptions {
                    initiator: st.initiator.clone(),
                    journal: Some(Arc::new(journal)),
                    deadline_ms: plan.timeout_ms,
                };
                let a = self.attempt(&loaded, &plan.input.to_string(), opts).await;
                let outcome = match a.result {
                    Ok(out) => Outcome::Ok { output: out.output },
                    Err(CallError::AwaitingApproval { proposal, .. }) => {
                        Outcome::AwaitingApproval { proposal }
                    }
                    Err(e) => Outcome::Failed {
                        class: failure_class(&e),
                        error: e.to_string(),
                    },
                };
                (a.events, outcome, a.replayed, a.duration_us)
            }
        };
        let attempted = Attempted {
            step: plan.step,
            attempt: plan.attempt,
            input: plan.input,
            outcome,
            replayed,
            duration_us,
        };
        (events, attempted)
    }
}

/// One line per state change of a run, for people watching it (target
/// `charter::run`; the CLI shows it on stderr).
fn progress(e: &Event) {
    match e {
        Event::StepAttempt {
            run,
            step,
            attempt,
            outcome,
            failure,
            retry_at_ms,
            proposal,
            replayed,
            ..
        } => {
            let mut line = format!("run {run}: step {step} attempt {attempt} {outcome}");
            if let Some(f) = failure {
                line.push_str(&format!(" ({f})"));
            }
            if *replayed > 0 {
                line.push_str(&format!(", {replayed} call(s) replayed"));
            }
            if let Some(t) = retry_at_ms {
                line.push_str(&format!(", retry in {} ms", t.saturating_sub(now_ms())));
            }
            if let Some(p) = proposal {
                line.push_str(&format!(", waiting for proposal {p}"));
            }
            tracing::info!(target: "charter::run", "{line}");
        }
        Event::Escalated { run, id, role, .. } => {
            tracing::info!(target: "charter::run", "run {run}: escalated to {role} as {id}")
        }
        Event::RunFinished { run, status, .. } => {
            tracing::info!(target: "charter::run", "run {run}: {status}")
        }
        _ => {}
    }
}
