//! The workflow engine: what a run does next, and which events record it.
//!
//! Pure: no IO, no clock, no randomness. Everything it decides on comes in
//! as arguments — the run's state (folded from its events), its
//! definition, the current time and what the driver found out (a step's
//! outcome, a proposal's status, a person's decision) — and everything it
//! decides goes out as the [`Event`]s to append. Run state then moves only
//! by folding those events ([`RunState::apply`]), exactly as the index and
//! the read-only CLI fold them from the log.
//!
//! Two questions, asked in turn by the driver (`mod.rs`):
//! - [`next`]: the run as it stands — stop (ended, escalated, waiting for
//!   people), append events that need no plugin (a condition that does not
//!   hold, an input template that names nothing, the run's end), or run an
//!   attempt of the cursor step with this input;
//! - [`decide`]: something happened — an attempt ended, someone cancelled
//!   the run or resolved its escalation — and these events record what
//!   follows (the next step, a retry at a recorded time, the step's failure
//!   path, an escalation, the run's end).
//!
//! An input that does not fit the run (an outcome for a step that is not
//! the cursor or an attempt that is not the next, anything for a run that
//! ended) is [`Refusal::Stale`] and records nothing: the engine never writes
//! an attempt the run's state would not have asked for.
//!
//! Its behaviour is specified by the cases in
//! `host/runtime/tests/workflow-cases/` (one TOML file per scenario).

use charter_audit::{Event, json_digest};
use charter_config::{OnFailure, StepSpec, Workflow};
use serde_json::{Value, json};

use super::state::{EscalationState, RunState};
use super::types::{EscalationAction, FailureClass, ProposalStatus, RunStatus, StepOutcome};
use crate::record;

/// `sha256:` of a workflow definition (its steps and settings, not where
/// it was read from): a run follows exactly the definition it started on.
pub fn workflow_digest(w: &Workflow) -> String {
    let mut v = serde_json::to_value(w).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.remove("source");
    }
    json_digest(&v)
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

/// The context document templates and conditions read:
/// `{"input", "steps": {id: output}, "run": {"id", "workflow", "attempt"}}`.
pub fn context(st: &RunState, attempt: u32) -> Value {
    json!({
        "input": st.input,
        "steps": st.outputs,
        "run": {"id": st.id, "workflow": st.workflow, "attempt": attempt},
    })
}

/// A number in 0..1 fixed by (run, step, attempt): the recorded jitter.
fn unit(run: &str, step: &str, attempt: u32) -> f64 {
    let d = json_digest(&json!([run, step, attempt]));
    let n = u64::from_str_radix(&d[7..23], 16).unwrap_or(0);
    n as f64 / u64::MAX as f64
}

/// `prefix-` and 12 hex digits of the digest of `v`: ids derived from what
/// they name, so that deciding twice names the same thing.
pub fn short_id(prefix: &str, v: &Value) -> String {
    format!("{prefix}-{}", &json_digest(v)[7..19])
}

/// The next non-handler step after `idx`.
pub fn next_after(def: &Workflow, idx: usize) -> Option<String> {
    def.steps[idx + 1..]
        .iter()
        .find(|s| !s.handler)
        .map(|s| s.id.clone())
}

/// The proposal a run waits on, as the driver found it (the index's copy).
#[derive(Debug, Clone)]
pub struct ProposalView {
    pub id: String,
    pub status: ProposalStatus,
    pub expires_at_ms: u64,
}

/// What the engine is told besides the run's state (and definition).
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// The time of the decision (retry times are counted from it, proposal
    /// expiry is judged by it).
    pub now_ms: u64,
    /// The proposal the run waits on, if the driver found it.
    pub proposal: Option<ProposalView>,
    /// For an escalated run whose step declares `escalation_deadline_ms`:
    /// when its open escalation reaches that deadline.
    pub escalation_due_ms: Option<u64>,
}

impl Env {
    /// Whether people decided the proposal the run waits on (or it
    /// expired, or it is gone): the step may run again.
    pub fn wait_is_over(&self) -> bool {
        self.proposal
            .as_ref()
            .is_none_or(|p| p.status != ProposalStatus::Pending || self.now_ms >= p.expires_at_ms)
    }
}

