//! Durable workflows: runs of ordered steps whose every state change is an
//! event in the log, so a run survives crashes and restarts and can wait
//! days for people.
//!
//! A run is driven by [`Host::drive`]: it folds the run's state from the
//! index (itself derived from the log), runs the cursor step, and commits
//! the step's events (its calls, decisions, kv writes, the attempt and
//! where the run goes next) in one append before moving on. After a crash,
//! `charter runs resume` drives every incomplete run again; a step that was
//! cut off re-runs against its journal (`journal.rs`): recorded results
//! replay, approved calls execute, diverging calls escalate as
//! non-deterministic, and calls with an outside effect carry the same
//! idempotency key as before.
//!
//! Where a run goes is recorded, not recomputed: `run-started` names the
//! first step and every `step-attempt` names the next, so the log alone
//! tells the run's path (see `state.rs`).

pub(crate) mod journal;
pub mod state;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use charter_audit::{Event, Record, json_digest, now_ms};
use charter_config::{OnFailure, StepSpec, Workflow};
use serde_json::{Value, json};

use crate::error::{CallError, LimitKind, LoadError};
use crate::{Host, StepOptions, index, record};
use journal::Journal;
pub use state::{EscalationState, RunState, status};

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
        "run {run}: workflow {workflow} changed since the run started ({was} → {now}); restore that definition to resume the run, or cancel it"
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
}

impl RunError {
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Refused { .. } => crate::error::EXIT_REFUSED,
            _ => crate::error::EXIT_ERROR,
        }
    }
}

/// `sha256:` of a workflow definition (its steps and settings, not where
/// it was read from): a run follows exactly the definition it started on.
pub fn workflow_digest(w: &Workflow) -> String {
    let mut v = serde_json::to_value(w).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.remove("source");
    }
    json_digest(&v)
}

/// The failure class of a step error (what retry policies name).
pub fn failure_class(e: &CallError) -> &'static str {
    match e {
        CallError::Step {
            retryable: true, ..
        } => "retryable",
        CallError::Step { .. } => "fatal",
        CallError::Limit {
            kind: LimitKind::Deadline | LimitKind::HostCallTimeout,
            ..
        } => "timeout",
        CallError::Limit { .. } => "limit",
        CallError::Denied { .. } => "denied",
        CallError::Rejected { .. } => "rejected",
        CallError::NonDeterministic { .. } => "nondeterministic",
        CallError::AwaitingApproval { .. } => "awaiting-approval",
        CallError::Load(
            LoadError::Ungranted(_) | LoadError::Governance(_) | LoadError::DigestMismatch { .. },
        ) => "denied",
        CallError::Load(_) => "load",
        CallError::Trap { .. } | CallError::Invalid { .. } => "trap",
    }
}

/// The value at a `$/...` pointer in the run's context document.
pub fn lookup<'a>(ctx: &'a Value, path: &str) -> Option<&'a Value> {
    ctx.pointer(path.strip_prefix('$')?)
}

