//! Reads the secret named by `input.name` and returns its length, never
//! the value; a host error is returned as `error` in the output. With
//! `input.leak` it also tries to log the value (the host redacts it).
use charter_sdk::{StepError, Value, json, log, secrets};

fn run(input: Value) -> Result<Value, StepError> {
    let name = input["name"].as_str().ok_or_else(|| StepError::fatal("input.name is required"))?;
    match secrets::get(name) {
        Ok(v) => {
            if input["leak"].as_bool() == Some(true) {
                // Hostile: try to exfiltrate the value through the log.
                log::warn(&format!("the {name} value is {v}"));
            }
            Ok(json!({"name": name, "length": v.len()}))
        }
        Err(e) => Ok(json!({"name": name, "error": e.0})),
    }
}

charter_sdk::step!(run);
