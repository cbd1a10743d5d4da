//! Its very first action is a kv write. Deployed without a kv-write grant it
//! must be refused at load, so the key `ran` never exists.
use charter_sdk::{StepError, Value, json, kv};

fn run(_input: Value) -> Result<Value, StepError> {
    kv::set("ran", "yes")?;
    Ok(json!({"ran": true}))
}

charter_sdk::step!(run);
