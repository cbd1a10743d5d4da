//! The events of a deployment. Every state change is one of these.

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
    },
    /// A write to a plugin's kv namespace (`value: None` deletes).
    KvWrite {
        plugin: String,
        key: String,
        value: Option<String>,
        /// Set when an operator wrote it (`charter kv set`), not a step.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
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
    },
    /// A proposal reached its end: approved-and-executed, rejected, expired,
    /// or failed on execution.
    ProposalResolved {
        proposal: String,
        status: String,
        detail: Option<String>,
    },
}

impl Event {
    /// The plugin an event is about, if any.
    pub fn plugin(&self) -> Option<&str> {
        match self {
            Event::ConfigLoaded { .. } | Event::CheckFailed { .. } => None,
            Event::Grant { plugin, .. } => Some(plugin),
            Event::PluginLoaded { plugin, .. }
            | Event::PluginRefused { plugin, .. }
            | Event::Call { plugin, .. }
            | Event::CallResult { plugin, .. }
            | Event::KvWrite { plugin, .. }
            | Event::Step { plugin, .. }
            | Event::Proposal { plugin, .. } => Some(plugin),
            Event::ApprovalDecision { .. } | Event::ProposalResolved { .. } => None,
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
        }
    }
}

/// An event as stored: its sequence number, time and hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    pub time_ms: u64,
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

/// `sha256:` of a JSON value's canonical text (object keys sorted at every
/// level, no whitespace), so equal arguments always have equal digests.
pub fn json_digest(v: &Value) -> String {
    use sha2::{Digest, Sha256};
    let mut s = String::new();
    canonical(v, &mut s);
    format!("sha256:{}", hex::encode(Sha256::digest(s.as_bytes())))
}

fn canonical(v: &Value, out: &mut String) {
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
                canonical(&m[*k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}
