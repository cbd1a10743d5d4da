/*
 * Refund triage in C: the same step as plugins/rust/refund-triage.
 * Reads the order from the plugin's kv namespace, asks the deployment's LLM
 * to classify the customer's request, and returns a recommendation.
 */
#include "charter.h"

static const char *const LABELS[] = {"damaged", "not-delivered", "changed-mind", "fraud-risk"};

static int fail(charter_string *out, int kind, const char *msg) {
    charter_set(out, msg);
    return kind;
}

static int run(const char *input, size_t len, charter_string *out) {
    (void)len;
    char *order_id = charter_json_string(input, "order_id");
    if (!order_id) return fail(out, CHARTER_FATAL, "input.order_id (string) is required");
    char *request = charter_json_string(input, "request");
    if (!request) {
        free(order_id);
        return fail(out, CHARTER_FATAL, "input.request (string) is required");
    }

    charter_string key = {NULL, 0}, msg = {NULL, 0}, order, err;
    charter_append(&key, "order:%s", order_id);
    int rc = charter_kv_get(key.ptr, &order, &err);
    charter_string_free(&key);
    if (rc != 0) {
        *out = err;
        rc = CHARTER_RETRYABLE;
        goto done;
    }
    if (!order.ptr) {
        charter_append(&msg, "order %s not found; escalating", order_id);
        charter_log(CHARTER_WARN, msg.ptr);
        charter_append(out, "{\"order_id\":");
        charter_json_quote(out, order_id);
        charter_append(out, ",\"recommendation\":\"escalate\",\"amount_cents\":0,"
                            "\"confidence\":1.0,\"reason\":\"order not found\"}");
        rc = CHARTER_OK;
        goto done;
    }
    uint64_t amount = charter_json_u64(order.ptr, "amount_cents", 0);
    charter_string_free(&order);

    charter_classification c;
    if (charter_llm_classify(request, LABELS, 4, &c, &err) != 0) {
        *out = err;
        rc = CHARTER_RETRYABLE;
        goto done;
    }
    charter_append(&msg, "order %s: classified as %s (%.2f)", order_id, c.label.ptr, (double)c.confidence);
    charter_log(CHARTER_INFO, msg.ptr);

    const char *rec, *reason;
    bool eligible = !strcmp(c.label.ptr, "damaged") || !strcmp(c.label.ptr, "not-delivered");
    if (!strcmp(c.label.ptr, "fraud-risk")) rec = "escalate", reason = "request looks like fraud";
    else if (c.confidence < 0.5f) rec = "escalate", reason = "classification is uncertain";
    else if (eligible && amount <= 50000) rec = "refund", reason = "eligible: order not received intact";
    else if (eligible) rec = "escalate", reason = "eligible, but the amount needs a person";
    else rec = "deny", reason = "outside the refund policy";

    charter_append(out, "{\"order_id\":");
    charter_json_quote(out, order_id);
    charter_append(out, ",\"recommendation\":\"%s\",\"amount_cents\":%llu,\"category\":", rec,
                   (unsigned long long)(!strcmp(rec, "refund") ? amount : 0));
    charter_json_quote(out, c.label.ptr);
    charter_append(out, ",\"confidence\":%.17g,\"reason\":\"%s\"}", (double)c.confidence, reason);
    charter_string_free(&c.label);
    rc = CHARTER_OK;
done:
    charter_string_free(&msg);
    free(order_id);
    free(request);
    return rc;
}

CHARTER_STEP(run)
