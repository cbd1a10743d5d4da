//! Spins forever without calling the host.
use charter_sdk::{StepError, Value};

fn run(_input: Value) -> Result<Value, StepError> {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

charter_sdk::step!(run);
