/*
 * Notify in C: the same step as plugins/rust/fx-notify.
 * Sends input.subject / input.body to input.channel (default "ops") and
 * returns the delivery id as `sent`. charter_notify_send imports
 * charter:host/notify@0.2.0 (notify is new there); log stays at 0.1.0.
 */
#include "charter.h"

static int run(const char *input, size_t len, charter_string *out) {
    (void)len;
    char *channel = charter_json_string(input, "channel");
    char *subject = charter_json_string(input, "subject");
    char *body = charter_json_string(input, "body");
    charter_string id, err, msg = {NULL, 0};
    int rc = charter_notify_send(channel ? channel : "ops", subject ? subject : "", body ? body : "", &id, &err);
    if (rc != 0) {
        /* Not delivered: transient, as a host error is in the other SDKs. */
        *out = err;
        rc = CHARTER_RETRYABLE;
    } else {
        charter_append(&msg, "notified %s: %s", channel ? channel : "ops", id.ptr);
        charter_log(CHARTER_INFO, msg.ptr);
        charter_append(out, "{\"sent\":");
        charter_json_quote(out, id.ptr);
        charter_append(out, "}");
        charter_string_free(&id);
        charter_string_free(&msg);
        rc = CHARTER_OK;
    }
    free(channel);
    free(subject);
    free(body);
    return rc;
}

CHARTER_STEP(run)
