//! Echoes its input. With `{"kv_set": [k, v]}` it writes kv first, with
//! `{"kv_get": k}` it reads, with `{"log": msg}` it logs, and with
//! `{"fail": "retryable"|"fatal"}` it returns that step error.
use charter_sdk::{StepError, Value, json, kv, log};

fn run(input: Value) -> Result<Value, StepError> {
    if let Some(msg) = input["log"].as_str() {
        log::info(msg);
    }
    if let Some([k, v]) = input["kv_set"].as_array().map(|a| a.as_slice()) {
        kv::set(k.as_str().unwrap_or(""), v.as_str().unwrap_or(""))?;
    }
    let got = match input["kv_get"].as_str() {
        Some(k) => json!(kv::get(k)?),
        None => Value::Null,
    };
    match input["fail"].as_str() {
        Some("retryable") => return Err(StepError::retryable("asked to fail (retryable)")),
        Some("fatal") => return Err(StepError::fatal("asked to fail (fatal)")),
        _ => {}
    }
    Ok(json!({"echo": input, "kv": got}))
}

charter_sdk::step!(run);