/// Render an input template against the context (see `charter_config::workflow`).
pub fn render(t: &Value, ctx: &Value) -> Result<Value, String> {
    Ok(match t {
        Value::String(s) if s.starts_with("$$") => Value::String(s[1..].to_string()),
        Value::String(s) if s == "$" || s.starts_with("$/") => lookup(ctx, s)
            .cloned()
            .ok_or_else(|| format!("input pointer {s:?} names nothing in the run's context"))?,
        Value::Array(a) => {
            Value::Array(a.iter().map(|x| render(x, ctx)).collect::<Result<_, _>>()?)
        }
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| Ok((k.clone(), render(v, ctx)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// A number in 0..1 fixed by (run, step, attempt): the recorded jitter.
fn unit(run: &str, step: &str, attempt: u32) -> f64 {
    let d = json_digest(&json!([run, step, attempt]));
    let n = u64::from_str_radix(&d[7..23], 16).unwrap_or(0);
    n as f64 / u64::MAX as f64
}

fn short_id(prefix: &str, v: &Value) -> String {
    format!("{prefix}-{}", &json_digest(v)[7..19])
}

static RUN_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The next non-handler step after `idx`.
fn next_after(def: &Workflow, idx: usize) -> Option<String> {
    def.steps[idx + 1..]
        .iter()
        .find(|s| !s.handler)
        .map(|s| s.id.clone())
}

impl Host {
    pub fn workflow(&self, name: &str) -> Result<&Workflow, RunError> {
        self.deployment
            .workflows
            .get(name)
            .ok_or_else(|| RunError::UnknownWorkflow {
                name: name.to_string(),
                known: self
                    .deployment
                    .workflows
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
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
        self.record_config().await;
        let def = self.workflow(workflow)?;
        // The input is recorded and read back by every step: bounded.
        record::check_step_value("the run's input", &input, record::MAX_STEP_VALUE)
            .map_err(RunError::Invalid)?;
        let n = RUN_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = short_id(
            "R",
            &json!([
                workflow,
                now_ms(),
                n,
                std::process::id(),
                &self.deployment.name
            ]),
        );
        let ev = Event::RunStarted {
            run: id.clone(),
            workflow: workflow.to_string(),
            workflow_digest: workflow_digest(def),
            input,
            initiator: initiator.map(str::to_string),
            first: def.steps.iter().find(|s| !s.handler).map(|s| s.id.clone()),
        };
        let seq = self
            .services
            .log
            .append(vec![ev.clone()])
            .await
            .map_err(|e| RunError::Log(e.to_string()))?;
        Ok(RunState::start(&ev, seq, now_ms()).expect("run-started"))
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
        for r in self.runs().into_iter().rev() {
            let go = match r.status.as_str() {
                status::RUNNING | status::RETRY_WAIT => true,
                status::WAITING_APPROVAL => r
                    .proposal
                    .as_deref()
                    .and_then(|p| self.proposal(p))
                    .is_none_or(|p| p.status != "pending" || p.is_expired(now_ms())),
                _ => false,
            };
            if go {
                let res = self.drive_state(r.clone(), false).await;
                out.push((r.id, res));
            }
        }
        out
    }

    /// Cancel a run that has not ended.
    pub async fn cancel_run(&self, id: &str, by: &str) -> Result<RunState, RunError> {
        let mut st = self
            .run(id)
            .ok_or_else(|| RunError::UnknownRun(id.to_string()))?;
        if st.is_terminal() {
            return Err(RunError::Invalid(format!(
                "run {id} has already ended ({})",
                st.status
            )));
        }
        let mut events = Vec::new();
        // What the run waited on ends with it.
        if let Some(p) = st.proposal.as_deref().and_then(|p| self.proposal(p))
            && p.status == "pending"
        {
            events.push(Event::ProposalResolved {
                proposal: p.id,
                status: "cancelled".into(),
                detail: Some(format!("run {id} cancelled by {by}")),
            });
        }
        if let Some(e) = &st.escalation {
            events.push(Event::EscalationResolved {
                id: e.clone(),
                run: id.to_string(),
                by: by.to_string(),
                action: "cancel".into(),
                output: None,
                comment: Some("the run was cancelled".into()),
                accepted: true,
                reason: None,
                next: None,
            });
        }
        events.push(Event::RunFinished {
            run: id.to_string(),
            status: status::CANCELLED.into(),
            output: None,
            error: Some(format!("cancelled by {by}")),
            by: Some(by.to_string()),
        });
        self.commit(&mut st, events).await?;
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
        let indexed: EscalationState =
            index::get_json(&*self.services.store, state::ESCALATIONS, id)
                .ok_or_else(|| RunError::UnknownEscalation(id.to_string()))?;
        let mut st = self
            .run(&indexed.run)
            .ok_or_else(|| RunError::UnknownRun(indexed.run.clone()))?;
        // Who may decide is what the log recorded, not the index's copy.
        let esc = self
            .run_records(&st)?
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
            .ok_or_else(|| RunError::UnknownEscalation(id.to_string()))?;
        if esc.role != indexed.role || esc.status != indexed.status {
            return Err(RunError::Invalid(format!(
                "the state index's copy of escalation {id} differs from the event log's; nothing was done. The index is derived: stop Charter, move {} aside and it is rebuilt from the log",
                self.deployment.data_dir.join("state").display()
            )));
        }
        if let Some(v) = &output
            && let Err(e) = record::check_step_value("--output", v, record::MAX_STEP_VALUE)
        {
            return Err(RunError::Invalid(e));
        }
        let comment = comment.map(|c| record::text(&c));
        let refusal = if esc.status != "open" {
            Some((
                "not-open",
                format!("the escalation is already {}", esc.status),
            ))
        } else if !matches!(action, "retry" | "skip" | "fail") {
            return Err(RunError::Invalid(format!(
                "unknown action {action:?}: use retry, skip (with --output) or fail"
            )));
        } else if action == "skip" && output.is_none() {
            return Err(RunError::Invalid(
                "skip needs --output JSON: the output the skipped step stands for".into(),
            ));
        } else {
            match self.deployment.approvers.get(by) {
                None => Some((
                    "not-an-approver",
                    format!("{by} is not a declared approver"),
                )),
                Some(a) if !a.roles.contains(&esc.role) => Some((
                    "role",
                    format!(
                        "{by} does not hold the role {:?} this escalation needs",
                        esc.role
                    ),
                )),
                _ => None,
            }
        };
        let next = match (action, self.workflow(&st.workflow)) {
            ("skip", Ok(def)) => def.index_of(&esc.step).and_then(|i| next_after(def, i)),
            _ => None,
        };
        let ev = Event::EscalationResolved {
            id: id.to_string(),
            run: esc.run.clone(),
            by: by.to_string(),
            action: action.to_string(),
            output: output.clone(),
            comment,
            accepted: refusal.is_none(),
            reason: refusal.as_ref().map(|r| r.1.clone()),
            next,
        };
        let mut events = vec![ev];
        if refusal.is_none() && action == "fail" {
            events.push(Event::RunFinished {
                run: esc.run.clone(),
                status: status::FAILED.into(),
                output: None,
                error: Some(format!(
                    "step {} failed; {by} ended the run on escalation {id}",
                    esc.step
                )),
                by: Some(by.to_string()),
            });
        }
        self.commit(&mut st, events).await?;
        if let Some((rule, reason)) = refusal {
            tracing::info!(escalation = id, by, %reason, "escalation resolution refused");
            return Err(RunError::Refused {
                id: id.to_string(),
                rule,
                reason,
            });
        }
        self.drive_state(st, false).await
    }

    /// Append events of `st`'s run and fold them into `st`.
    async fn commit(&self, st: &mut RunState, events: Vec<Event>) -> Result<(), RunError> {
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
        self.services
            .log
            .append(events)
            .await
            .map_err(|e| RunError::Log(e.to_string()))?;
        let now = now_ms();
        for e in &folded {
            st.apply(e, now);
            progress(e);
        }
        Ok(())
    }

    /// The run's records from the log (for its journal).
    fn run_records(&self, st: &RunState) -> Result<Vec<Record>, RunError> {
        self.records_of_run(&st.id)
            .map_err(|e| RunError::Log(e.to_string()))
    }

    async fn drive_state(&self, mut st: RunState, fresh: bool) -> Result<RunState, RunError> {
        let Some(_lease) = self
            .claim_run(&st.id)
            .map_err(|e| RunError::Log(e.to_string()))?
        else {
            // Another driver (a task of this process, or another host on
            // the store) holds the run's lease.
            return Ok(st);
        };
        let def = self.workflow(&st.workflow)?.clone();
        let now_digest = workflow_digest(&def);
        if now_digest != st.workflow_digest {
            return Err(RunError::WorkflowChanged {
                run: st.id.clone(),
                workflow: st.workflow.clone(),
                was: st.workflow_digest.clone(),
                now: now_digest,
            });
        }
        // Steps entered by this drive: their first attempt has no journal.
        let mut entered: HashSet<String> = HashSet::new();
        if fresh && let Some(c) = &st.cursor {
            entered.insert(c.clone());
        }
        loop {
            if st.is_terminal() || st.status == status::ESCALATED {
                return Ok(st);
            }
            if st.status == status::WAITING_APPROVAL {
                let decided = st
                    .proposal
                    .as_deref()
                    .and_then(|p| self.proposal(p))
                    .is_none_or(|p| p.status != "pending" || p.is_expired(now_ms()));
                if !decided {
                    return Ok(st);
                }
            }
            let Some(cursor) = st.cursor.clone() else {
                let output = st.output.clone();
                let run = st.id.clone();
                self.commit(
                    &mut st,
                    vec![Event::RunFinished {
                        run,
                        status: status::COMPLETED.into(),
                        output,
                        error: None,
                        by: None,
                    }],
                )
                .await?;
                continue;
            };
            let Some(idx) = def.index_of(&cursor) else {
                let error = Some(format!("step {cursor} is not in workflow {}", def.name));
                let run = st.id.clone();
                self.commit(
                    &mut st,
                    vec![Event::RunFinished {
                        run,
                        status: status::FAILED.into(),
                        output: None,
                        error,
                        by: None,
                    }],
                )
                .await?;
                continue;
            };
            let step = &def.steps[idx];
            if let Some(t) = st.retry_at_ms {
                let now = now_ms();
                if t > now {
                    tokio::time::sleep(Duration::from_millis(t - now)).await;
                }
            }
            let attempt = st.attempt + 1;
            let ctx = json!({
                "input": st.input,
                "steps": st.outputs,
                "run": {"id": st.id, "workflow": st.workflow, "attempt": attempt},
            });
            if st.attempt == 0
                && let Some(c) = &step.when
                && !c.holds(lookup(&ctx, &c.path))
            {
                let next = next_after(&def, idx);
                if let Some(n) = &next {
                    entered.insert(n.clone());
                }
                let ev = step_event(&st.id, step, attempt, Value::Null, "skipped", next);
                self.commit(&mut st, vec![ev]).await?;
                continue;
            }
            let input = match &step.input {
                None => st.output.clone().unwrap_or_else(|| st.input.clone()),
                Some(t) => match render(t, &ctx) {
                    Ok(v) => v,
                    Err(e) => {
                        let events =
                            self.failure(&st, &def, idx, attempt, Value::Null, "input", e, 0, 0);
                        self.enter_next(&mut entered, &events);
                        self.commit(&mut st, events).await?;
                        continue;
                    }
                },
            };
            let journal = if st.attempt == 0 && entered.contains(&cursor) {
                Journal::empty(&st.id, &cursor, attempt)
            } else {
                Journal::build(&st.id, &cursor, attempt, &self.run_records(&st)?)
            };
            let loaded = match self.load(&step.plugin).await {
                Ok(l) => l,
                Err(e) => {
                    let e = CallError::Load(e);
                    let events = self.failure(
                        &st,
                        &def,
                        idx,
                        attempt,
                        input,
                        failure_class(&e),
                        e.to_string(),
                        0,
                        0,
                    );
                    self.enter_next(&mut entered, &events);
                    self.commit(&mut st, events).await?;
                    continue;
                }
            };
            let attempted = self
                .attempt(
                    &loaded,
                    &input.to_string(),
                    StepOptions {
                        initiator: st.initiator.clone(),
                        journal: Some(Arc::new(journal)),
                        deadline_ms: step.timeout_ms,
                    },
                )
                .await;
            let mut events = attempted.events;
            let replayed = attempted.replayed;
            let after = match attempted.result {
                Ok(out) => {
                    let next = next_after(&def, idx);
                    let mut ev = step_event(&st.id, step, attempt, input, "ok", next);
                    if let Event::StepAttempt {
                        output,
                        replayed: r,
                        duration_us,
                        ..
                    } = &mut ev
                    {
                        *output = Some(out.output);
                        *r = replayed;
                        *duration_us = out.duration_us;
                    }
                    vec![ev]
                }
                Err(CallError::AwaitingApproval { proposal, .. }) => {
                    let mut ev =
                        step_event(&st.id, step, attempt, input, "awaiting-approval", None);
                    if let Event::StepAttempt {
                        proposal: p,
                        replayed: r,
                        duration_us,
                        ..
                    } = &mut ev
                    {
                        *p = Some(proposal);
                        *r = replayed;
                        *duration_us = attempted.duration_us;
                    }
                    vec![ev]
                }
                Err(e) => self.failure(
                    &st,
                    &def,
                    idx,
                    attempt,
                    input,
                    failure_class(&e),
                    e.to_string(),
                    replayed,
                    attempted.duration_us,
                ),
            };
            self.enter_next(&mut entered, &after);
            events.extend(after);
            self.commit(&mut st, events).await?;
        }
    }

    fn enter_next(&self, entered: &mut HashSet<String>, events: &[Event]) {
        for e in events {
            if let Event::StepAttempt {
                next: Some(n),
                retry_at_ms: None,
                ..
            } = e
            {
                entered.insert(n.clone());
            }
        }
    }

    /// The events of a failed attempt: a retry, or the step's failure path.
    #[allow(clippy::too_many_arguments)]
    fn failure(
        &self,
        st: &RunState,
        def: &Workflow,
        idx: usize,
        attempt: u32,
        input: Value,
        class: &str,
        error: String,
        replayed: u64,
        duration_us: u64,
    ) -> Vec<Event> {
        let step = &def.steps[idx];
        let policy = &step.retry;
        let used = attempt.saturating_sub(st.budget_from);
        let mut ev = step_event(&st.id, step, attempt, input, "failed", None);
        let Event::StepAttempt {
            error: e,
            failure,
            retry_at_ms,
            replayed: r,
            duration_us: d,
            next,
            ..
        } = &mut ev
        else {
            unreachable!()
        };
        let error = record::text(&error);
        *e = Some(error.clone());
        *failure = Some(class.to_string());
        *r = replayed;
        *d = duration_us;
        if policy.retries(class) && used < policy.max_attempts {
            let delay = policy.backoff_ms(used, unit(&st.id, &step.id, attempt));
            *retry_at_ms = Some(now_ms() + delay);
            return vec![ev];
        }
        let escalate = |role: Option<&String>, reason: String| Event::Escalated {
            id: short_id("E", &json!([st.id, step.id, attempt])),
            run: st.id.clone(),
            step: step.id.clone(),
            role: role.cloned().unwrap_or_else(|| def.escalate_to.clone()),
            reason,
        };
        let why = if used > 1 {
            format!("step {} failed after {used} attempts: {error}", step.id)
        } else {
            format!("step {} failed: {error}", step.id)
        };
        if class == "nondeterministic" {
            let role = match &step.on_failure {
                OnFailure::Escalate(r) => r.as_ref(),
                _ => None,
            };
            return vec![ev, escalate(role, why)];
        }
        match &step.on_failure {
            OnFailure::Fail => vec![
                ev,
                Event::RunFinished {
                    run: st.id.clone(),
                    status: status::FAILED.into(),
                    output: None,
                    error: Some(why),
                    by: None,
                },
            ],
            OnFailure::Escalate(role) => vec![ev, escalate(role.as_ref(), why)],
            OnFailure::Step(target) => {
                *next = Some(target.clone());
                vec![ev]
            }
        }
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

fn step_event(
    run: &str,
    step: &StepSpec,
    attempt: u32,
    input: Value,
    outcome: &str,
    next: Option<String>,
) -> Event {
    Event::StepAttempt {
        run: run.to_string(),
        step: step.id.clone(),
        attempt,
        plugin: step.plugin.clone(),
        // A rendered input can exceed what the step accepts (the attempt
        // then fails with a limit): recorded by digest and size if so.
        input: record::bounded(input, record::MAX_STEP_VALUE as usize, None),
        outcome: outcome.to_string(),
        output: None,
        error: None,
        failure: None,
        retry_at_ms: None,
        proposal: None,
        replayed: 0,
        duration_us: 0,
        next,
    }
}
