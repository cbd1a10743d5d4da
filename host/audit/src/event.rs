//! The events of a deployment. Every state change is one of these.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A mediator decision on one capability call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allow,
    Propose,
    Deny,
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Decision::Allow => "allow",
            Decision::Propose => "propose",
            Decision::Deny => "deny",
        })
    }
}

/// Where a capability call sits in a workflow run: the durable-execution
/// journal is the run's calls keyed by (step, seq).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalRef {
    pub run: String,
    pub step: String,
    pub attempt: u32,
    /// 1-based position of the call among the attempt's audited calls.
    pub seq: u64,
}

impl JournalRef {
    /// The idempotency key handed to receivers: the same for every attempt
    /// and every replay of this call, different for every other call.
    pub fn idempotency_key(&self) -> String {
        format!("charter:{}:{}:{}", self.run, self.step, self.seq)
    }
}

/// One entry of the event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Event {
    /// The deployment file was loaded by a host; `changed` when its digest
    /// differs from the last one recorded (a configuration change).
    ConfigLoaded {
        path: String,
        digest: String,
        phase: u8,
        changed: bool,
    },
    /// A grant in force: who granted which groups to a plugin, and why.
    Grant {
        plugin: String,
        groups: Vec<String>,
        granted_by: Option<String>,
        reason: Option<String>,
    },
    /// `charter check` refused or failed the deployment.
    CheckFailed { problems: Vec<String> },
    PluginLoaded {
        plugin: String,
        digest: String,
        groups: Vec<String>,
    },
    /// Refused at load (ungranted import, phase gate, pin, bad bytes).
    PluginRefused {
        plugin: String,
        digest: Option<String>,
        rule: String,
        reasons: Vec<String>,
    },
    /// A capability call and the mediator's decision on it. Written before
    /// the call executes when the call has an effect outside the host.
    Call {
        call: String,
        plugin: String,
        digest: String,
        function: String,
        /// `sha256:` of the canonical JSON arguments.
        args_digest: String,
        /// The arguments, with secret values redacted.
        args: Value,
        decision: Decision,
        /// Policy ids that decided (Cedar), or the rule that denied.
        policies: Vec<String>,
        reason: Option<String>,
        initiator: Option<String>,
        /// Set when the call belongs to a workflow run.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        journal: Option<JournalRef>,
        /// Outbound HTTP: `sha256:` of the whole request (method, URL with
        /// query, the guest's headers, body), compared when the call is
        /// made again on replay.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<String>,
    },
    /// What an allowed (or approved) call returned.
    CallResult {
        call: String,
        plugin: String,
        function: String,
        ok: bool,
        summary: String,
        duration_us: u64,
        /// Set when the execution ran on an approval.
        proposal: Option<String>,
        /// The full result (JSON) of a journaled call, replayed instead of
        /// executing the call again.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "present"
        )]
        result: Option<Value>,
    },
    /// A write to a plugin's kv namespace (`value: None` deletes).
    KvWrite {
        plugin: String,
        key: String,
        value: Option<String>,
        /// Set when an operator wrote it (`charter kv set`), not a step.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
        /// How the operator was proven: `token` (a bearer token whose hash
        /// the deployment declares) or `claimed` (a name given where the
        /// deployment declares no token). Absent in logs written before.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auth: Option<String>,
        /// Secrets whose values the key or value held: they are recorded
        /// as `[secret:NAME]`, and the index restores them from the
        /// secret's source when it applies the write.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        secrets: Vec<String>,
    },
    /// One step call of a plugin and how it ended.
    Step {
        plugin: String,
        digest: String,
        initiator: Option<String>,
        outcome: String,
        error: Option<String>,
        host_calls: u64,
        duration_us: u64,
    },
    /// A call routed to people.
    Proposal {
        id: String,
        call: String,
        plugin: String,
        digest: String,
        function: String,
        args: Value,
        args_digest: String,
        rationale: Option<String>,
        policies: Vec<String>,
        approver_role: Option<String>,
        approvals_needed: u32,
        expires_at_ms: u64,
        initiator: Option<String>,
        owner: Option<String>,
        /// Set when the proposing call belongs to a workflow run: approval
        /// resumes the run instead of executing the call directly.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        journal: Option<JournalRef>,
    },
    /// One person's decision on a proposal (or a refused attempt to decide).
    ApprovalDecision {
        proposal: String,
        by: String,
        approve: bool,
        comment: Option<String>,
        /// False when the attempt was refused (self-approval, expired, ...).
        accepted: bool,
        reason: Option<String>,
        /// How the person was proven: `token` (a bearer token whose hash
        /// the deployment declares) or `claimed` (a name given where the
        /// deployment declares no token). Absent in logs written before.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auth: Option<String>,
    },
    /// A proposal reached its end: approved-and-executed, rejected, expired,
    /// or failed on execution.
    ProposalResolved {
        proposal: String,
        status: String,
        detail: Option<String>,
    },
    /// A workflow run began (durable before its first step runs).
    RunStarted {
        run: String,
        workflow: String,
        /// `sha256:` of the workflow definition the run follows.
        workflow_digest: String,
        input: Value,
        initiator: Option<String>,
        /// The first step to run.
        first: Option<String>,
        /// How the initiator was proven: `token` (a bearer token whose hash
        /// the deployment declares) or `claimed` (a name given where the
        /// deployment declares no token). Absent in logs written before.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auth: Option<String>,
        /// What started it when no one asked directly: a webhook delivery
        /// or a schedule's tick (at most one run each, ever).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trigger: Option<TriggerRef>,
        /// The digest of each plugin the workflow names, at the start: every
        /// attempt of the run runs those bytes (hot loading). Absent in
        /// logs written before, and for plugins that could not load.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        plugins: BTreeMap<String, String>,
    },
    /// One attempt of one workflow step ended (or the step was skipped).
    StepAttempt {
        run: String,
        step: String,
        attempt: u32,
        plugin: String,
        input: Value,
        /// `ok`, `skipped`, `failed`, `awaiting-approval`.
        outcome: String,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "present"
        )]
        output: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// Failure class: retryable, timeout, limit, trap, fatal, denied,
        /// rejected, nondeterministic, input.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failure: Option<String>,
        /// Set when the engine will retry: when the next attempt may start.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_at_ms: Option<u64>,
        /// Set when the attempt waits for a proposal's decision.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        proposal: Option<String>,
        /// Calls answered from the journal instead of executed.
        #[serde(default)]
        replayed: u64,
        duration_us: u64,
        /// The step the run goes to next (none: the run ends or waits).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    },
    /// A failed step handed to people holding `role`.
    Escalated {
        id: String,
        run: String,
        step: String,
        role: String,
        reason: String,
    },
    /// Someone resolved (or tried to resolve) an escalation.
    EscalationResolved {
        id: String,
        run: String,
        by: String,
        /// `retry`, `skip` (with `output`) or `fail`.
        action: String,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "present"
        )]
        output: Option<Value>,
        comment: Option<String>,
        accepted: bool,
        reason: Option<String>,
        /// For `skip`: the step the run goes to next.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<String>,
        /// How the person was proven: `token` (a bearer token whose hash
        /// the deployment declares) or `claimed` (a name given where the
        /// deployment declares no token). Absent in logs written before.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auth: Option<String>,
    },
    /// A workflow run ended: `completed`, `failed` or `cancelled`.
    RunFinished {
        run: String,
        status: String,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "present"
        )]
        output: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
        /// How who cancelled it was proven: `token` (a bearer token whose hash
        /// the deployment declares) or `claimed` (a name given where the
        /// deployment declares no token). Absent in logs written before.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auth: Option<String>,
    },
    /// A request to a running host (`charter up`) whose caller could not be
    /// authenticated: no token, a malformed, unknown or expired one. Never
    /// the token itself; `identity` is the name an expired token (or a
    /// well-formed unknown one) shows, which proves nothing.
    AuthRefused {
        /// `METHOD /route` as the router matched it (`GET /v1/runs`), or
        /// the method alone for a path no route matches.
        route: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        identity: Option<String>,
        /// `no-token`, `malformed-token`, `unknown-token`,
        /// `expired-token`, `bad-scheme`.
        reason: String,
    },
    /// Refusals of one `reason` past the recorded ones in one window: a
    /// flood of anonymous requests is counted, not recorded one by one.
    AuthRefusalsSuppressed {
        reason: String,
        count: u64,
        /// The window the count covers (Unix milliseconds).
        from_ms: u64,
        to_ms: u64,
    },
    /// `charter up` refused webhook deliveries: an unknown hook, a bad or
    /// missing signature or token, an oversize body, a body without the
    /// shape the hook declares. Aggregated: one event
    /// per hook and reason per window at most, counting the refusals since
    /// the last one, so a flood cannot grow the log without bound.
    HookRefused {
        /// The hook's name, or `?` for a name that is not a hook.
        hook: String,
        /// `unknown-hook`, `bad-signature`, `no-credential`, `bad-token`,
        /// `too-large`, `shape`.
        reason: String,
        /// Refusals this event stands for (this one and those not recorded
        /// since the last event of the same hook and reason).
        count: u64,
        /// One refusal's detail, bounded.
        detail: String,
    },
    /// An AI agent's tool calls refused before any policy decision: a
    /// tool that does not exist for it, arguments that do not fit the
    /// tool's schema, over the tool plugin's size limit, over the agent's
    /// calls per minute. Nothing ran. Aggregated like `hook-refused`: one
    /// event per agent and rule per window at most, counting the refusals
    /// since the last one (a flood cannot grow the log one event per
    /// call; the count is kept). Not a policy denial (`call` with `deny`).
    ToolRefused {
        /// The agent (`[agents.NAME]`).
        agent: String,
        /// The tool asked for last, bounded (its MCP name).
        tool: String,
        /// The distinct tools the refusals asked for, each bounded, at
        /// most 16 (the first ones of the window; `tool` is the last).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tools: Vec<String>,
        /// `unknown-tool`, `schema`, `too-large`, `rate-limit`.
        rule: String,
        /// Refusals this event stands for.
        count: u64,
        /// One refusal's detail, bounded.
        detail: String,
    },
    /// A new version of a plugin was sent to a running host (`charter
    /// plugins push`, the watched plugin file, or a rollback): recorded
    /// before it is checked; `plugin-activated` or `plugin-refused` follows.
    PluginPushed {
        plugin: String,
        digest: String,
        /// Who sent it (the authenticated subject; `watch` for a file change).
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auth: Option<String>,
        /// `push`, `watch` or `rollback`.
        source: String,
    },
    /// A version passed the load-time check and serves new runs from now
    /// on (runs started before keep the version they recorded).
    PluginActivated {
        plugin: String,
        digest: String,
        previous: Option<String>,
        by: String,
    },
    /// Only `digest` of `plugin` is accepted from now on (`None`: unpinned).
    PluginPinned {
        plugin: String,
        digest: Option<String>,
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auth: Option<String>,
    },
    /// A changed `charter.toml` passed every check and serves from now on
    /// (a running host's `config apply`): what changed, by name only (no
    /// secret value, no token hash), and who applied it.
    ConfigApplied {
        /// `sha256:` of the new file's text (and of the workflow files it
        /// names, see `charter_runtime::hot::config`).
        digest: String,
        previous: String,
        /// Generation number after the swap.
        generation: u64,
        /// `added`/`removed`/`changed` → names, by kind (`grants`,
        /// `policies`, `workflows`, `identities`, `plugins`).
        changes: serde_json::Value,
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auth: Option<String>,
        /// `api` or `watch`.
        source: String,
    },
    /// A changed `charter.toml` was refused; `serving` (its digest) goes on.
    ConfigRefused {
        digest: Option<String>,
        serving: String,
        reasons: Vec<String>,
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auth: Option<String>,
        source: String,
    },
}

