//! The escalation of the IT-ops example: page the on-call role through
//! `charter:host/notify` (channel `oncall`), then fail the step on purpose,
//! so the workflow's `on_failure = "escalate"` hands the run to the on-call
//! role: the alert is now theirs, and the run waits for their resolution.
//! The notification's result is recorded, so a re-run never pages twice.
use charter_sdk::{StepError, Value, notify};

fn run(input: Value) -> Result<Value, StepError> {
    let service = input["service"].as_str().unwrap_or("unknown service");
    let subject = format!("[on-call] {service} is down and a restart did not help");
    let body = format!(
        "alert {} (fingerprint {}): {}. Diagnosis: HTTP {}. The automatic restart was tried; the service did not recover.",
        input["alertname"], input["fingerprint"], input["summary"], input["status"]
    );
    let id = notify::send("oncall", &subject, &body).map_err(|e| StepError::retryable(e.0))?;
    Err(StepError::fatal(format!(
        "{service} still down after remediation: paged on-call (delivery {id})"
    )))
}

charter_sdk::step!(run);
