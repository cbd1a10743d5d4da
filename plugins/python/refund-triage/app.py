"""Refund triage in Python: the same step as plugins/rust/refund-triage.

Reads the order from the plugin's kv namespace, asks the deployment's LLM to
classify the customer's request, and returns a recommendation.
"""
import json

import charter
from wit_world.imports import kv, llm, log

LABELS = ["damaged", "not-delivered", "changed-mind", "fraud-risk"]


def run(input):
    order_id = input.get("order_id")
    request = input.get("request")
    if not isinstance(order_id, str):
        raise charter.Fatal("input.order_id (string) is required")
    if not isinstance(request, str):
        raise charter.Fatal("input.request (string) is required")

    raw = kv.get(f"order:{order_id}")
    if raw is None:
        log.write(log.Level.WARN, f"order {order_id} not found; escalating")
        return {
            "order_id": order_id,
            "recommendation": "escalate",
            "amount_cents": 0,
            "confidence": 1.0,
            "reason": "order not found",
        }
    try:
        order = json.loads(raw)
    except ValueError as e:
        raise charter.Retryable(f'kv value under "order:{order_id}" is not JSON: {e}')
    amount = order.get("amount_cents")
    if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
        amount = 0
    c = llm.classify(request, LABELS)
    log.write(log.Level.INFO, f"order {order_id}: classified as {c.label} ({c.confidence:.2f})")

    if c.label == "fraud-risk":
        rec, reason = "escalate", "request looks like fraud"
    elif c.confidence < 0.5:
        rec, reason = "escalate", "classification is uncertain"
    elif c.label in ("damaged", "not-delivered") and amount <= 50_000:
        rec, reason = "refund", "eligible: order not received intact"
    elif c.label in ("damaged", "not-delivered"):
        rec, reason = "escalate", "eligible, but the amount needs a person"
    else:
        rec, reason = "deny", "outside the refund policy"
    return {
        "order_id": order_id,
        "recommendation": rec,
        "amount_cents": amount if rec == "refund" else 0,
        "category": c.label,
        "confidence": c.confidence,
        "reason": reason,
    }


WitWorld = charter.step(run)
