// Hot-loading fixture, shared by fx-hot-v1 and fx-hot-v2 (the same
// source, two components with two digests): with `{"wait_for": KEY}` it
// fails retryably until its kv holds KEY, so a run waits, really in
// flight, for as long as a test wants; then it says which version ran.
use charter_sdk::{StepError, Value, json, kv};

fn run(input: Value) -> Result<Value, StepError> {
    if let Some(key) = input["wait_for"].as_str()
        && kv::get(key)?.is_none()
    {
        return Err(StepError::retryable(format!("waiting for kv key {key}")));
    }
    Ok(json!({"version": env!("CARGO_PKG_NAME")}))
}

charter_sdk::step!(run);