/// What started a run without a request naming it (`RunStarted::trigger`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerRef {
    /// `webhook` or `schedule`.
    pub kind: String,
    /// The hook's name, or the scheduled workflow's.
    pub name: String,
    /// What makes it one start: the delivery id, or the tick's Unix ms.
    pub key: String,
    /// How it proved itself: `hmac-sha256`, `token` (the identity is the
    /// run's initiator), or `schedule`.
    pub auth: String,
    /// The identity that proved the delivery with its token (a hook may
    /// have several senders, each numbering its deliveries on its own);
    /// none for a signature (one shared secret) or a schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
}

impl TriggerRef {
    /// The key a start is deduplicated by: `{kind}:{name}:{key}`, or
    /// `{kind}/{sender}:{name}:{key}` for a sender's own delivery ids (an
    /// identity's name has no `:`, so no delivery id of one sender can
    /// make another's key).
    pub fn dedup_key(&self) -> String {
        match &self.sender {
            Some(s) => format!("{}/{}:{}:{}", self.kind, s, self.name, self.key),
            None => format!("{}:{}:{}", self.kind, self.name, self.key),
        }
    }
}

impl Event {
    /// Every event type's name, as [`Event::kind`] says it, in the order the
    /// variants are declared.
    pub const KINDS: &[&str] = &[
        "config-loaded",
        "grant",
        "check-failed",
        "plugin-loaded",
        "plugin-refused",
        "call",
        "call-result",
        "kv-write",
        "step",
        "proposal",
        "approval-decision",
        "proposal-resolved",
        "run-started",
        "step-attempt",
        "escalated",
        "escalation-resolved",
        "run-finished",
        "auth-refused",
        "auth-refusals-suppressed",
        "hook-refused",
        "tool-refused",
        "plugin-pushed",
        "plugin-activated",
        "plugin-pinned",
        "config-applied",
        "config-refused",
    ];

