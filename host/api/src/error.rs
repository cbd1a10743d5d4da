//! [`ApiError`]: every failure of a [`crate::Control`] operation, with the
//! exit-code class every front end maps the same way (DESIGN.md: 1 error,
//! 2 refused by governance, 3 resource limit, 4 waiting for people, 64
//! usage error).

use charter_runtime::error::{EXIT_ERROR, EXIT_LIMIT, EXIT_REFUSED, EXIT_USAGE, EXIT_WAITING};
use charter_runtime::proposals::ProposalError;
use charter_runtime::workflow::RunError;
use charter_runtime::{CallError, HostError, LoadError};
use serde::{Deserialize, Serialize};

/// What kind of failure an [`ApiError`] is, and so its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorClass {
    /// The request itself is wrong (64): a missing or invalid argument.
    Usage,
    /// An error (1): something named does not exist, a file cannot be
    /// read, a step failed or trapped.
    Error,
    /// Refused by governance (2): ungranted, denied, rejected, phase gate,
    /// digest pin, a decision by someone not allowed to make it.
    Refused,
    /// A resource limit (3): deadline, memory, host-call cap, sizes.
    Limit,
    /// Waiting for people (4): a call awaiting approval.
    Waiting,
}

impl ErrorClass {
    /// The process exit code of this class.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorClass::Usage => EXIT_USAGE,
            ErrorClass::Error => EXIT_ERROR,
            ErrorClass::Refused => EXIT_REFUSED,
            ErrorClass::Limit => EXIT_LIMIT,
            ErrorClass::Waiting => EXIT_WAITING,
        }
    }

    /// The class of a runtime exit code (an unknown code is an error; 0 is
    /// not a failure and reads as one only if a caller makes it so).
    pub fn from_exit_code(code: i32) -> ErrorClass {
        match code {
            EXIT_USAGE => ErrorClass::Usage,
            EXIT_REFUSED => ErrorClass::Refused,
            EXIT_LIMIT => ErrorClass::Limit,
            EXIT_WAITING => ErrorClass::Waiting,
            _ => ErrorClass::Error,
        }
    }

    /// How a message of this class starts in the text output: `refused`,
    /// `limit`, `pending`, `error` (a usage error reads as an error).
    pub fn label(self) -> &'static str {
        match self {
            ErrorClass::Refused => "refused",
            ErrorClass::Limit => "limit",
            ErrorClass::Waiting => "pending",
            ErrorClass::Usage | ErrorClass::Error => "error",
        }
    }
}

/// A decision or resolution refused by governance and recorded in the
/// audit log: what was refused, by which rule, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The proposal or escalation id.
    pub id: String,
    /// The rule that refused it (`separation-of-duties`, `role`, ...).
    pub rule: String,
    /// Why, in words.
    pub reason: String,
}

/// Why a [`crate::Control`] operation failed. Carries its [`ErrorClass`]
/// (so its exit code), a machine-readable `kind` and the message a person
/// reads; nothing in it depends on the front end that shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// The exit-code class.
    pub class: ErrorClass,
    /// What failed, for scripts: `usage`, `not-found`, `invalid`,
    /// `internal`, or the runtime's own kind of a call error (`denied`,
    /// `limit`, `awaiting-approval`, `refused`, `load-error`, `trap`,
    /// `step-error`, `rejected`, `nondeterministic`).
    pub kind: String,
    /// The message: names the plugin, the function and the rule where
    /// there is one, and says what would fix it.
    pub message: String,
    /// Set when a decision was refused by governance (boxed: an error
    /// stays small on the success path of every `Result`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Box<Refusal>>,
}

impl ApiError {
    /// An error of `class` and `kind`.
    pub fn new(class: ErrorClass, kind: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            class,
            kind: kind.to_string(),
            message: message.into(),
            refusal: None,
        }
    }

    /// The request is wrong (exit 64).
    pub fn usage(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorClass::Usage, "usage", message)
    }

    /// Something the request names does not exist (exit 1).
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorClass::Error, "not-found", message)
    }

    /// A value of the request is invalid (exit 1: the same as the CLI's
    /// own checks of what clap accepts, e.g. `--input` that is not JSON).
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorClass::Error, "invalid", message)
    }

    /// Refused by governance without a recorded decision (exit 2).
    pub fn refused(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorClass::Refused, "refused", message)
    }

    /// A request over a size bound (exit 3).
    pub fn limit(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorClass::Limit, "limit", message)
    }

    /// Any other failure, with its causes each said once (exit 1).
    pub fn internal(e: &(dyn std::error::Error + 'static)) -> ApiError {
        ApiError::new(ErrorClass::Error, "internal", describe(e))
    }

    /// The process exit code of this error.
    pub fn exit_code(&self) -> i32 {
        self.class.exit_code()
    }
}

