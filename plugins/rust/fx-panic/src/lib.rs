//! Panics inside the guest (a trap for the host).
use charter_sdk::{StepError, Value};

fn run(input: Value) -> Result<Value, StepError> {
    panic!("guest panic on purpose: {input}");
}

charter_sdk::step!(run);