    /// The plugin an event is about, if any.
    pub fn plugin(&self) -> Option<&str> {
        match self {
            Event::ConfigLoaded { .. }
            | Event::CheckFailed { .. }
            | Event::ConfigApplied { .. }
            | Event::ConfigRefused { .. }
            | Event::AuthRefused { .. }
            | Event::AuthRefusalsSuppressed { .. } => None,
            Event::Grant { plugin, .. } => Some(plugin),
            Event::PluginLoaded { plugin, .. }
            | Event::PluginRefused { plugin, .. }
            | Event::PluginPushed { plugin, .. }
            | Event::PluginActivated { plugin, .. }
            | Event::PluginPinned { plugin, .. }
            | Event::Call { plugin, .. }
            | Event::CallResult { plugin, .. }
            | Event::KvWrite { plugin, .. }
            | Event::Step { plugin, .. }
            | Event::Proposal { plugin, .. }
            | Event::StepAttempt { plugin, .. } => Some(plugin),
            Event::ApprovalDecision { .. }
            | Event::ProposalResolved { .. }
            | Event::RunStarted { .. }
            | Event::Escalated { .. }
            | Event::EscalationResolved { .. }
            | Event::RunFinished { .. }
            | Event::HookRefused { .. }
            | Event::ToolRefused { .. } => None,
        }
    }

