//! The service desk's `open-case` step (see `service-desk`): it opens a case in the ticketing API (outbound HTTP only).
#[path = "../../service-desk/src/desk.rs"]
mod desk;

use charter_sdk::{StepError, Value};

fn run(input: Value) -> Result<Value, StepError> {
    match input["mode"].as_str() {
        Some("open-case") => desk::open_case(&input),
        other => Err(StepError::fatal(format!("unknown mode {other:?}"))),
    }
}

charter_sdk::step!(run);
