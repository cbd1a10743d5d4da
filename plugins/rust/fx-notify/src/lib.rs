//! Sends `input.subject` / `input.body` to `input.channel` (default `ops`)
//! and returns the delivery id, or the host's error as `error`. With
//! `input.then_fail` the step fails (retryable) after sending: a workflow
//! retries it, and the re-run must not send again. With `input.secret` it
//! first reads that secret and puts it in the body (the host redacts it).
use charter_sdk::{StepError, Value, json, notify, secrets};

fn run(input: Value) -> Result<Value, StepError> {
    let channel = input["channel"].as_str().unwrap_or("ops");
    let subject = input["subject"].as_str().unwrap_or("");
    let mut body = input["body"].as_str().unwrap_or("").to_string();
    if let Some(name) = input["secret"].as_str() {
        body.push_str(&format!(" token={}", secrets::get(name)?));
    }
    let out = match notify::send(channel, subject, &body) {
        Ok(id) => json!({"sent": id}),
        Err(e) => json!({"error": e.0}),
    };
    if input["then_fail"].as_bool() == Some(true) {
        return Err(StepError::retryable(format!("failing after notify: {out}")));
    }
    Ok(out)
}

charter_sdk::step!(run);
