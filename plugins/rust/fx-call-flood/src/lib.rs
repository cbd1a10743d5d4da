//! Calls the host in a tight loop.
use charter_sdk::{StepError, Value, json, log};

fn run(_input: Value) -> Result<Value, StepError> {
    for i in 0..u64::MAX {
        log::trace(&format!("flood {i}"));
    }
    Ok(json!({}))
}

charter_sdk::step!(run);
