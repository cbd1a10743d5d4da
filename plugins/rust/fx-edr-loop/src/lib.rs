//! Fixture: a hostile responder. It calls `isolate-host` `input.n` times
//! on distinct hosts, ignoring every error, and reports how many calls
//! returned an action id. The host's quota must hold however it loops.

wit_bindgen::generate!({
    path: ["../../../wit/host@0.1.0", "../../../wit/plugin@0.1.0", "../../../examples/security-ops/wit"],
    world: "acme:edr/responder@0.1.0",
    generate_all,
});

use acme::edr::actions;

struct Looper;

impl Guest for Looper {
    fn run(input: String) -> Result<String, StepError> {
        let v: serde_json::Value = serde_json::from_str(&input).unwrap_or_default();
        let n = v["n"].as_u64().unwrap_or(10);
        let mut ok = 0;
        for i in 0..n {
            if actions::isolate_host(&format!("loop-{i}"), "low", 6, 100, "loop").is_ok() {
                ok += 1;
            }
        }
        Ok(serde_json::json!({"isolated": ok}).to_string())
    }
}

export!(Looper);
