//! The mediator: the one path every capability call takes.
//!
//! A guest's import of a host function is linked (by its capability, see
//! `capabilities/`) to a thin closure that turns the call into JSON
//! arguments and hands them to [`Mediator::dispatch`], one pipeline over
//! function specs that names no capability; connector functions reach it
//! through the linker's trampolines and outbound HTTP through its
//! [`WasiHttpHooks`] implementation. A capability's implementation runs
//! only from the pipeline (it needs an `Exec` only the mediator makes), so
//! no capability can be executed without passing the mediator's checks.
//!
//! For every call the mediator: counts it against the step's cap, re-checks
//! the grant (defense in depth behind linking), checks argument-level grants
//! (secret names, channel names, HTTP hosts), asks Cedar policy for a
//! decision (allow, propose, deny) when the function's group has policies,
//! records the call and its decision as an event, and only then executes.
//! Calls with an effect outside the host (connectors, HTTP, notify) wait
//! until their decision is on disk before executing. A denial, a proposal
//! or a limit is recorded as the step's [`Fault`]: the step then fails
//! closed whatever the guest returns (DESIGN.md, enforcement point 3).

pub(crate) mod redact;

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use charter_config::Limits;
use charter_store::Store;

use charter_audit::{Decision, Event};

use crate::error::LimitKind;
use crate::record::{self, Budget};
use redact::Redactor;

use crate::capabilities::{Exec, FnId, HostFunction, Refusal, catalog};
pub use crate::capabilities::{Llm, OfflineLlm, OpenAiLlm};

/// Log levels of `charter:host/log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Only the mediator makes an [`Exec`]: a capability executes only after
/// the pipeline's checks.
pub(crate) struct Sealed(());

/// What the guest sees: a value (as JSON, which is also how it is
/// journaled), or an error message it may handle.
pub(crate) type GuestResult = Result<serde_json::Value, String>;

/// A reply that is ready now, or one that waits (LLM) and must be awaited
/// by an async host function under the host-side timeout.
pub(crate) enum Dispatch {
    Ready(GuestResult),
    Wait(Pin<Box<dyn Future<Output = GuestResult> + Send>>),
}

/// Why the step must fail closed, whatever the guest returns.
#[derive(Debug, Clone)]
pub(crate) enum Fault {
    Limit(LimitKind, String),
    Denied {
        function: String,
        reason: String,
    },
    Proposed {
        id: String,
        function: String,
    },
    /// People rejected the proposal (or it expired): fail closed.
    Rejected {
        function: String,
        proposal: String,
        status: String,
    },
    /// The call differs from the journal's record of it.
    NonDeterministic(String),
}

/// What the journal lets a call do (workflow runs only).
#[derive(Debug)]
pub(crate) enum Gate {
    Fresh,
    Replay(serde_json::Value),
    Approved(String),
}

/// One log line of a plugin: from `charter:host/log` or its stdout/stderr.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LogLine {
    pub level: LogLevel,
    /// `log`, `stdout` or `stderr`.
    pub source: &'static str,
    pub message: String,
}

/// Most log lines kept per call; later lines are counted, not kept.
pub const MAX_LOG_LINES: usize = 1000;
/// Longest log message kept, in bytes.
pub const MAX_LOG_MESSAGE: usize = 4096;
/// Longest rationale kept, in bytes.
pub const MAX_RATIONALE: usize = 16 << 10;

/// What the grant lets one plugin do, fixed when it is loaded.
#[derive(Debug)]
pub(crate) struct PluginContext {
    /// The configuration it was checked and linked under: its policies and
    /// groups decide its calls (one configuration per step, whatever is
    /// applied while it runs).
    pub config: Arc<crate::hot::config::Config>,
    pub name: String,
    pub digest: String,
    pub groups: Vec<String>,
    pub owner: Option<String>,
    pub granted: BTreeSet<FnId>,
    /// Granted host functions that a group's policies decide.
    pub governed: BTreeSet<FnId>,
    /// Argument grants (secret names, channel names) by interface.
    /// (Argument grants of `wasi:http`: the hosts its groups allow.)
    pub grants: std::collections::BTreeMap<&'static str, BTreeSet<String>>,
    pub limits: Limits,
}

/// Deployment-wide services behind the capabilities.
pub(crate) struct Services {
    pub store: Arc<dyn Store>,
    /// The host's capabilities (`capabilities/`).
    pub capabilities: crate::capabilities::Registry,
    pub log: charter_audit::AnyLog,
    /// `[deployment] max_steps_in_flight` (fixed for the host's life).
    pub max_steps_in_flight: u32,
    pub engine: wasmtime::Engine,
    /// Loaded connectors by the interface they provide (no version).
    pub connectors: std::sync::RwLock<std::collections::HashMap<String, Arc<crate::LoadedPlugin>>>,
    /// Admission to the instance pool (`sandbox/engine.rs`).
    pub slots: crate::sandbox::engine::Slots,
    /// The places taken in each `[quotas.NAME]` window (`quota.rs`).
    pub quotas: crate::quota::Quotas,
}

/// What policy said about one call.
#[derive(Debug, Clone)]
pub(crate) struct Ruling {
    pub decision: Decision,
    pub policies: Vec<String>,
    pub reason: Option<String>,
    pub role: Option<String>,
    /// The groups that grant the function (their approval settings apply).
    pub groups: Vec<String>,
}