/// An error and its causes, each said once: a cause whose text the message
/// already carries (e.g. the OS error in "cannot read F: No such file or
/// directory") is not repeated.
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

impl From<CallError> for ApiError {
    fn from(e: CallError) -> ApiError {
        ApiError::new(
            ErrorClass::from_exit_code(e.exit_code()),
            e.kind(),
            e.to_string(),
        )
    }
}

impl From<LoadError> for ApiError {
    fn from(e: LoadError) -> ApiError {
        ApiError::from(CallError::Load(e))
    }
}

impl From<RunError> for ApiError {
    fn from(e: RunError) -> ApiError {
        let mut out = ApiError::new(
            ErrorClass::from_exit_code(e.exit_code()),
            match &e {
                RunError::UnknownWorkflow { .. }
                | RunError::UnknownRun(_)
                | RunError::UnknownEscalation(_) => "not-found",
                RunError::Refused { .. } => "refused",
                RunError::WorkflowChanged { .. } | RunError::Invalid(_) => "invalid",
                RunError::Log(_) | RunError::LeaseLost(_) => "internal",
                RunError::Unavailable(_) => "unavailable",
            },
            e.to_string(),
        );
        if let RunError::Refused { id, rule, reason } = e {
            out.refusal = Some(Box::new(Refusal {
                id,
                rule: rule.to_string(),
                reason,
            }));
        }
        out
    }
}

impl From<ProposalError> for ApiError {
    fn from(e: ProposalError) -> ApiError {
        let mut out = ApiError::new(
            ErrorClass::from_exit_code(e.exit_code()),
            match &e {
                ProposalError::Unknown(_) => "not-found",
                ProposalError::Refused { .. } => "refused",
                ProposalError::Failed { .. } => "failed",
            },
            e.to_string(),
        );
        if let ProposalError::Refused { id, rule, reason } = e {
            out.refusal = Some(Box::new(Refusal {
                id,
                rule: rule.to_string(),
                reason,
            }));
        }
        out
    }
}

impl From<HostError> for ApiError {
    fn from(e: HostError) -> ApiError {
        ApiError::internal(&e)
    }
}

impl From<charter_audit::LogError> for ApiError {
    fn from(e: charter_audit::LogError) -> ApiError {
        ApiError::internal(&e)
    }
}

impl From<charter_store::StoreError> for ApiError {
    fn from(e: charter_store::StoreError) -> ApiError {
        ApiError::internal(&e)
    }
}

/// The error part of the failure documents (`{"message", "exit_code"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDoc {
    /// The message.
    pub message: String,
    /// The exit code.
    pub exit_code: i32,
}

impl From<&ApiError> for ErrorDoc {
    fn from(e: &ApiError) -> ErrorDoc {
        ErrorDoc {
            message: e.message.clone(),
            exit_code: e.exit_code(),
        }
    }
}

/// `{"ok": false, "error": {message, exit_code}}`: how `run`, `runs
/// show|cancel`, `escalations resolve` and `proposals approve|reject`
/// report a failure in `--json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Always false.
    pub ok: bool,
    /// What failed.
    pub error: ErrorDoc,
}

impl From<&ApiError> for Failure {
    fn from(e: &ApiError) -> Failure {
        Failure {
            ok: false,
            error: e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_map_to_the_documented_exit_codes() {
        for (class, code) in [
            (ErrorClass::Usage, 64),
            (ErrorClass::Error, 1),
            (ErrorClass::Refused, 2),
            (ErrorClass::Limit, 3),
            (ErrorClass::Waiting, 4),
        ] {
            assert_eq!(class.exit_code(), code);
            assert_eq!(ErrorClass::from_exit_code(code), class);
        }
    }

    #[test]
    fn causes_are_said_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot read x: {0}")]
        struct Outer(#[source] std::io::Error);
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        assert_eq!(describe(&Outer(io)), "cannot read x: gone");
    }

    #[test]
    fn an_error_round_trips_through_json() {
        let mut e = ApiError::refused("P-1: refused: initiator [separation-of-duties]");
        e.refusal = Some(Box::new(Refusal {
            id: "P-1".into(),
            rule: "separation-of-duties".into(),
            reason: "initiator".into(),
        }));
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<ApiError>(&text).unwrap(), e);
    }
}
