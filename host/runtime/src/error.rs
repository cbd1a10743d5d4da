//! Errors at the runtime's boundary, each mapped to the CLI's exit codes
//! (DESIGN.md: 0 ok, 1 error, 2 refused by governance, 3 resource limit,
//! 4 waiting for people, 64 usage error).

use std::fmt;
use std::path::PathBuf;

/// Exit code: the call or check succeeded.
pub const EXIT_OK: i32 = 0;
/// Exit code: an error (bad input, bad file, guest failure).
pub const EXIT_ERROR: i32 = 1;
/// Exit code: refused by governance (ungranted, denied, phase gate, pin).
pub const EXIT_REFUSED: i32 = 2;
/// Exit code: a resource limit stopped the call.
pub const EXIT_LIMIT: i32 = 3;
/// Exit code: waiting for people: a call or run awaiting approval, a run
/// escalated. Not a refusal: nothing was decided yet.
pub const EXIT_WAITING: i32 = 4;
/// Exit code: the command line itself was wrong (sysexits `EX_USAGE`): an
/// unknown command or option, a missing argument, a value clap refuses.
pub const EXIT_USAGE: i32 = 64;

/// One import of a component that no grant covers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UngrantedImport {
    pub plugin: String,
    /// `charter:host/kv@0.1.0#set`
    pub function: String,
    /// The groups the plugin has.
    pub granted_groups: Vec<String>,
    /// The groups of the deployment that would grant it (may be empty).
    pub groups_that_grant: Vec<String>,
    /// Extra advice, when the import is special (e.g. WASI with `wasi = "none"`).
    pub hint: Option<String>,
}

impl fmt::Display for UngrantedImport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let granted = if self.granted_groups.is_empty() {
            "none".to_string()
        } else {
            self.granted_groups.join(", ")
        };
        let granting = if self.groups_that_grant.is_empty() {
            "none; define one".to_string()
        } else {
            self.groups_that_grant.join(", ")
        };
        write!(
            f,
            "{}: import {} is not granted (granted groups: {granted}; groups that grant it: {granting})",
            self.plugin, self.function
        )?;
        if let Some(h) = &self.hint {
            write!(f, "; {h}")?;
        }
        Ok(())
    }
}

/// Why a plugin could not be loaded. Nothing of the plugin ran.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("plugin {name:?} is not in the deployment (plugins: {known})")]
    UnknownPlugin { name: String, known: String },
    #[error("{plugin}: cannot read {path}: {source} (build it first, or fix `path` in the config)")]
    Read {
        plugin: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `charter inspect FILE`: no deployment, so no `path` to fix.
    #[error(
        "cannot read {path}: {source} (build it first; inspect takes a component file, or a plugin named in charter.toml)"
    )]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{plugin}: component is over the limit of {limit} bytes (read {size} bytes, then stopped; limits.max_component_mib)"
    )]
    TooLarge {
        plugin: String,
        size: u64,
        limit: u64,
    },
    #[error(
        "{plugin}: digest pin mismatch: config pins {pinned} but {path} is {actual}; rebuild the pinned version or update the pin after review"
    )]
    DigestMismatch {
        plugin: String,
        path: PathBuf,
        pinned: String,
        actual: String,
    },
    #[error(
        "{plugin}: {path} is a core WebAssembly module, not a component; build for wasm32-wasip2 (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule { plugin: String, path: PathBuf },
    #[error("{plugin}: {path} is not a WebAssembly component: {detail}")]
    Malformed {
        plugin: String,
        path: PathBuf,
        detail: String,
    },
    #[error("{plugin}: compiling took longer than {seconds} s; refused")]
    CompileTimeout { plugin: String, seconds: u64 },
    #[error("{}", lines(.0))]
    Ungranted(Vec<UngrantedImport>),
    #[error("{}", lines(.0))]
    Governance(Vec<charter_config::Violation>),
    #[error(
        "{plugin}: does not export `run: func(input: string) -> result<string, step-error>` (world charter:plugin/step@0.1.0): {detail}"
    )]
    NotAStep { plugin: String, detail: String },
    #[error("{plugin}: linking failed: {detail}")]
    Link { plugin: String, detail: String },
    /// A version kept in the data directory's plugin store
    /// (`plugins/sha256-<hex>.wasm`) no longer has the digest it is stored
    /// under: changed on disk since it was written. Refused, never run.
    #[error(
        "{plugin}: the stored version {path} is {actual}, not the {expected} it was stored as (changed on disk); refused: push the version again"
    )]
    Tampered {
        plugin: String,
        path: PathBuf,
        expected: String,
        actual: String,
    },
    /// The state index names a serving version the event log does not
    /// record activating (an edited or unreadable index): refused, never
    /// run.
    #[error(
        "{plugin}: {detail}; the state index is derived: stop Charter, move {} aside and it is rebuilt from the log",
        .state.display()
    )]
    IndexDisagrees {
        plugin: String,
        detail: String,
        state: PathBuf,
    },
    /// A shared log no longer holds an activation this node read from it
    /// (rows deleted by whoever can write the database): refused, the
    /// serving version goes on.
    #[error(
        "{plugin}: the event log no longer holds the activation at seq {seq} this node read from it (rows deleted from the backend's database?): refused, the version serving goes on; `charter audit verify` shows where the chain breaks"
    )]
    ActivationGone { plugin: String, seq: u64 },
    /// A shared log could not be read to find the version that serves (the
    /// database unreachable): nothing of the plugin ran; tried again at
    /// its next use.
    #[error(
        "{plugin}: the event log cannot be read to find the version that serves ({detail}); nothing of it ran, and the next step that needs it tries again"
    )]
    LogUnreadable { plugin: String, detail: String },
}

