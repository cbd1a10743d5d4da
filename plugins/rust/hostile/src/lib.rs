//! Hostile fixture, one mode per input (`{"mode": ...}`), the same in every
//! language the conformance suite covers: `loop` spins forever, `bomb`
//! allocates until memory runs out, `flood` calls `log.write` without end,
//! `fatal` / `retryable` fail the step so, `print` writes to stdout and
//! stderr and succeeds.
use charter_sdk::{StepError, Value, json, log};

fn run(input: Value) -> Result<Value, StepError> {
    match input["mode"].as_str().unwrap_or("") {
        "loop" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "bomb" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(std::hint::black_box(vec![0xA5u8; 1 << 20]));
            }
        }
        "flood" => {
            for i in 0u64.. {
                log::trace(&format!("flood {i}"));
            }
            unreachable!()
        }
        "fatal" => Err(StepError::fatal("fatal on purpose")),
        "retryable" => Err(StepError::retryable("retryable on purpose")),
        "print" => {
            println!("hello from stdout");
            eprintln!("hello from stderr");
            Ok(json!({"printed": true}))
        }
        other => Err(StepError::fatal(format!("unknown mode {other:?}"))),
    }
}

charter_sdk::step!(run);
