//! A Charter step in Rust.
use charter_sdk::{StepError, Value, json, log};

fn run(input: Value) -> Result<Value, StepError> {
    let name = input["name"]
        .as_str()
        .ok_or_else(|| StepError::fatal("input.name (string) is required"))?;
    log::info(&format!("greeting {name}"));
    Ok(json!({ "hello": name }))
}

charter_sdk::step!(run);