impl Ruling {
    /// This ruling, allowed by the people who approved it (their names
    /// first in `policies`, then the rules that asked for them).
    pub(crate) fn approved_by(self, approvers: &[String]) -> Ruling {
        Ruling {
            decision: Decision::Allow,
            policies: approvers
                .iter()
                .map(|a| format!("approved-by:{a}"))
                .chain(self.policies)
                .collect(),
            ..self
        }
    }

    /// What policy's `verdict` rules; none (no policy applies): allowed by
    /// `no_policy` (the grant that let the call through).
    pub(crate) fn of_verdict(
        verdict: Option<charter_policy::Verdict>,
        no_policy: &str,
        groups: Vec<String>,
    ) -> Ruling {
        let (decision, policies, reason, role) = match verdict {
            None => (Decision::Allow, vec![no_policy.to_string()], None, None),
            Some(charter_policy::Verdict::Allow { policies }) => {
                (Decision::Allow, policies, None, None)
            }
            Some(charter_policy::Verdict::Propose { policies, role }) => {
                (Decision::Propose, policies, None, role)
            }
            Some(charter_policy::Verdict::Deny { policies, reason }) => {
                (Decision::Deny, policies, Some(reason), None)
            }
        };
        Ruling {
            decision,
            policies,
            reason,
            role,
            groups,
        }
    }

    /// A denial by `policies` (none: by the host's own rule) for `reason`.
    pub(crate) fn deny(policies: Vec<String>, reason: &str) -> Ruling {
        Ruling {
            decision: Decision::Deny,
            policies,
            reason: Some(reason.to_string()),
            role: None,
            groups: vec![],
        }
    }
}

/// Per-call mediator state; lives in the wasmtime `Store`.
pub(crate) struct Mediator {
    /// The idempotency key of an approved proposal executed outside a run
    /// (`charter:<proposal>`): every execution attempt of one proposal, a
    /// re-approval after a crash included, carries the same key.
    pub(crate) approved_key: Option<String>,
    /// The idempotency prefix of an approved agent tool call's execution
    /// (`charter:<proposal>`): the tool plugin's n-th outbound call carries
    /// `<prefix>:<n>`, the same at every execution attempt of the proposal.
    pub(crate) approved_calls: Option<String>,
    pub ctx: Arc<PluginContext>,
    pub(crate) services: Arc<Services>,
    pub calls: u64,
    pub fault: Option<Fault>,
    pub logs: Vec<LogLine>,
    pub dropped_logs: u64,
    /// Who started the work (separation of duties).
    pub initiator: Option<String>,
    step: String,
    call_n: u64,
    /// Events of this step, committed with it.
    pub pending: Vec<Event>,
    /// Capabilities' per-step state (kv's overlay of the step's writes).
    step_state: std::collections::HashMap<std::any::TypeId, Box<dyn std::any::Any + Send>>,
    pub rationale: Option<String>,
    /// Secret values handed out in this step: every string that leaves
    /// the step passes this one redaction point.
    revealed: Redactor,
    /// What the step has recorded and holds, against
    /// `limits.max_recorded_mib`.
    budget: Budget,
    /// The step's journal when it runs inside a workflow run.
    pub journal: Option<Arc<crate::workflow::journal::Journal>>,
    /// Calls answered from the journal.
    pub replayed: u64,
    /// The last executed call (id, function, approving proposal), for its
    /// result event.
    last_call: Option<(String, FnId, Option<String>)>,
    /// Result events of calls that finish outside the store (HTTP), and a
    /// fault found there.
    late: Arc<std::sync::Mutex<Late>>,
    /// A workflow step's timeout (when it ends, and its length in ms): a
    /// deadline trap names it.
    pub step_timeout: Option<(std::time::Instant, u64)>,
    /// When the step's deadline passes: no host call waits past it.
    pub deadline: std::time::Instant,
}

/// What a call that finishes outside the store reports back to its step.
#[derive(Default)]
pub(crate) struct Late {
    pub(crate) events: Vec<Event>,
    pub(crate) fault: Option<Fault>,
    /// A proposal whose request body is still being read: the step is
    /// already suspended on it, and it is recorded once the body is whole.
    pub(crate) unrecorded: Option<String>,
}