fn lines<T: fmt::Display>(v: &[T]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

impl LoadError {
    pub fn exit_code(&self) -> i32 {
        match self {
            LoadError::DigestMismatch { .. }
            | LoadError::Tampered { .. }
            | LoadError::IndexDisagrees { .. }
            | LoadError::ActivationGone { .. }
            | LoadError::Ungranted(_)
            | LoadError::Governance(_) => EXIT_REFUSED,
            LoadError::TooLarge { .. } | LoadError::CompileTimeout { .. } => EXIT_LIMIT,
            _ => EXIT_ERROR,
        }
    }
}

/// Which resource limit stopped a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LimitKind {
    Deadline,
    Memory,
    HostCalls,
    InputSize,
    OutputSize,
    Stack,
    HostCallTimeout,
    /// The host's instance pool is full (too many steps in flight).
    HostCapacity,
    /// The step recorded, or made the host hold, more than
    /// `limits.max_recorded_mib`.
    Recorded,
    /// A capability call's arguments are larger than the function accepts.
    Arguments,
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitKind::Deadline => "deadline",
            LimitKind::Memory => "memory",
            LimitKind::HostCalls => "host-call cap",
            LimitKind::InputSize => "input size",
            LimitKind::OutputSize => "output size",
            LimitKind::Stack => "stack",
            LimitKind::HostCallTimeout => "host-call timeout",
            LimitKind::HostCapacity => "host capacity",
            LimitKind::Recorded => "recorded bytes",
            LimitKind::Arguments => "argument size",
        })
    }
}

/// Why one step call failed. The host itself is unaffected: the next call
/// is served normally.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{plugin}: {kind} limit exceeded: {detail}")]
    Limit {
        plugin: String,
        kind: LimitKind,
        detail: String,
    },
    #[error("{plugin}: call to {function} denied: {reason}")]
    Denied {
        plugin: String,
        function: String,
        reason: String,
    },
    #[error("{plugin}: guest trapped: {message}")]
    Trap { plugin: String, message: String },
    #[error("{plugin}: step failed ({}): {message}", if *.retryable { "retryable" } else { "fatal" })]
    Step {
        plugin: String,
        retryable: bool,
        message: String,
    },
    #[error("{plugin}: {message}")]
    Invalid { plugin: String, message: String },
    #[error(
        "{plugin}: call to {function} is awaiting approval: proposal {proposal} (see `charter proposals show {proposal}`)"
    )]
    AwaitingApproval {
        plugin: String,
        proposal: String,
        function: String,
    },
    #[error("{plugin}: call to {function} refused: proposal {proposal} was {status}")]
    Rejected {
        plugin: String,
        function: String,
        proposal: String,
        status: String,
    },
    #[error(
        "{plugin}: non-deterministic step: {detail}; the step was not re-executed (see `charter escalations list`)"
    )]
    NonDeterministic { plugin: String, detail: String },
}