    /// The kebab-case type name.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::ConfigLoaded { .. } => "config-loaded",
            Event::Grant { .. } => "grant",
            Event::CheckFailed { .. } => "check-failed",
            Event::PluginLoaded { .. } => "plugin-loaded",
            Event::PluginRefused { .. } => "plugin-refused",
            Event::Call { .. } => "call",
            Event::CallResult { .. } => "call-result",
            Event::KvWrite { .. } => "kv-write",
            Event::Step { .. } => "step",
            Event::Proposal { .. } => "proposal",
            Event::ApprovalDecision { .. } => "approval-decision",
            Event::ProposalResolved { .. } => "proposal-resolved",
            Event::RunStarted { .. } => "run-started",
            Event::StepAttempt { .. } => "step-attempt",
            Event::Escalated { .. } => "escalated",
            Event::EscalationResolved { .. } => "escalation-resolved",
            Event::RunFinished { .. } => "run-finished",
            Event::AuthRefused { .. } => "auth-refused",
            Event::AuthRefusalsSuppressed { .. } => "auth-refusals-suppressed",
            Event::HookRefused { .. } => "hook-refused",
            Event::ToolRefused { .. } => "tool-refused",
            Event::PluginPushed { .. } => "plugin-pushed",
            Event::PluginActivated { .. } => "plugin-activated",
            Event::ConfigApplied { .. } => "config-applied",
            Event::ConfigRefused { .. } => "config-refused",
            Event::PluginPinned { .. } => "plugin-pinned",
        }
    }

    /// The workflow run an event belongs to, if any.
    pub fn run(&self) -> Option<&str> {
        match self {
            Event::RunStarted { run, .. }
            | Event::StepAttempt { run, .. }
            | Event::Escalated { run, .. }
            | Event::EscalationResolved { run, .. }
            | Event::RunFinished { run, .. } => Some(run),
            Event::Call {
                journal: Some(j), ..
            }
            | Event::Proposal {
                journal: Some(j), ..
            } => Some(&j.run),
            _ => None,
        }
    }
}

/// An optional JSON value as recorded: absent is `None`, and a present
/// `null` is `Some(Null)` (serde alone would read it back as `None`, and a
/// step whose output is `null` would lose its output on replay).
pub fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// An event as stored: its sequence number, time and hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    pub time_ms: u64,
    /// The last event of its append: a batch is acknowledged whole, and a
    /// crash that leaves some of a batch's frames without this one leaves
    /// frames that were never acknowledged (opening the log cuts them).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub end: bool,
    #[serde(flatten)]
    pub event: Event,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// JSON text parsed into a value: what every step does with its output.
