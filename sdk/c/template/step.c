/* A Charter step in C. */
#include "charter.h"

static int run(const char *input, size_t len, charter_string *out) {
    (void)len;
    char *name = charter_json_string(input, "name");
    if (!name) {
        charter_set(out, "input.name (string) is required");
        return CHARTER_FATAL;
    }
    charter_string msg = {NULL, 0};
    charter_append(&msg, "greeting %s", name);
    charter_log(CHARTER_INFO, msg.ptr);
    charter_string_free(&msg);
    charter_append(out, "{\"hello\":");
    charter_json_quote(out, name);
    charter_append(out, "}");
    free(name);
    return CHARTER_OK;
}

CHARTER_STEP(run)
