//! Allocates 1 MiB chunks, touching each, until the allocator fails.
use charter_sdk::{StepError, Value, json};

fn run(_input: Value) -> Result<Value, StepError> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let chunk = vec![0xA5u8; 1 << 20];
        hoard.push(std::hint::black_box(chunk));
        if hoard.len() > 1 << 20 {
            return Ok(json!({"chunks": hoard.len()}));
        }
    }
}

charter_sdk::step!(run);