impl CallError {
    /// The same error with every text that came from the step (messages,
    /// reasons, details) passed through `f`: the step's redaction point.
    pub fn map_text(self, f: impl Fn(&str) -> String) -> CallError {
        match self {
            CallError::Load(e) => CallError::Load(e),
            CallError::Limit {
                plugin,
                kind,
                detail,
            } => CallError::Limit {
                plugin,
                kind,
                detail: f(&detail),
            },
            CallError::Denied {
                plugin,
                function,
                reason,
            } => CallError::Denied {
                plugin,
                function,
                reason: f(&reason),
            },
            CallError::Trap { plugin, message } => CallError::Trap {
                plugin,
                message: f(&message),
            },
            CallError::Step {
                plugin,
                retryable,
                message,
            } => CallError::Step {
                plugin,
                retryable,
                message: f(&message),
            },
            CallError::Invalid { plugin, message } => CallError::Invalid {
                plugin,
                message: f(&message),
            },
            CallError::NonDeterministic { plugin, detail } => CallError::NonDeterministic {
                plugin,
                detail: f(&detail),
            },
            e @ (CallError::AwaitingApproval { .. } | CallError::Rejected { .. }) => e,
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            CallError::Load(e) => e.exit_code(),
            CallError::Limit { .. } => EXIT_LIMIT,
            CallError::Denied { .. } | CallError::Rejected { .. } => EXIT_REFUSED,
            CallError::AwaitingApproval { .. } => EXIT_WAITING,
            _ => EXIT_ERROR,
        }
    }

    /// A short machine-readable kind for `--json` reports.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Load(
                LoadError::Ungranted(_)
                | LoadError::Governance(_)
                | LoadError::DigestMismatch { .. }
                | LoadError::Tampered { .. }
                | LoadError::IndexDisagrees { .. },
            ) => "refused",
            CallError::Load(_) => "load-error",
            CallError::Limit { .. } => "limit",
            CallError::Denied { .. } => "denied",
            CallError::Trap { .. } => "trap",
            CallError::Step { .. } => "step-error",
            CallError::Invalid { .. } => "invalid",
            CallError::AwaitingApproval { .. } => "awaiting-approval",
            CallError::Rejected { .. } => "rejected",
            CallError::NonDeterministic { .. } => "nondeterministic",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waiting for people is not a refusal: scripts tell them apart.
    #[test]
    fn waiting_has_its_own_exit_code() {
        let waiting = CallError::AwaitingApproval {
            plugin: "p".into(),
            proposal: "P-1".into(),
            function: "f".into(),
        };
        assert_eq!(waiting.exit_code(), EXIT_WAITING);
        let denied = CallError::Denied {
            plugin: "p".into(),
            function: "f".into(),
            reason: "r".into(),
        };
        assert_eq!(denied.exit_code(), EXIT_REFUSED);
        let rejected = CallError::Rejected {
            plugin: "p".into(),
            function: "f".into(),
            proposal: "P-1".into(),
            status: "rejected".into(),
        };
        assert_eq!(rejected.exit_code(), EXIT_REFUSED);
        let codes = [
            EXIT_OK,
            EXIT_ERROR,
            EXIT_REFUSED,
            EXIT_LIMIT,
            EXIT_WAITING,
            EXIT_USAGE,
        ];
        assert_eq!(codes, [0, 1, 2, 3, 4, 64]);
    }
}
