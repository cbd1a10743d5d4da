//! Returns `{"blob": "xxxx…"}` of `input.bytes` bytes (default 8 MiB).
use charter_sdk::{StepError, Value, json};

fn run(input: Value) -> Result<Value, StepError> {
    let n = input["bytes"].as_u64().unwrap_or(8 << 20) as usize;
    Ok(json!({"blob": "x".repeat(n)}))
}

charter_sdk::step!(run);
