/*
 * Knowledge search in C: the same step as plugins/rust/fx-knowledge.
 * Searches input.corpus (default "policies") for input.query with input.k
 * (default 3) and returns the passages, or the host's error as `error`.
 * charter_knowledge_search imports charter:host/knowledge@0.3.0
 * (knowledge is new there).
 */
#include "charter.h"

static int run(const char *input, size_t len, charter_string *out) {
    (void)len;
    char *corpus = charter_json_string(input, "corpus");
    char *query = charter_json_string(input, "query");
    uint64_t k = charter_json_u64(input, "k", 3);
    charter_passages found = {NULL, 0};
    charter_string err = {NULL, 0};
    if (charter_knowledge_search(corpus ? corpus : "policies", query ? query : "",
                                 k > UINT32_MAX ? UINT32_MAX : (uint32_t)k, &found, &err) != 0) {
        charter_append(out, "{\"error\":");
        charter_json_quote(out, err.ptr);
        charter_append(out, "}");
        charter_string_free(&err);
    } else {
        charter_append(out, "{\"passages\":[");
        for (size_t i = 0; i < found.len; i++) {
            charter_append(out, "%s{\"source\":", i ? "," : "");
            charter_json_quote(out, found.items[i].source.ptr);
            charter_append(out, ",\"text\":");
            charter_json_quote(out, found.items[i].text.ptr);
            charter_append(out, ",\"score\":%.6g}", (double)found.items[i].score);
        }
        charter_append(out, "]}");
        charter_passages_free(&found);
    }
    free(corpus);
    free(query);
    return CHARTER_OK;
}

CHARTER_STEP(run)
