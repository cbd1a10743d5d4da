//! Calls the host in a tight loop: `log.write` by default, `kv.get` with
//! `{"fn": "kv"}`. Stopped only by the host-call cap.
use charter_sdk::{StepError, Value, json, kv, log};

fn run(input: Value) -> Result<Value, StepError> {
    let use_kv = input["fn"].as_str() == Some("kv");
    for i in 0..u64::MAX {
        if use_kv {
            kv::get("key-1")?;
        } else {
            log::trace(&format!("flood {i}"));
        }
    }
    Ok(json!({}))
}

charter_sdk::step!(run);
