// Refund triage in JavaScript: the same step as plugins/rust/refund-triage.
// Reads the order from the plugin's kv namespace, asks the deployment's LLM
// to classify the customer's request, and returns a recommendation.
import { step, Fatal, Retryable } from "./charter.js";
import kv from "charter:host/kv@0.1.0";
import llm from "charter:host/llm@0.1.0";
import log from "charter:host/log@0.1.0";

const LABELS = ["damaged", "not-delivered", "changed-mind", "fraud-risk"];

export const run = step((input) => {
  const orderId = input.order_id;
  const request = input.request;
  if (typeof orderId !== "string") throw new Fatal("input.order_id (string) is required");
  if (typeof request !== "string") throw new Fatal("input.request (string) is required");

  const raw = kv.get(`order:${orderId}`);
  if (raw === null || raw === undefined) {
    log.write("warn", `order ${orderId} not found; escalating`);
    return {
      order_id: orderId,
      recommendation: "escalate",
      amount_cents: 0,
      confidence: 1.0,
      reason: "order not found",
    };
  }
  let order;
  try {
    order = JSON.parse(raw);
  } catch (e) {
    throw new Retryable(`kv value under "order:${orderId}" is not JSON: ${e.message}`);
  }
  const a = order.amount_cents;
  const amount = Number.isInteger(a) && a >= 0 ? a : 0;
  const c = llm.classify(request, LABELS);
  log.write("info", `order ${orderId}: classified as ${c.label} (${c.confidence.toFixed(2)})`);

  let rec, reason;
  const eligible = c.label === "damaged" || c.label === "not-delivered";
  if (c.label === "fraud-risk") [rec, reason] = ["escalate", "request looks like fraud"];
  else if (c.confidence < 0.5) [rec, reason] = ["escalate", "classification is uncertain"];
  else if (eligible && amount <= 50000) [rec, reason] = ["refund", "eligible: order not received intact"];
  else if (eligible) [rec, reason] = ["escalate", "eligible, but the amount needs a person"];
  else [rec, reason] = ["deny", "outside the refund policy"];
  return {
    order_id: orderId,
    recommendation: rec,
    amount_cents: rec === "refund" ? amount : 0,
    category: c.label,
    confidence: c.confidence,
    reason,
  };
});
