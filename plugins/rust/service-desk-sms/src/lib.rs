//! The service desk's `reply-sms` step (see `service-desk`): it texts the caller through the SMS API (outbound HTTP and its token).
#[path = "../../service-desk/src/desk.rs"]
mod desk;

use charter_sdk::{StepError, Value};

fn run(input: Value) -> Result<Value, StepError> {
    match input["mode"].as_str() {
        Some("reply-sms") => desk::reply_sms(&input),
        other => Err(StepError::fatal(format!("unknown mode {other:?}"))),
    }
}

charter_sdk::step!(run);
