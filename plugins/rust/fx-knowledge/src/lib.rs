//! Searches `input.corpus` for `input.query` with `input.k` (a query of
//! `input.repeat` copies of `input.query` when given) and returns the
//! passages, or the host's error as `error`. With `input.then_fail` the
//! step fails (retryable) after searching.
use charter_sdk::{StepError, Value, json, knowledge};

fn run(input: Value) -> Result<Value, StepError> {
    let corpus = input["corpus"].as_str().unwrap_or("policies");
    let mut query = input["query"].as_str().unwrap_or("").to_string();
    if let Some(n) = input["repeat"].as_u64() {
        query = query.repeat(n as usize);
    }
    let k = input["k"].as_u64().unwrap_or(3).min(u32::MAX as u64) as u32;
    let out = match knowledge::search(corpus, &query, k) {
        Ok(ps) => json!({"passages": ps.iter().map(|p| json!({
            "source": p.source, "text": p.text, "score": p.score,
        })).collect::<Vec<_>>()}),
        Err(e) => json!({"error": e.0}),
    };
    if input["then_fail"].as_bool() == Some(true) {
        return Err(StepError::retryable(format!("failing after search: {out}")));
    }
    Ok(out)
}

charter_sdk::step!(run);
