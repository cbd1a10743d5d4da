//! Refund triage: reads the order from the plugin's kv namespace, asks the
//! deployment's LLM to classify the customer's request, and returns a
//! recommendation. It *proposes*; it executes nothing (no payment capability
//! is imported at all).
//!
//! Input:  `{"order_id": "A-1001", "request": "arrived broken, refund please"}`
//! Output: `{"order_id", "recommendation", "amount_cents", "confidence", "reason"}`

use charter_sdk::{StepError, Value, json, kv, llm, log};

const LABELS: &[&str] = &["damaged", "not-delivered", "changed-mind", "fraud-risk"];

fn run(input: Value) -> Result<Value, StepError> {
    let order_id = input["order_id"]
        .as_str()
        .ok_or_else(|| StepError::fatal("input.order_id (string) is required"))?;
    let request = input["request"]
        .as_str()
        .ok_or_else(|| StepError::fatal("input.request (string) is required"))?;

    let Some(order) = kv::get_json(&format!("order:{order_id}"))? else {
        log::warn(&format!("order {order_id} not found; escalating"));
        return Ok(json!({
            "order_id": order_id,
            "recommendation": "escalate",
            "amount_cents": 0,
            "confidence": 1.0,
            "reason": "order not found",
        }));
    };
    let amount = order["amount_cents"].as_u64().unwrap_or(0);
    let class = llm::classify(request, LABELS)?;
    log::info(&format!(
        "order {order_id}: classified as {} ({:.2})",
        class.label, class.confidence
    ));

    let (recommendation, reason) = match class.label.as_str() {
        "fraud-risk" => ("escalate", "request looks like fraud"),
        _ if class.confidence < 0.5 => ("escalate", "classification is uncertain"),
        "damaged" | "not-delivered" if amount <= 50_000 => ("refund", "eligible: order not received intact"),
        "damaged" | "not-delivered" => ("escalate", "eligible, but the amount needs a person"),
        _ => ("deny", "outside the refund policy"),
    };
    Ok(json!({
        "order_id": order_id,
        "recommendation": recommendation,
        "amount_cents": if recommendation == "refund" { amount } else { 0 },
        "category": class.label,
        "confidence": class.confidence,
        "reason": reason,
    }))
}

charter_sdk::step!(run);