/// What the run does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Nothing for now: the run ended, is escalated, or waits for people.
    Stop,
    /// Decided without running a plugin: append these and ask again.
    Append(Vec<Event>),
    /// Run an attempt of the cursor step, then [`decide`] its outcome.
    Attempt(AttemptPlan),
}

/// One attempt to run.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptPlan {
    pub step: String,
    pub plugin: String,
    /// 1-based, counted since the step was entered.
    pub attempt: u32,
    /// The rendered input.
    pub input: Value,
    /// The recorded retry time: not before then.
    pub not_before_ms: Option<u64>,
    /// The step's own bound on one attempt.
    pub timeout_ms: Option<u64>,
}

/// How an attempt of a step ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Ok {
        output: Value,
    },
    /// A call was routed to people: the run waits for proposal `proposal`.
    AwaitingApproval {
        proposal: String,
    },
    /// The attempt failed (or the plugin could not be loaded).
    Failed {
        class: FailureClass,
        error: String,
    },
}

/// An attempt that ran, as the driver reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempted {
    pub step: String,
    pub attempt: u32,
    pub input: Value,
    pub outcome: Outcome,
    /// Calls answered from the journal.
    pub replayed: u64,
    pub duration_us: u64,
}

/// A person's resolution of an escalation.
#[derive(Debug, Clone)]
pub struct Resolution {
    /// The escalation as the log recorded it (never the index's copy).
    pub escalation: EscalationState,
    pub by: String,
    /// The roles `by` holds; `None`: `by` is not a declared approver.
    pub roles: Option<Vec<String>>,
    /// `retry`, `skip` or `fail`, as given.
    pub action: String,
    /// For `skip`: the output the skipped step stands for.
    pub output: Option<Value>,
    pub comment: Option<String>,
}

/// Something that happened to a run.
#[derive(Debug, Clone)]
pub enum Input {
    Attempted(Attempted),
    Cancel {
        by: String,
    },
    Resolve(Resolution),
    /// The escalation (as the log recorded it) stayed open past its
    /// step's `escalation_deadline_ms`: the run fails, by `deadline`.
    Deadline(EscalationState),
}

/// Who an escalation deadline's resolution and failure are recorded as.
pub const DEADLINE: &str = "deadline";

/// A refused decision that is still recorded (an escalation resolution by
/// someone who may not make it, or on an escalation that is not open).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub rule: &'static str,
    pub reason: String,
}

/// The events to append for one input.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub events: Vec<Event>,
    /// Set when the events record a refusal (the caller reports it).
    pub refused: Option<Refused>,
}

/// An input the engine records nothing for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// It does not fit the run's state: a stale outcome, a decision for a
    /// run that ended.
    #[error("stale: {0}")]
    Stale(String),
    /// The request itself is wrong (an unknown action, a missing output).
    #[error("{0}")]
    Invalid(String),
}

/// The `run-started` event of a new run of `def` with id `run`.
pub fn start(def: &Workflow, run: &str, input: Value, initiator: Option<&str>) -> Event {
    start_with_digest(def, workflow_digest(def), run, input, initiator)
}

/// [`start`], with `def`'s digest already known.
pub fn start_with_digest(
    def: &Workflow,
    digest: String,
    run: &str,
    input: Value,
    initiator: Option<&str>,
) -> Event {
    Event::RunStarted {
        auth: None,
        run: run.to_string(),
        workflow: def.name.clone(),
        workflow_digest: digest,
        input,
        initiator: initiator.map(str::to_string),
        first: def.steps.iter().find(|s| !s.handler).map(|s| s.id.clone()),
        trigger: None,
        plugins: Default::default(),
    }
}