static STEP_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Mediator {
    pub fn new(
        ctx: Arc<PluginContext>,
        services: Arc<Services>,
        initiator: Option<String>,
    ) -> Mediator {
        let n = STEP_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Mediator {
            services,
            calls: 0,
            fault: None,
            logs: Vec::new(),
            dropped_logs: 0,
            initiator,
            step: format!("{:x}-{n:x}", charter_audit::now_ms()),
            call_n: 0,
            approved_key: None,
            approved_calls: None,
            pending: Vec::new(),
            step_state: Default::default(),
            rationale: None,
            revealed: Redactor::default(),
            budget: Budget::new(ctx.limits.max_recorded_bytes),
            journal: None,
            replayed: 0,
            last_call: None,
            late: Default::default(),
            step_timeout: None,
            deadline: std::time::Instant::now() + Duration::from_millis(ctx.limits.deadline_ms),
            ctx,
        }
    }

    /// How long a host call may wait: the plugin's host-call timeout, cut
    /// to what is left of the step's deadline (its `limits.deadline_ms`, or
    /// a workflow step's tighter timeout).
    pub(crate) fn call_timeout(&self) -> Duration {
        let t = Duration::from_millis(self.ctx.limits.host_call_timeout_ms);
        t.min(
            self.deadline
                .saturating_duration_since(std::time::Instant::now()),
        )
    }

    /// Why a wait ended at the deadline: `{what} still waiting after N ms`,
    /// naming the limit that set the deadline.
    pub(crate) fn deadline_detail(&self, what: &str) -> String {
        match self.step_timeout {
            Some((_, ms)) if ms < self.ctx.limits.deadline_ms => {
                format!("{what} still waiting after {ms} ms (the step's timeout_ms)")
            }
            _ => format!(
                "{what} still waiting after {} ms (limits.deadline_ms)",
                self.ctx.limits.deadline_ms
            ),
        }
    }

    /// Result events that arrived after their call returned to the guest;
    /// a fault found there becomes the step's (if it has none yet).
    pub(crate) fn take_late(&mut self) -> Vec<Event> {
        let mut late = self.late.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(id) = late.unrecorded.take()
            && matches!(&self.fault, Some(Fault::Proposed { id: p, .. }) if *p == id)
        {
            // The proposed request's body never completed: nothing was
            // proposed, so the step does not wait on it.
            self.fault = Some(late.fault.take().unwrap_or_else(|| {
                Fault::Limit(
                    LimitKind::Deadline,
                    "the body of a request that needs approval was never completed; nothing was proposed".into(),
                )
            }));
        }
        if let Some(f) = late.fault.take()
            && self.fault.is_none()
        {
            self.fault = Some(f);
        }
        std::mem::take(&mut late.events)
    }

    /// Add an event to the step's pending events, counted against its
    /// budget. Over budget, the step fails with a limit (the event stays:
    /// it is bounded, and what happened is recorded).
    pub(crate) fn push(&mut self, ev: Event) -> wasmtime::Result<()> {
        let size = event_size(&ev);
        self.pending.push(ev);
        self.spend(size)
    }

    /// Count bytes the host holds or records for the step.
    pub(crate) fn spend(&mut self, bytes: u64) -> wasmtime::Result<()> {
        match self.budget.spend(bytes) {
            Ok(()) => Ok(()),
            Err(detail) => {
                if self.fault.is_none() {
                    self.fault = Some(Fault::Limit(LimitKind::Recorded, detail.clone()));
                }
                Err(wasmtime::Error::msg(detail))
            }
        }
    }

    /// Bytes left in the step's budget.
    pub(crate) fn budget_left(&self) -> u64 {
        self.budget.limit.saturating_sub(self.budget.used)
    }

    /// Run inside a workflow step attempt: calls are journaled and checked
    /// against the journal.
    pub(crate) fn set_journal(&mut self, j: Arc<crate::workflow::journal::Journal>) {
        self.step = format!("{}/{}/{}", j.run, j.step, j.attempt);
        self.journal = Some(j);
    }

    /// The journal position of the current call, if journaled.
    pub(crate) fn jref(&self) -> Option<charter_audit::JournalRef> {
        self.journal.as_ref().map(|j| j.jref(self.call_n))
    }

    /// The idempotency key of the current call, if journaled.
    pub(crate) fn idempotency_key(&self) -> Option<String> {
        self.jref()
            .map(|r| r.idempotency_key())
            .or_else(|| self.approved_key.clone())
            .or_else(|| {
                self.approved_calls
                    .as_ref()
                    .map(|p| format!("{p}:{}", self.call_n))
            })
    }

    /// A key naming the current call outside a workflow run (no journal):
    /// unique to this step's call.
    pub(crate) fn current_call_key(&self) -> String {
        format!("charter:{}:{}", self.step, self.call_n)
    }

    /// In a workflow run, consult the journal about the next call. An
    /// `Err` traps the guest with the fault recorded.
    pub(crate) fn gate(
        &mut self,
        function: &str,
        args: &serde_json::Value,
        replayable: bool,
    ) -> wasmtime::Result<Gate> {
        use crate::workflow::journal::Check;
        let Some(j) = &self.journal else {
            return Ok(Gate::Fresh);
        };
        let seq = self.call_n + 1;
        let args_digest = charter_audit::json_digest(args);
        match j.check(seq, function, &args_digest, &self.ctx.digest, replayable) {
            Check::Fresh => Ok(Gate::Fresh),
            Check::Approved(p) => Ok(Gate::Approved(p)),
            Check::Replay(v) => {
                self.call_n += 1;
                self.replayed += 1;
                Ok(Gate::Replay(v))
            }
            Check::Pending(id) => {
                self.call_n += 1;
                let err = wasmtime::Error::msg(format!("{function}: awaiting approval ({id})"));
                self.fault = Some(Fault::Proposed {
                    id,
                    function: function.to_string(),
                });
                Err(err)
            }
            Check::Refused { proposal, status } => {
                self.call_n += 1;
                let err =
                    wasmtime::Error::msg(format!("{function}: proposal {proposal} was {status}"));
                self.fault = Some(Fault::Rejected {
                    function: function.to_string(),
                    proposal,
                    status,
                });
                Err(err)
            }
            Check::Diverged(msg) => {
                tracing::warn!(plugin = %self.ctx.name, "non-deterministic step: {msg}");
                let err = wasmtime::Error::msg(format!("non-deterministic step: {msg}"));
                self.fault = Some(Fault::NonDeterministic(msg));
                Err(err)
            }
        }
    }

    /// The ruling for a call people approved: allowed, unless the policy
    /// in force now denies it.
    pub(crate) fn approved_ruling(
        &self,
        fname: &charter_config::FunctionName,
        action: &str,
        args: &serde_json::Value,
        proposal: &str,
    ) -> Ruling {
        let r = self.rule(fname, action, args);
        if r.decision == Decision::Deny {
            return r;
        }
        Ruling {
            decision: Decision::Allow,
            policies: std::iter::once(format!("approved:{proposal}"))
                .chain(r.policies)
                .collect(),
            ..r
        }
    }

    /// Journal the result of the last executed host-native call (in a
    /// workflow run; a secret's value is never recorded).
    pub(crate) fn record_result(&mut self, r: &GuestResult) {
        let (Some(_), Some((call, f, proposal))) = (&self.journal, self.last_call.take()) else {
            return;
        };
        let ok = r.is_ok();
        // Replayable results are journaled in full (bounded: a larger one
        // is recorded by digest and the call is not replayed but executed
        // again); others only as "ok".
        let f = catalog().get(f);
        let result = match r {
            Ok(reply) if f.function.replay => {
                Some(self.redact_value(&record::bounded(reply.clone(), record::MAX_RESULT, None)))
            }
            _ => None,
        };
        let summary = match r {
            Ok(_) => "ok".into(),
            Err(e) => record::text(&self.redact(e)),
        };
        let _ = self.push(Event::CallResult {
            call,
            plugin: self.ctx.name.clone(),
            function: f.display().to_string(),
            ok,
            summary,
            duration_us: 0,
            proposal,
            result,
        });
    }

    /// Where calls that finish outside the store report back.
    pub(crate) fn late(&self) -> Arc<std::sync::Mutex<Late>> {
        self.late.clone()
    }

    /// The journal position the next call takes.
    pub(crate) fn next_position(&self) -> u64 {
        self.call_n + 1
    }

    /// The step's name (`run/step/attempt` in a workflow run).
    pub(crate) fn step_name(&self) -> &str {
        &self.step
    }

    /// The step's redaction point, for work that outlives the call.
    pub(crate) fn redactor(&self) -> Redactor {
        self.revealed.clone()
    }

    pub(crate) fn next_call_id(&mut self) -> String {
        self.call_n += 1;
        format!("{}/{}", self.step, self.call_n)
    }

    /// Replace revealed secret values in `text` (the step's one redaction
    /// point, see [`redact`]).
    pub(crate) fn redact(&self, text: &str) -> String {
        self.revealed.redact(text).into_owned()
    }

    /// [`redact`](Self::redact) for every string of a JSON value.
    pub(crate) fn redact_value(&self, v: &serde_json::Value) -> serde_json::Value {
        self.revealed.redact_value(v)
    }

    /// Redact, from now on, every value `other` redacts too.
    pub(crate) fn inherit_redactions(&mut self, other: &Redactor) {
        self.revealed.inherit(other);
    }

    /// What a connector called from this step inherits from it.
    pub(crate) fn importer(&self) -> crate::capabilities::connector::Importer {
        crate::capabilities::connector::Importer {
            journal: self.jref(),
            deadline: self.deadline,
            redactor: self.revealed.clone(),
        }
    }

    /// A text that leaves the step: redacted, then cut to `max` bytes.
    pub(crate) fn redact_text(&self, text: &str, max: usize) -> String {
        // Redact the whole text, then cut: cutting first could leave the
        // start of a value at the cut (replacing earlier values shortens
        // the text and slides it in). One pass, whatever the text's size.
        record::cut(&self.redact(text), max)
    }

    /// The grant alone decides (no policy applies). The granting groups
    /// still ride along: a proposal the quota makes of this call takes
    /// their approver role, approvals and expiry.
    fn by_grant(&self, fname: &charter_config::FunctionName) -> Ruling {
        Ruling {
            decision: Decision::Allow,
            policies: vec!["grant".to_string()],
            reason: None,
            role: None,
            groups: self.naming_groups(fname),
        }
    }

    /// Every group granted to this plugin that names `fname`'s action, in
    /// any version: a versioned pattern never lets a call skip its
    /// group's policies (or its approval settings).
    fn naming_groups(&self, fname: &charter_config::FunctionName) -> Vec<String> {
        let dep = &self.ctx.config.deployment;
        self.ctx
            .groups
            .iter()
            .filter(|g| dep.groups.get(*g).is_some_and(|gr| gr.names_action(fname)))
            .cloned()
            .collect()
    }

    /// Ask policy about `action` with `args`. Functions of groups without
    /// policies are decided by the grant alone (allow).
    pub(crate) fn rule(
        &self,
        fname: &charter_config::FunctionName,
        action: &str,
        args: &serde_json::Value,
    ) -> Ruling {
        let groups = self.naming_groups(fname);
        let refs: Vec<&str> = groups.iter().map(String::as_str).collect();
        // Decided here, on the guest's fiber stack: `PolicyEngine::decide`
        // keeps its own stack use bounded and moves what Cedar's evaluator
        // must judge onto a stack segment of its own (charter-policy's
        // crate docs say how; ARCHITECTURE.md, "Policy decisions", why).
        let verdict = self.ctx.config.policy.decide(
            &refs,
            &self.ctx.name,
            &self.ctx.digest,
            &self.ctx.groups,
            action,
            args,
        );
        Ruling::of_verdict(verdict, "grant", groups)
    }

    /// A fresh call's ruling with its `[quotas]` applied (`quota.rs`):
    /// every call policy or its grant allows, before anything is recorded.
    pub(crate) fn quota(&self, fname: &charter_config::FunctionName, ruling: Ruling) -> Ruling {
        crate::quota::limit(
            &self.ctx.config.deployment,
            &self.services.quotas,
            fname,
            ruling,
        )
    }

    /// Record a call event (arguments redacted) into the step's events.
    pub(crate) fn call_event(
        &self,
        call: &str,
        function: &str,
        args: &serde_json::Value,
        ruling: &Ruling,
    ) -> Event {
        let args_digest = charter_audit::json_digest(args);
        Event::Call {
            call: call.to_string(),
            plugin: self.ctx.name.clone(),
            digest: self.ctx.digest.clone(),
            function: function.to_string(),
            args: self.recorded_args(args, &args_digest),
            args_digest,
            decision: ruling.decision,
            policies: ruling.policies.clone(),
            reason: ruling
                .reason
                .as_deref()
                .map(|r| self.redact_text(r, record::MAX_TEXT)),
            initiator: self.initiator.clone(),
            journal: self.jref(),
            request: None,
        }
    }

    /// Arguments as recorded: in full up to [`record::MAX_RECORDED_ARGS`],
    /// else by digest and size; secret values redacted.
    pub(crate) fn recorded_args(
        &self,
        args: &serde_json::Value,
        digest: &str,
    ) -> serde_json::Value {
        let bounded = record::bounded(args.clone(), record::MAX_RECORDED_ARGS, Some(digest));
        if self.revealed.is_empty() {
            // Nothing to redact: no second copy.
            return bounded;
        }
        self.redact_value(&bounded)
    }

    /// Handle a `deny` or `propose` ruling: record it and fail the step
    /// closed. Returns the trap to raise.
    pub(crate) fn hold(
        &mut self,
        call: &str,
        function: &str,
        args: &serde_json::Value,
        ruling: &Ruling,
    ) -> wasmtime::Error {
        if ruling.decision == Decision::Propose {
            let (events, fault) = self.proposal(call, function, args, ruling);
            for ev in events {
                let _ = self.push(ev);
            }
            let err = wasmtime::Error::msg(format!("{function}: {}", fault_text(&fault)));
            self.fault = Some(fault);
            return err;
        }
        let ev = self.call_event(call, function, args, ruling);
        let _ = self.push(ev);
        self.deny(
            function,
            ruling
                .reason
                .clone()
                .unwrap_or_else(|| "denied by policy".into()),
        )
    }

    /// The events that route a call to people (its `propose` call event and
    /// the proposal) and the fault that suspends the step, not yet recorded.
    pub(crate) fn proposal(
        &self,
        call: &str,
        function: &str,
        args: &serde_json::Value,
        ruling: &Ruling,
    ) -> (Vec<Event>, Fault) {
        // The approval settings of the groups whose policies decide the
        // call, combined strictly (the most approvals, the shortest expiry):
        // another group granting the same function, listed first, cannot
        // lower them.
        let dep = &self.ctx.config.deployment;
        let granting: Vec<_> = ruling
            .groups
            .iter()
            .filter_map(|g| dep.groups.get(g))
            .collect();
        let deciding: Vec<_> = granting
            .iter()
            .copied()
            .filter(|g| g.policies.is_some())
            .collect();
        let set = if deciding.is_empty() {
            granting
        } else {
            deciding
        };
        let needed = set.iter().map(|g| g.approvals).max().unwrap_or(1).max(1);
        let expiry_ms = set
            .iter()
            .map(|g| g.proposal_expiry_ms)
            .min()
            .unwrap_or(72 * 3_600_000);
        let role = ruling
            .role
            .clone()
            .or_else(|| set.iter().find_map(|g| g.approver_role.clone()));
        let id = proposal_id();
        tracing::info!(plugin = %self.ctx.name, function, proposal = %id, "call routed to people");
        let args_digest = charter_audit::json_digest(args);
        let events = vec![
            self.call_event(call, function, args, ruling),
            Event::Proposal {
                id: id.clone(),
                call: call.to_string(),
                plugin: self.ctx.name.clone(),
                digest: self.ctx.digest.clone(),
                function: function.to_string(),
                args: self.recorded_args(args, &args_digest),
                args_digest,
                rationale: self.rationale.clone(),
                policies: ruling.policies.clone(),
                approver_role: role,
                approvals_needed: needed,
                expires_at_ms: charter_audit::now_ms().saturating_add(expiry_ms),
                initiator: self.initiator.clone(),
                owner: self.ctx.owner.clone(),
                journal: self.jref(),
            },
        ];
        let fault = Fault::Proposed {
            id,
            function: function.to_string(),
        };
        (events, fault)
    }

    /// Count the call against the cap and check the grant. An `Err` traps
    /// the guest; the fault stays recorded so the step fails closed.
    pub(crate) fn admit(&mut self, function: &str, granted: bool) -> wasmtime::Result<()> {
        if self.fault.is_none() {
            // A fault found by a request still in flight (proposed, diverged,
            // over budget) stops the step's next call as well.
            let late = self.late.lock().unwrap_or_else(|p| p.into_inner());
            self.fault = late.fault.clone();
        }
        if let Some(f) = &self.fault {
            // A faulted step gets nothing more.
            return Err(wasmtime::Error::msg(format!("step already failed: {f:?}")));
        }
        self.calls += 1;
        if self.calls > self.ctx.limits.max_host_calls {
            let detail = format!(
                "more than {} host calls in one step (limits.max_host_calls)",
                self.ctx.limits.max_host_calls
            );
            self.fault = Some(Fault::Limit(LimitKind::HostCalls, detail.clone()));
            return Err(wasmtime::Error::msg(detail));
        }
        if !granted {
            return Err(self.deny_recorded(
                function,
                &serde_json::Value::Null,
                "not granted to this plugin".into(),
            ));
        }
        Ok(())
    }

    /// Deny, recording the attempt as a `deny` call event.
    pub(crate) fn deny_recorded(
        &mut self,
        function: &str,
        args: &serde_json::Value,
        reason: String,
    ) -> wasmtime::Error {
        let call = self.next_call_id();
        let ruling = Ruling::deny(vec![], &reason);
        let ev = self.call_event(&call, function, args, &ruling);
        let _ = self.push(ev);
        self.deny(function, reason)
    }

    /// Refuse a call whose arguments are out of bounds: the guest gets the
    /// error, the call is recorded by its arguments' digest and size, and
    /// the step fails with a limit (exit 3).
    pub(crate) fn refuse_oversize(
        &mut self,
        function: &str,
        args: &serde_json::Value,
        detail: String,
    ) -> wasmtime::Error {
        let call = self.next_call_id();
        let ruling = Ruling::deny(vec!["limit".into()], &detail);
        let mut ev = self.call_event(&call, function, args, &ruling);
        if let Event::Call {
            args: recorded,
            args_digest,
            ..
        } = &mut ev
        {
            // However small: out-of-bounds arguments are never recorded.
            *recorded = record::elided(args, Some(args_digest));
        }
        let _ = self.push(ev);
        let detail = self.redact_text(&format!("{function}: {detail}"), record::MAX_TEXT);
        tracing::warn!(plugin = %self.ctx.name, "{detail}");
        if self.fault.is_none() {
            self.fault = Some(Fault::Limit(LimitKind::Arguments, detail.clone()));
        }
        wasmtime::Error::msg(detail)
    }

    fn deny(&mut self, function: &str, reason: String) -> wasmtime::Error {
        let reason = self.redact_text(&reason, record::MAX_TEXT);
        // Recorded in the log and returned to the caller: info, not a warning.
        tracing::info!(plugin = %self.ctx.name, digest = %self.ctx.digest, function, %reason, "capability call denied");
        let err = wasmtime::Error::msg(format!("{function} denied: {reason}"));
        self.fault = Some(Fault::Denied {
            function: function.to_string(),
            reason,
        });
        err
    }

    /// The one pipeline of a host-native call, whatever the capability:
    /// count it against the cap → re-check the grant (defense in depth
    /// behind linking) → the capability's argument checks (bounds first:
    /// out of bounds is refused and recorded by digest; then argument
    /// grants such as secret or channel names) → the journal (a recorded
    /// result stands in where the function allows it) → policy (allow,
    /// propose, deny) → record the call → execute. A function whose effect
    /// leaves the host runs only once its decision is on disk.
    pub(crate) fn dispatch(
        &mut self,
        id: FnId,
        args: serde_json::Value,
    ) -> wasmtime::Result<Dispatch> {
        let f = catalog().get(id);
        let fname = f.display();
        self.admit(fname, self.ctx.granted.contains(&id))?;
        tracing::trace!(plugin = %self.ctx.name, function = fname, "host call");
        let cap = self.services.capabilities.capability(f).clone();
        if f.function.voice {
            self.decide_voice(id, f, &args)?;
            return Ok(cap.execute(&args, self.exec(f)));
        }
        if let Err(refusal) = cap.check(f.function, &args, self.ctx.grants.get(f.interface.name)) {
            return Err(match refusal {
                Refusal::Oversize(detail) => self.refuse_oversize(fname, &args, detail),
                Refusal::Ungranted(reason) => self.deny_recorded(fname, &args, reason),
            });
        }
        let approved = match self.gate(fname, &args, f.function.replay)? {
            Gate::Fresh => None,
            Gate::Approved(p) => Some(p),
            Gate::Replay(v) => return Ok(Dispatch::Ready(Ok(v))),
        };
        let ruling = match &approved {
            Some(p) => self.approved_ruling(f.function_name(), f.action(), &args, p),
            None if self.ctx.governed.contains(&id) => {
                let r = self.rule(f.function_name(), f.action(), &args);
                self.quota(f.function_name(), r)
            }
            None => self.quota(f.function_name(), self.by_grant(f.function_name())),
        };
        let call_id = self.next_call_id();
        if ruling.decision != Decision::Allow {
            return Err(self.hold(&call_id, fname, &args, &ruling));
        }
        let ev = self.call_event(&call_id, fname, &args, &ruling);
        if f.function.leaves_host {
            return Ok(self.leave_host(cap, f, ev, call_id, approved, args));
        }
        self.push(ev)?;
        if self.journal.is_none() {
            return Ok(cap.execute(&args, self.exec(f)));
        }
        // In a workflow run every executed call's result is journaled.
        self.last_call = Some((call_id, id, approved));
        let d = cap.execute(&args, self.exec(f));
        if let Dispatch::Ready(r) = &d {
            self.record_result(r);
        }
        Ok(d)
    }

    /// [`dispatch`](Self::dispatch) for a voice function (a log line)
    /// whose typed arguments the caller holds: the same stages dispatch
    /// runs for one (count and grant re-check, then policy where a group's
    /// policies govern it; a voice call is neither checked for argument
    /// grants, journaled nor recorded there either), without building JSON
    /// arguments for a call no policy reads: `args` runs only for policy.
    /// `run` executes the allowed call. A function that is not a voice
    /// function takes the whole pipeline of `dispatch`, so a wrong caller
    /// cannot skip a stage.
    pub(crate) fn dispatch_voice(
        &mut self,
        id: FnId,
        args: impl FnOnce() -> serde_json::Value,
        run: impl FnOnce(Exec<'_>) -> Dispatch,
    ) -> wasmtime::Result<Dispatch> {
        let f = catalog().get(id);
        if !f.function.voice {
            return self.dispatch(id, args());
        }
        self.admit(f.display(), self.ctx.granted.contains(&id))?;
        tracing::trace!(plugin = %self.ctx.name, function = f.display(), "host call");
        if self.ctx.governed.contains(&id) {
            self.decide_voice(id, f, &args())?;
        }
        Ok(run(self.exec(f)))
    }

    /// Log lines and the rationale are the plugin's own voice: kept in its
    /// log (and the proposal), not as audited calls. Where a group's
    /// policies govern them they decide all the same: a denial fails the
    /// step closed, and a line cannot wait for a person (propose denies).
    fn decide_voice(
        &mut self,
        id: FnId,
        f: &'static HostFunction,
        args: &serde_json::Value,
    ) -> wasmtime::Result<()> {
        if !self.ctx.governed.contains(&id) {
            return Ok(());
        }
        let ruling = self.rule(f.function_name(), f.action(), args);
        if ruling.decision == Decision::Allow {
            return Ok(());
        }
        let reason = match ruling.decision {
            Decision::Propose => {
                "a policy routes it to people, but a log line or rationale cannot wait for a decision".to_string()
            }
            _ => ruling
                .reason
                .clone()
                .unwrap_or_else(|| "denied by policy".into()),
        };
        let denied = Ruling::deny(ruling.policies.clone(), &reason);
        let call_id = self.next_call_id();
        Err(self.hold(&call_id, f.display(), args, &denied))
    }

    /// An allowed call whose effect leaves the host: its decision is
    /// appended to the log (on disk) before the effect runs, and its result
    /// right after, so a step re-run after a crash finds it in the journal
    /// and does not repeat the effect (where the function's result may
    /// stand in). The effect is bounded by the host-call timeout of
    /// [`wait`](Self::wait).
    fn leave_host(
        &mut self,
        cap: Arc<dyn crate::capabilities::Capability>,
        f: &'static HostFunction,
        decided: Event,
        call: String,
        proposal: Option<String>,
        args: serde_json::Value,
    ) -> Dispatch {
        let effect = match cap.execute(&args, self.exec(f)) {
            Dispatch::Wait(effect) => effect,
            ready => {
                // Nothing left the host: recorded with the step.
                let _ = self.push(decided);
                return ready;
            }
        };
        let log = self.services.log.clone();
        let redactor = self.revealed.clone();
        let plugin = self.ctx.name.clone();
        Dispatch::Wait(Box::pin(async move {
            log.append(vec![decided])
                .await
                .map_err(|e| format!("event log: {e}; not executed"))?;
            let started = std::time::Instant::now();
            let r = effect.await;
            let result = match &r {
                Ok(v) if f.function.replay => Some(redactor.redact_value(&record::bounded(
                    v.clone(),
                    record::MAX_RESULT,
                    None,
                ))),
                _ => None,
            };
            let summary = match &r {
                Ok(_) => "ok".to_string(),
                Err(e) => record::text(&redactor.redact(e)),
            };
            let ev = Event::CallResult {
                call,
                plugin,
                function: f.display().to_string(),
                ok: r.is_ok(),
                summary,
                duration_us: started.elapsed().as_micros() as u64,
                proposal,
                result,
            };
            if let Err(e) = log.append(vec![ev]).await {
                // The effect happened; a re-run repeats it under the same
                // idempotency key.
                tracing::error!(
                    function = f.display(),
                    "event log: {e}; result not recorded"
                );
            }
            r
        }))
    }

    fn exec(&mut self, f: &'static HostFunction) -> Exec<'_> {
        Exec {
            m: self,
            f,
            _sealed: Sealed(()),
        }
    }

    /// Execute a call people approved (its decision is already recorded):
    /// the capability's own implementation, on the stored arguments.
    /// What `dispatch` checks before policy, for an approved call executed
    /// outside a step: the function is still granted to the plugin, and
    /// the capability's argument checks (bounds, secret and channel names
    /// granted now) pass. An approval never widens a grant.
    pub(crate) fn recheck_approved(
        &self,
        id: FnId,
        args: &serde_json::Value,
    ) -> Result<(), String> {
        let f = catalog().get(id);
        if !self.ctx.granted.contains(&id) {
            return Err(format!(
                "{} is no longer granted to {}",
                f.display(),
                self.ctx.name
            ));
        }
        let cap = self.services.capabilities.capability(f).clone();
        cap.check(f.function, args, self.ctx.grants.get(f.interface.name))
            .map_err(|r| match r {
                Refusal::Oversize(detail) | Refusal::Ungranted(detail) => detail,
            })
    }

    pub(crate) fn execute_approved(&mut self, id: FnId, args: &serde_json::Value) -> Dispatch {
        let f = catalog().get(id);
        let cap = self.services.capabilities.capability(f).clone();
        cap.execute(args, self.exec(f))
    }

    /// A capability's state for this step (made on first use).
    pub(crate) fn step_state<T: Default + Send + 'static>(&mut self) -> &mut T {
        self.step_state
            .entry(std::any::TypeId::of::<T>())
            .or_insert_with(|| Box::new(T::default()))
            .downcast_mut()
            .expect("keyed by its type")
    }

    /// Names of revealed secrets whose values occur in `text`.
    pub(crate) fn secret_names_in(&self, text: &str) -> Vec<String> {
        self.revealed.names_in(text)
    }

    /// Redact `value` (secret `name`) from now on.
    pub(crate) fn reveal(&mut self, name: &str, value: &str) {
        self.revealed.reveal(name, value);
    }

    /// The span of one host call: plugin, function, and run, step and
    /// attempt inside a workflow run. Attached to the call's future with
    /// `.instrument` (or entered for a call that never waits).
    pub(crate) fn call_span(&self, function: &str) -> tracing::Span {
        let j = self.journal.as_deref();
        tracing::debug_span!(
            "host_call",
            plugin = %self.ctx.name,
            function,
            run = j.map(|j| j.run.as_str()),
            step = j.map(|j| j.step.as_str()),
            attempt = j.map(|j| j.attempt),
        )
    }

    /// Await a waiting reply under the host-side timeout.
    pub(crate) async fn wait(
        &mut self,
        fut: Pin<Box<dyn Future<Output = GuestResult> + Send>>,
    ) -> wasmtime::Result<GuestResult> {
        let timeout = self.call_timeout();
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => Ok(r),
            Err(_) => {
                let detail = format!(
                    "a host call took longer than {} ms (limits.host_call_timeout_ms)",
                    timeout.as_millis()
                );
                self.fault = Some(Fault::Limit(LimitKind::HostCallTimeout, detail.clone()));
                Err(wasmtime::Error::msg(detail))
            }
        }
    }

    pub(crate) fn push_log(&mut self, level: LogLevel, source: &'static str, mut message: String) {
        if message.len() > MAX_LOG_MESSAGE {
            let mut cut = MAX_LOG_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let plugin = &self.ctx.name;
        match level {
            LogLevel::Trace => {
                tracing::trace!(target: "charter::plugin", %plugin, source, "{message}")
            }
            LogLevel::Debug => {
                tracing::debug!(target: "charter::plugin", %plugin, source, "{message}")
            }
            LogLevel::Info => {
                tracing::info!(target: "charter::plugin", %plugin, source, "{message}")
            }
            LogLevel::Warn => {
                tracing::warn!(target: "charter::plugin", %plugin, source, "{message}")
            }
            LogLevel::Error => {
                tracing::error!(target: "charter::plugin", %plugin, source, "{message}")
            }
        }
        if self.logs.len() < MAX_LOG_LINES {
            self.logs.push(LogLine {
                level,
                source,
                message,
            });
        } else {
            self.dropped_logs += 1;
        }
    }
}

/// What a suspending fault says to the guest.
fn fault_text(f: &Fault) -> String {
    match f {
        Fault::Proposed { id, .. } => format!("awaiting approval ({id})"),
        other => format!("{other:?}"),
    }
}

/// A proposal id: random, so ids of different processes never collide.
fn proposal_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // No OS randomness: fall back to a digest of time, process and a
        // counter (unique per process, and across processes by pid).
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = charter_audit::json_digest(&serde_json::json!([
            charter_audit::now_ms(),
            std::process::id(),
            n
        ]));
        return format!("P-{}", &d[7..39]);
    }
    format!("P-{}", hex::encode(b))
}

/// What a pending event costs the step's budget (an estimate from its
/// variable parts, without encoding it).
fn event_size(ev: &Event) -> u64 {
    let v = match ev {
        Event::Call { args, reason, .. } => {
            record::json_size(args) + reason.as_ref().map_or(0, String::len)
        }
        Event::CallResult {
            summary, result, ..
        } => summary.len() + result.as_ref().map_or(0, record::json_size),
        Event::KvWrite { key, value, .. } => key.len() + value.as_ref().map_or(0, String::len),
        Event::Proposal {
            args, rationale, ..
        } => record::json_size(args) + rationale.as_ref().map_or(0, String::len),
        _ => 0,
    };
    (v + 256) as u64
}

/// The largest kv key and value a plugin (or an operator) may write.
pub fn kv_bounds() -> (usize, usize) {
    (crate::capabilities::MAX_KEY, crate::capabilities::MAX_VALUE)
}

/// Read a secret for the host's own use (the LLM provider's API key), never
/// for a plugin: plugins reach secrets only through [`Mediator::dispatch`].
pub use crate::capabilities::read_secret;
