//! The refund bot: explains its recommendation, then asks the payments
//! connector for the refund. Whether that call runs, waits for a person or
//! is denied is decided by the host's policy, not by this code.
//!
//! Input: `{"order_id": "A-1", "amount_cents": 5000, "reason": "damaged"}`, or
//! several in order: `{"refunds": [{"order_id": ...}, ...]}`.

wit_bindgen::generate!({
    path: ["../../../wit/host@0.1.0", "../../../wit/plugin@0.1.0", "../../../examples/refunds/wit"],
    world: "acme:payments/bot@0.1.0",
    generate_all,
});

use acme::payments::refunds;
use charter::host::{explain, log};

struct Bot;

impl Guest for Bot {
    fn run(input: String) -> Result<String, StepError> {
        let v: serde_json::Value =
            serde_json::from_str(&input).map_err(|e| StepError::Fatal(format!("input: {e}")))?;
        // One refund, or several in order (`{"refunds": [{...}, ...]}`).
        let Some(list) = v["refunds"].as_array() else {
            return Ok(refund(&v)?.to_string());
        };
        let mut ids = Vec::new();
        for r in list {
            ids.push(refund(r)?);
        }
        Ok(serde_json::json!({"refunds": ids}).to_string())
    }
}

fn refund(v: &serde_json::Value) -> Result<serde_json::Value, StepError> {
    let order = v["order_id"].as_str().ok_or(StepError::Fatal("order_id is required".into()))?;
    let amount = v["amount_cents"]
        .as_u64()
        .ok_or(StepError::Fatal("amount_cents is required".into()))?;
    let reason = v["reason"].as_str().unwrap_or("customer request");
    explain::rationale(&format!(
        "order {order}: customer reports '{reason}'; refund of {amount} cents recommended"
    ));
    log::write(log::Level::Info, &format!("requesting refund of {amount} cents on {order}"));
    let id = refunds::issue_refund(order, amount, reason).map_err(StepError::Retryable)?;
    Ok(serde_json::json!({"order_id": order, "refund_id": id}))
}

export!(Bot);