/// Instantiated here, in a crate the dev profile optimises fully, rather
/// than in the runtime (opt-level 1), where serde_json's generic parser
/// would be compiled at that level.
pub fn parse_json(text: &str) -> serde_json::Result<Value> {
    serde_json::from_str(text)
}

/// `sha256:` of a JSON value's canonical text (object keys sorted at every
/// level, no whitespace), so equal arguments always have equal digests.
pub fn json_digest(v: &Value) -> String {
    use sha2::{Digest, Sha256};
    let mut s = Vec::with_capacity(128);
    canonical(v, &mut s);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in Sha256::digest(&s) {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
    out
}

/// The canonical text of `v`, written straight into `out` (strings and
/// scalars as serde_json writes them; no intermediate strings per key).
fn canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_unstable();
            out.push(b'{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                crate::encode::string(out, k);
                out.push(b':');
                canonical(&m[k.as_str()], out);
            }
            out.push(b'}');
        }
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(x, out);
            }
            out.push(b']');
        }
        Value::String(s) => crate::encode::string(out, s),
        other => scalar(other, out),
    }
}

/// A string or scalar's JSON text (writing to a `Vec` cannot fail, and
/// neither can encoding a string or a `Value` scalar).
fn scalar<T: Serialize + ?Sized>(v: &T, out: &mut Vec<u8>) {
    let _ = serde_json::to_writer(out, v);
}

