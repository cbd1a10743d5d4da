//! The words of a run, typed: run statuses, step outcomes, failure
//! classes, proposal statuses and escalation actions.
//!
//! Each is recorded in the log, the index and `--json` documents as the
//! same kebab-case string it always was: [`as_str`](RunStatus::as_str) is
//! the one table of those strings, and serde, `Display` and `FromStr` all
//! go through it. `Display` pads (`{:<18}` lines up columns), and each type
//! compares equal to its string so that callers written against strings
//! (`st.status == status::COMPLETED`) read the same.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A word the log does not know for this type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {found:?} (known: {known})")]
pub struct UnknownWord {
    pub what: &'static str,
    pub found: String,
    pub known: String,
}

macro_rules! words {
    ($(#[$m:meta])* $name:ident, $what:literal { $($(#[$vm:meta])* $v:ident = $s:literal,)+ }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vm])* $v,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &[$name] = &[$($name::$v,)+];

            /// The word as the log records it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$v => $s,)+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownWord;
            fn from_str(s: &str) -> Result<Self, UnknownWord> {
                match s {
                    $($s => Ok($name::$v),)+
                    _ => Err(UnknownWord {
                        what: $what,
                        found: s.to_string(),
                        known: [$($s,)+].join(", "),
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = std::borrow::Cow::<str>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.as_str()
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.as_str().to_string()
            }
        }
    };
}

words!(
    /// Where a run stands.
    RunStatus, "run status" {
        /// A step is about to run (or running).
        Running = "running",
        /// A step failed and waits for its recorded retry time.
        RetryWait = "retry-wait",
        /// A step waits for people to decide a proposal.
        WaitingApproval = "waiting-approval",
        /// A failed step was handed to people.
        Escalated = "escalated",
        Completed = "completed",
        Failed = "failed",
        Cancelled = "cancelled",
    }
);

impl RunStatus {
    /// Completed, failed or cancelled: nothing moves the run again.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled
        )
    }
}

words!(
    /// How one step attempt ended (`step-attempt`'s `outcome`).
    StepOutcome, "step outcome" {
        Ok = "ok",
        /// Its condition did not hold.
        Skipped = "skipped",
        Failed = "failed",
        AwaitingApproval = "awaiting-approval",
    }
);

words!(
    /// Why an attempt failed (`step-attempt`'s `failure`; what retry
    /// policies name).
    FailureClass, "failure class" {
        /// The step returned `step-error::retryable`.
        Retryable = "retryable",
        /// The step returned `step-error::fatal`.
        Fatal = "fatal",
        /// The attempt ran past its timeout or deadline.
        Timeout = "timeout",
        /// Memory, host-call or output limit.
        Limit = "limit",
        /// Refused by governance (policy, grants, pin).
        Denied = "denied",
        /// People rejected the call, or its proposal expired.
        Rejected = "rejected",
        /// A call differed from the step's journal.
        NonDeterministic = "nondeterministic",
        AwaitingApproval = "awaiting-approval",
        /// The plugin could not be loaded.
        Load = "load",
        /// The guest trapped (panic, bug) or returned something invalid.
        Trap = "trap",
        /// The step's input template named nothing.
        Input = "input",
    }
);

words!(
    /// Where a proposal stands, as the index records it.
    ProposalStatus, "proposal status" {
        Pending = "pending",
        Approved = "approved",
        Executed = "executed",
        Rejected = "rejected",
        Expired = "expired",
        Failed = "failed",
        Cancelled = "cancelled",
    }
);

words!(
    /// What people decided on an escalation.
    EscalationAction, "escalation action" {
        /// Run the step again (attempts so far do not count against its policy).
        Retry = "retry",
        /// Go on as if the step had returned the given output.
        Skip = "skip",
        /// End the run as failed.
        Fail = "fail",
        /// Recorded when the run is cancelled while escalated.
        Cancel = "cancel",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_as_the_log_spells_them() {
        for s in RunStatus::ALL {
            let j = serde_json::to_string(s).unwrap();
            assert_eq!(j, format!("\"{}\"", s.as_str()));
            assert_eq!(serde_json::from_str::<RunStatus>(&j).unwrap(), *s);
            assert_eq!(s.as_str().parse::<RunStatus>().unwrap(), *s);
        }
        for c in FailureClass::ALL {
            assert_eq!(c.as_str().parse::<FailureClass>().unwrap(), *c);
        }
        assert_eq!(FailureClass::NonDeterministic.as_str(), "nondeterministic");
        assert_eq!(format!("[{:<10}]", RunStatus::Failed), "[failed    ]");
        assert!(RunStatus::Completed == "completed");
        assert!("retry-wait".parse::<RunStatus>().unwrap() == RunStatus::RetryWait);
        assert!("sometimes".parse::<FailureClass>().is_err());
        // Every class a retry policy may name is a class.
        for c in charter_config::workflow::FAILURE_CLASSES
            .iter()
            .chain(charter_config::workflow::NEVER_RETRIED)
        {
            assert!(c.parse::<FailureClass>().is_ok(), "{c}");
        }
    }
}