/// What run `st` does next when no step of it is to run: [`Next::Stop`]
/// (it ended, or waits for people) or the run's end (no step left, or
/// its step is gone from `def`); `None` when the cursor's step runs next.
/// [`next`] begins with it; a driver asking only whether a run ends needs
/// no more (no step's input is rendered).
pub fn settled(st: &RunState, def: &Workflow, env: &Env) -> Option<Next> {
    match st.status {
        s if s.is_terminal() => return Some(Next::Stop),
        RunStatus::Escalated => return Some(Next::Stop),
        RunStatus::WaitingApproval if !env.wait_is_over() => return Some(Next::Stop),
        _ => {}
    }
    let Some(cursor) = st.cursor.as_deref() else {
        return Some(Next::Append(vec![finished(
            st,
            RunStatus::Completed,
            st.output.clone(),
            None,
            None,
        )]));
    };
    if def.index_of(cursor).is_some() {
        return None;
    }
    let error = format!("step {cursor} is not in workflow {}", def.name);
    Some(Next::Append(vec![finished(
        st,
        RunStatus::Failed,
        None,
        Some(error),
        None,
    )]))
}

/// What run `st` of `def` does next.
pub fn next(st: &RunState, def: &Workflow, env: &Env) -> Next {
    if let Some(next) = settled(st, def, env) {
        return next;
    }
    // `settled` found the cursor's step in `def`.
    let Some(idx) = st.cursor.as_deref().and_then(|c| def.index_of(c)) else {
        return Next::Stop;
    };
    let step = &def.steps[idx];
    let attempt = st.attempt + 1;
    // Built only for a condition or an input template: it copies the
    // run's input and every step's output.
    let ctx = std::cell::OnceCell::new();
    let ctx = || ctx.get_or_init(|| context(st, attempt));
    if st.attempt == 0
        && let Some(c) = &step.when
        && !c.holds(lookup(ctx(), &c.path))
    {
        let skipped = AttemptEvent::new(st, step, attempt, Value::Null);
        return Next::Append(vec![
            skipped.build(StepOutcome::Skipped, next_after(def, idx)),
        ]);
    }
    let input = match &step.input {
        None => st.output.clone().unwrap_or_else(|| st.input.clone()),
        Some(t) => match render(t, ctx()) {
            Ok(v) => v,
            Err(error) => {
                let ev = AttemptEvent::new(st, step, attempt, Value::Null);
                let class = FailureClass::Input;
                return Next::Append(failure(st, def, idx, ev, class, &error, env.now_ms));
            }
        },
    };
    Next::Attempt(AttemptPlan {
        step: step.id.clone(),
        plugin: step.plugin.clone(),
        attempt,
        input,
        not_before_ms: st.retry_at_ms,
        timeout_ms: step.timeout_ms,
    })
}

/// The events that record `input` happening to run `st`. `def` is the
/// run's definition if the deployment still has it: a run can be cancelled,
/// and its escalation resolved, without it (a skip then names no next step,
/// and the driver refuses to go on under a missing or changed definition).
pub fn decide(
    st: &RunState,
    def: Option<&Workflow>,
    input: Input,
    env: &Env,
) -> Result<Decision, Refusal> {
    let (events, refused) = match input {
        Input::Attempted(a) => {
            let def = def.ok_or_else(|| {
                Refusal::Invalid(format!("workflow {} is not in the deployment", st.workflow))
            })?;
            (attempted(st, def, a, env)?, None)
        }
        Input::Cancel { by } => (cancel(st, &by, env)?, None),
        Input::Resolve(r) => resolve(st, def, r)?,
        Input::Deadline(esc) => (deadline(st, def, &esc, env)?, None),
    };
    Ok(Decision { events, refused })
}

/// The steps `events` enter afresh (their first attempt has no journal).
pub fn entered(events: &[Event]) -> impl Iterator<Item = &str> {
    events.iter().filter_map(|e| match e {
        Event::StepAttempt {
            next: Some(n),
            retry_at_ms: None,
            ..
        } => Some(n.as_str()),
        _ => None,
    })
}