/// The record's JSON text, byte for byte what `serde_json::to_vec(r)`
/// writes, without serde's `flatten` machinery (which routes every field
/// of the event through a map serializer): the head (`seq`, `time_ms`,
/// `end`) is written by hand, then the event's own object (`{"type":...}`)
/// with its opening brace replaced by the head: by `encode.rs` for the
/// events every step writes, by serde for the rest.
pub(crate) fn encode_record(r: &Record, out: &mut Vec<u8>) -> serde_json::Result<()> {
    let start = out.len();
    out.extend_from_slice(b"{\"seq\":");
    crate::encode::u64_text(out, r.seq);
    out.extend_from_slice(b",\"time_ms\":");
    crate::encode::u64_text(out, r.time_ms);
    out.push(b',');
    if r.end {
        out.extend_from_slice(b"\"end\":true,");
    }
    if crate::encode::event_body(&r.event, out) {
        return Ok(());
    }
    let head = out.len();
    serde_json::to_writer(&mut *out, &r.event)?;
    // Every event is a struct variant of an internally tagged enum: it
    // encodes as a non-empty object `{"type":...}`.
    if out.get(head) != Some(&b'{') || out.get(head + 1) != Some(&b'"') {
        out.truncate(start);
        return serde_json::to_writer(out, r);
    }
    out.remove(head);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn events() -> Vec<Event> {
        let args = json!({"z": [1, 2.5, null], "a": "q\"u\\o\u{1}té", "m": {"y": true, "b": {}}});
        vec![
            Event::Call {
                call: "c1".into(),
                plugin: "p".into(),
                digest: "sha256:00".into(),
                function: "charter:host/kv.get".into(),
                args_digest: json_digest(&args),
                args,
                decision: Decision::Allow,
                policies: vec!["grant".into()],
                reason: None,
                initiator: Some("olga".into()),
                journal: Some(JournalRef {
                    run: "R1".into(),
                    step: "a".into(),
                    attempt: 1,
                    seq: 3,
                }),
                request: None,
            },
            Event::KvWrite {
                auth: None,
                plugin: "p".into(),
                key: "k\n".into(),
                value: None,
                by: None,
                secrets: vec![],
            },
            Event::StepAttempt {
                run: "R1".into(),
                step: "a".into(),
                attempt: 1,
                plugin: "p".into(),
                input: json!({"n": 1}),
                outcome: "ok".into(),
                output: Some(Value::Null),
                error: None,
                failure: None,
                retry_at_ms: None,
                proposal: None,
                replayed: 0,
                duration_us: 9,
                next: Some("b".into()),
            },
            Event::CheckFailed { problems: vec![] },
            // Every optional field set, hostile strings everywhere.
            Event::Call {
                call: "c\u{0}2".into(),
                plugin: "p\"".into(),
                digest: String::new(),
                function: "f\\".into(),
                args_digest: "sha256:ff".into(),
                args: json!([{"\u{1f}": -3, "x": 1.0e-7}, "\u{7f}é"]),
                decision: Decision::Deny,
                policies: vec![],
                reason: Some("no\r\n".into()),
                initiator: None,
                journal: None,
                request: Some("sha256:aa".into()),
            },
            Event::Call {
                call: "c3".into(),
                plugin: "p".into(),
                digest: "d".into(),
                function: "f".into(),
                args_digest: "a".into(),
                args: Value::Null,
                decision: Decision::Propose,
                policies: vec!["p0".into(), "\u{8}".into()],
                reason: None,
                initiator: None,
                journal: None,
                request: None,
            },
            Event::CallResult {
                call: "c".into(),
                plugin: "p".into(),
                function: "f".into(),
                ok: false,
                summary: "s\t".into(),
                duration_us: u64::MAX,
                proposal: Some("P1".into()),
                result: Some(Value::Null),
            },
            Event::CallResult {
                call: "c".into(),
                plugin: "p".into(),
                function: "f".into(),
                ok: true,
                summary: String::new(),
                duration_us: 0,
                proposal: None,
                result: None,
            },
            Event::KvWrite {
                plugin: "p".into(),
                key: "[secret:S]".into(),
                value: Some("v\"".into()),
                by: Some("olga".into()),
                auth: Some("token".into()),
                secrets: vec!["S".into(), "T".into()],
            },
            Event::Step {
                plugin: "p".into(),
                digest: "sha256:00".into(),
                initiator: None,
                outcome: "failed".into(),
                error: Some("trap: \u{1b}[31m".into()),
                host_calls: 3,
                duration_us: 1435,
            },
            Event::Step {
                plugin: "p".into(),
                digest: "sha256:00".into(),
                initiator: Some("i".into()),
                outcome: "ok".into(),
                error: None,
                host_calls: 0,
                duration_us: 0,
            },
            Event::StepAttempt {
                run: "R\"".into(),
                step: "s".into(),
                attempt: u32::MAX,
                plugin: "p".into(),
                input: json!({"deep": [[{"a": "\\"}]]}),
                outcome: "failed".into(),
                output: None,
                error: Some("e".into()),
                failure: Some("retryable".into()),
                retry_at_ms: Some(12),
                proposal: Some("P".into()),
                replayed: 4,
                duration_us: 5,
                next: None,
            },
        ]
    }

    #[test]
    fn encoded_records_are_serdes_bytes() {
        for (i, event) in events().into_iter().enumerate() {
            for end in [false, true] {
                let r = Record {
                    seq: 7 + i as u64,
                    time_ms: u64::MAX - i as u64,
                    end,
                    event: event.clone(),
                };
                let mut out = b"prefix".to_vec();
                encode_record(&r, &mut out).unwrap();
                assert_eq!(out[6..], serde_json::to_vec(&r).unwrap()[..], "{r:?}");
                let back: Record = serde_json::from_slice(&out[6..]).unwrap();
                assert_eq!(back.event, r.event);
            }
        }
    }

    /// The canonical text as the previous encoder built it (one string
    /// per key and scalar): digests recorded before must still match.
    fn old_canonical(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<_> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String((*k).clone()).to_string());
                    out.push(':');
                    old_canonical(&m[*k], out);
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    old_canonical(x, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }

    #[test]
    fn canonical_digest_sorts_keys_and_matches_the_old_text() {
        let a = json!({"b": 1, "a": [{"d": "x", "c": 1e300}], "é": "\u{7f}\"\u{1}", "": -0.5});
        let b = json!({"é": "\u{7f}\"\u{1}", "a": [{"c": 1e300, "d": "x"}], "": -0.5, "b": 1});
        assert_eq!(json_digest(&a), json_digest(&b));
        // sha256 of the two bytes `{}`, hex in lower case.
        assert_eq!(
            json_digest(&json!({})),
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        for v in [
            a,
            json!(null),
            json!("x"),
            json!([]),
            json!({}),
            json!([[{"k": u64::MAX}]]),
        ] {
            let (mut new, mut old) = (Vec::new(), String::new());
            canonical(&v, &mut new);
            old_canonical(&v, &mut old);
            assert_eq!(String::from_utf8(new).unwrap(), old);
        }
    }
}