fn attempted(
    st: &RunState,
    def: &Workflow,
    a: Attempted,
    env: &Env,
) -> Result<Vec<Event>, Refusal> {
    let waiting = st.status == RunStatus::WaitingApproval && !env.wait_is_over();
    if st.is_terminal() || st.status == RunStatus::Escalated || waiting {
        return Err(Refusal::Stale(format!(
            "run {} is {}; an outcome of step {} attempt {} changes nothing",
            st.id, st.status, a.step, a.attempt
        )));
    }
    if st.cursor.as_deref() != Some(a.step.as_str()) || a.attempt != st.attempt + 1 {
        return Err(Refusal::Stale(format!(
            "run {} is at step {} attempt {}; step {} attempt {} is not the current one",
            st.id,
            st.cursor.as_deref().unwrap_or("-"),
            st.attempt + 1,
            a.step,
            a.attempt
        )));
    }
    let idx = def.index_of(&a.step).ok_or_else(|| {
        Refusal::Invalid(format!("step {} is not in workflow {}", a.step, def.name))
    })?;
    let step = &def.steps[idx];
    let mut ev = AttemptEvent::new(st, step, a.attempt, a.input);
    ev.replayed = a.replayed;
    ev.duration_us = a.duration_us;
    Ok(match a.outcome {
        Outcome::Ok { output } => {
            ev.output = Some(output);
            vec![ev.build(StepOutcome::Ok, next_after(def, idx))]
        }
        Outcome::AwaitingApproval { proposal } => {
            ev.proposal = Some(proposal);
            vec![ev.build(StepOutcome::AwaitingApproval, None)]
        }
        Outcome::Failed { class, error } => failure(st, def, idx, ev, class, &error, env.now_ms),
    })
}

/// The events of a failed attempt: a retry at a recorded time, or the
/// step's failure path (fail the run, escalate, or run another step).
fn failure(
    st: &RunState,
    def: &Workflow,
    idx: usize,
    mut ev: AttemptEvent,
    class: FailureClass,
    error: &str,
    now_ms: u64,
) -> Vec<Event> {
    let step = &def.steps[idx];
    let policy = &step.retry;
    let attempt = ev.attempt;
    // Attempts before an approval or an escalation's retry do not count.
    let used = attempt.saturating_sub(st.budget_from);
    let error = record::text(error);
    ev.error = Some(error.clone());
    ev.failure = Some(class);
    if policy.retries(class.as_str()) && used < policy.max_attempts {
        let delay = policy.backoff_ms(used, unit(&st.id, &step.id, attempt));
        ev.retry_at_ms = Some(now_ms + delay);
        return vec![ev.build(StepOutcome::Failed, None)];
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
    // A step that does not repeat itself is a bug people must look at,
    // whatever its failure path says.
    if class == FailureClass::NonDeterministic {
        let role = match &step.on_failure {
            OnFailure::Escalate(r) => r.as_ref(),
            _ => None,
        };
        return vec![ev.build(StepOutcome::Failed, None), escalate(role, why)];
    }
    match &step.on_failure {
        OnFailure::Fail => vec![
            ev.build(StepOutcome::Failed, None),
            finished(st, RunStatus::Failed, None, Some(why), None),
        ],
        OnFailure::Escalate(role) => {
            vec![
                ev.build(StepOutcome::Failed, None),
                escalate(role.as_ref(), why),
            ]
        }
        OnFailure::Step(target) => vec![ev.build(StepOutcome::Failed, Some(target.clone()))],
    }
}

fn cancel(st: &RunState, by: &str, env: &Env) -> Result<Vec<Event>, Refusal> {
    if st.is_terminal() {
        return Err(Refusal::Invalid(format!(
            "run {} has already ended ({})",
            st.id, st.status
        )));
    }
    let mut events = Vec::new();
    // What the run waited on ends with it.
    if let Some(p) = &env.proposal
        && st.proposal.as_deref() == Some(p.id.as_str())
        && p.status == ProposalStatus::Pending
    {
        events.push(Event::ProposalResolved {
            proposal: p.id.clone(),
            status: ProposalStatus::Cancelled.into(),
            detail: Some(format!("run {} cancelled by {by}", st.id)),
        });
    }
    if let Some(e) = &st.escalation {
        events.push(Event::EscalationResolved {
            auth: None,
            id: e.clone(),
            run: st.id.clone(),
            by: by.to_string(),
            action: EscalationAction::Cancel.into(),
            output: None,
            comment: Some("the run was cancelled".into()),
            accepted: true,
            reason: None,
            next: None,
        });
    }
    let error = format!("cancelled by {by}");
    events.push(finished(
        st,
        RunStatus::Cancelled,
        None,
        Some(error),
        Some(by),
    ));
    Ok(events)
}

/// An escalation open past its step's deadline: resolved `fail` by
/// [`DEADLINE`], and the run fails. Only for the escalation the run waits
/// on, still open, once the deadline has passed (else stale: nothing is
/// recorded).
fn deadline(
    st: &RunState,
    def: Option<&Workflow>,
    esc: &EscalationState,
    env: &Env,
) -> Result<Vec<Event>, Refusal> {
    let stale = |why: String| Err(Refusal::Stale(why));
    if esc.status != "open"
        || st.status != RunStatus::Escalated
        || st.escalation.as_deref() != Some(esc.id.as_str())
    {
        return stale(format!(
            "escalation {} is {} and run {} is {}",
            esc.id, esc.status, st.id, st.status
        ));
    }
    let Some(ms) = def
        .and_then(|d| d.index_of(&esc.step).map(|i| &d.steps[i]))
        .and_then(|s| s.escalation_deadline_ms)
    else {
        return stale(format!("step {} declares no escalation deadline", esc.step));
    };
    if env.now_ms < esc.created_ms.saturating_add(ms) {
        return stale(format!("escalation {} is not due yet", esc.id));
    }
    let why = format!("not resolved within escalation_deadline_ms = {ms}");
    Ok(vec![
        Event::EscalationResolved {
            auth: None,
            id: esc.id.clone(),
            run: st.id.clone(),
            by: DEADLINE.into(),
            action: EscalationAction::Fail.into(),
            output: None,
            comment: Some(why.clone()),
            accepted: true,
            reason: None,
            next: None,
        },
        finished(
            st,
            RunStatus::Failed,
            None,
            Some(format!(
                "step {} failed; escalation {} was {why}",
                esc.step, esc.id
            )),
            Some(DEADLINE),
        ),
    ])
}

/// Who may resolve an escalation, and how; a refused attempt is recorded
/// too (with its reason), an invalid request is not.
fn resolve(
    st: &RunState,
    def: Option<&Workflow>,
    r: Resolution,
) -> Result<(Vec<Event>, Option<Refused>), Refusal> {
    let esc = &r.escalation;
    let action = r.action.parse::<EscalationAction>().ok();
    let refused = refusal(st, &r, action)?;
    let next = match (action, def) {
        (Some(EscalationAction::Skip), Some(def)) => {
            def.index_of(&esc.step).and_then(|i| next_after(def, i))
        }
        _ => None,
    };
    let mut events = vec![Event::EscalationResolved {
        auth: None,
        id: esc.id.clone(),
        run: esc.run.clone(),
        by: r.by.clone(),
        action: r.action.clone(),
        output: r.output,
        comment: r.comment.map(|c| record::text(&c)),
        accepted: refused.is_none(),
        reason: refused.as_ref().map(|r| r.reason.clone()),
        next,
    }];
    if refused.is_none() && action == Some(EscalationAction::Fail) {
        let error = format!(
            "step {} failed; {} ended the run on escalation {}",
            esc.step, r.by, esc.id
        );
        events.push(finished(
            st,
            RunStatus::Failed,
            None,
            Some(error),
            Some(&r.by),
        ));
    }
    Ok((events, refused))
}

/// Why `r` may not act (recorded), or why it is no request at all (not
/// recorded); checked in this order.
fn refusal(
    st: &RunState,
    r: &Resolution,
    action: Option<EscalationAction>,
) -> Result<Option<Refused>, Refusal> {
    let esc = &r.escalation;
    let refuse = |rule, reason| Ok(Some(Refused { rule, reason }));
    if esc.status != "open" {
        return refuse(
            "not-open",
            format!("the escalation is already {}", esc.status),
        );
    }
    match action {
        Some(EscalationAction::Retry | EscalationAction::Fail) => {}
        Some(EscalationAction::Skip) if r.output.is_some() => {}
        Some(EscalationAction::Skip) => {
            return Err(Refusal::Invalid(
                "skip needs --output JSON: the output the skipped step stands for".into(),
            ));
        }
        // `cancel` is what a cancellation records, not a person's choice.
        Some(EscalationAction::Cancel) | None => {
            return Err(Refusal::Invalid(format!(
                "unknown action {:?}: use retry, skip (with --output) or fail",
                r.action
            )));
        }
    }
    match &r.roles {
        None => refuse(
            "not-an-approver",
            format!("{} is not a declared approver", r.by),
        ),
        Some(roles) if !roles.contains(&esc.role) => refuse(
            "role",
            format!(
                "{} does not hold the role {:?} this escalation needs",
                r.by, esc.role
            ),
        ),
        // Open in the log, yet not what the run waits on (the run ended or
        // moved on): a decision on it would act on a run it no longer
        // describes (a `fail` would finish a finished run again).
        _ if st.status != RunStatus::Escalated
            || st.escalation.as_deref() != Some(esc.id.as_str()) =>
        {
            refuse(
                "not-current",
                format!(
                    "run {} is {} and not waiting on this escalation",
                    st.id, st.status
                ),
            )
        }
        _ => Ok(None),
    }
}

fn finished(
    st: &RunState,
    status: RunStatus,
    output: Option<Value>,
    error: Option<String>,
    by: Option<&str>,
) -> Event {
    Event::RunFinished {
        auth: None,
        run: st.id.clone(),
        status: status.into(),
        output,
        error,
        by: by.map(str::to_string),
    }
}

/// A `step-attempt` event being put together.
struct AttemptEvent {
    run: String,
    step: String,
    plugin: String,
    attempt: u32,
    input: Value,
    output: Option<Value>,
    error: Option<String>,
    failure: Option<FailureClass>,
    retry_at_ms: Option<u64>,
    proposal: Option<String>,
    replayed: u64,
    duration_us: u64,
}

impl AttemptEvent {
    fn new(st: &RunState, step: &StepSpec, attempt: u32, input: Value) -> AttemptEvent {
        AttemptEvent {
            run: st.id.clone(),
            step: step.id.clone(),
            plugin: step.plugin.clone(),
            attempt,
            input,
            output: None,
            error: None,
            failure: None,
            retry_at_ms: None,
            proposal: None,
            replayed: 0,
            duration_us: 0,
        }
    }

    fn build(self, outcome: StepOutcome, next: Option<String>) -> Event {
        Event::StepAttempt {
            run: self.run,
            step: self.step,
            attempt: self.attempt,
            plugin: self.plugin,
            // A rendered input can exceed what the step accepts (the attempt
            // then fails with a limit): recorded by digest and size if so.
            input: record::bounded(self.input, record::MAX_STEP_VALUE as usize, None),
            outcome: outcome.into(),
            output: self.output,
            error: self.error,
            failure: self.failure.map(String::from),
            retry_at_ms: self.retry_at_ms,
            proposal: self.proposal,
            replayed: self.replayed,
            duration_us: self.duration_us,
            next,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use charter_config::Deployment;

    fn def() -> Workflow {
        let d = Deployment::parse(
            "[deployment]\nname = \"t\"\nphase = 1\n[approvers.olga]\nroles = [\"operator\"]\n[workflows.w]\n[[workflows.w.steps]]\nid = \"a\"\nplugin = \"p\"\non_failure = \"escalate\"\n",
            std::path::Path::new("/nonexistent/charter.toml"),
            crate::host_catalog(),
        )
        .unwrap();
        d.workflows["w"].clone()
    }

    fn fold(st: &mut RunState, events: &[Event]) {
        for e in events {
            st.apply(e, 0);
        }
    }

    fn env() -> Env {
        Env {
            now_ms: 1000,
            proposal: None,
            escalation_due_ms: None,
        }
    }

    /// The same state, definition and outcome give the same events (ids
    /// included): a decision made twice, after a crash, records the same.
    #[test]
    fn deciding_twice_decides_the_same() {
        let def = def();
        let st = RunState::start(&start(&def, "R-1", json!({}), None), 1, 0).unwrap();
        let Next::Attempt(plan) = next(&st, &def, &env()) else {
            panic!("an attempt")
        };
        let failed = || {
            Input::Attempted(Attempted {
                step: plan.step.clone(),
                attempt: plan.attempt,
                input: plan.input.clone(),
                outcome: Outcome::Failed {
                    class: FailureClass::Fatal,
                    error: "boom".into(),
                },
                replayed: 0,
                duration_us: 0,
            })
        };
        let one = decide(&st, Some(&def), failed(), &env()).unwrap();
        let two = decide(&st, Some(&def), failed(), &env()).unwrap();
        assert_eq!(one, two);
        assert!(matches!(&one.events[1], Event::Escalated { id, .. } if id.starts_with("E-")));
    }

    /// An escalation still open in the log while the run no longer waits on
    /// it (a run that ended): a resolution is refused and finishes nothing.
    #[test]
    fn a_resolution_for_a_run_that_ended_is_refused() {
        let def = def();
        let mut st = RunState::start(&start(&def, "R-1", json!({}), None), 1, 0).unwrap();
        let escalated = Event::Escalated {
            id: "E-1".into(),
            run: "R-1".into(),
            step: "a".into(),
            role: "operator".into(),
            reason: "r".into(),
        };
        let esc = EscalationState::from_event(&escalated, 0).unwrap();
        let end = finished(&st, RunStatus::Failed, None, Some("x".into()), None);
        fold(&mut st, &[escalated, end]);
        let r = Resolution {
            escalation: esc,
            by: "olga".into(),
            roles: Some(vec!["operator".into()]),
            action: "fail".into(),
            output: None,
            comment: None,
        };
        let d = decide(&st, Some(&def), Input::Resolve(r), &env()).unwrap();
        assert_eq!(d.refused.as_ref().map(|r| r.rule), Some("not-current"));
        assert_eq!(d.events.len(), 1, "{:?}", d.events);
        assert!(matches!(
            &d.events[0],
            Event::EscalationResolved {
                accepted: false,
                ..
            }
        ));
        assert_eq!(next(&st, &def, &env()), Next::Stop);
    }

    /// An escalation deadline acts only on the open escalation the run
    /// waits on, only once due, and only where the step declares one; it
    /// fails the run by `deadline`, and after that it is stale.
    #[test]
    fn an_escalation_deadline_fails_the_run_once_and_only_when_due() {
        let mut def = def();
        let mut st = RunState::start(&start(&def, "R-1", json!({}), None), 1, 0).unwrap();
        let escalated = Event::Escalated {
            id: "E-1".into(),
            run: "R-1".into(),
            step: "a".into(),
            role: "operator".into(),
            reason: "r".into(),
        };
        let esc = EscalationState::from_event(&escalated, 5_000).unwrap();
        fold(&mut st, &[escalated]);
        let at = |now_ms| Env { now_ms, ..env() };
        let stale = |st: &RunState, def: &Workflow, now| {
            matches!(
                decide(st, Some(def), Input::Deadline(esc.clone()), &at(now)),
                Err(Refusal::Stale(_))
            )
        };
        // No deadline declared: never.
        assert!(stale(&st, &def, u64::MAX));
        def.steps[0].escalation_deadline_ms = Some(1_000);
        assert!(stale(&st, &def, 5_999), "not due before created + deadline");
        let d = decide(&st, Some(&def), Input::Deadline(esc.clone()), &at(6_000)).unwrap();
        assert!(d.refused.is_none());
        assert!(matches!(
            &d.events[0],
            Event::EscalationResolved { by, action, accepted: true, .. }
                if by == DEADLINE && action == "fail"
        ));
        assert!(matches!(
            &d.events[1],
            Event::RunFinished { status, by: Some(by), .. } if status == "failed" && by == DEADLINE
        ));
        fold(&mut st, &d.events);
        assert_eq!(st.status, RunStatus::Failed);
        assert!(stale(&st, &def, 6_000), "a run that ended is stale");
        // A resolved escalation is stale even if the run still waited.
        let mut resolved = esc.clone();
        resolved.status = "resolved".into();
        let st2 = RunState::start(&start(&def, "R-1", json!({}), None), 1, 0).unwrap();
        assert!(matches!(
            decide(&st2, Some(&def), Input::Deadline(resolved), &at(9_000)),
            Err(Refusal::Stale(_))
        ));
    }
}
