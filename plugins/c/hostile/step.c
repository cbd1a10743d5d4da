/*
 * Hostile fixture in C, one mode per input: {"mode": ...}
 * loop: spin forever; bomb: allocate until memory runs out; flood: call
 * log.write without end; fatal / retryable: fail the step so; print: write
 * to stdout and stderr, then succeed.
 */
#include "charter.h"

static int run(const char *input, size_t len, charter_string *out) {
    (void)len;
    char *mode = charter_json_string(input, "mode");
    if (!mode) mode = charter_string_copy("", 0).ptr;
    if (!strcmp(mode, "loop")) {
        volatile uint64_t n = 0;
        for (;;) n++;
    }
    if (!strcmp(mode, "bomb")) {
        static void *volatile hoard = NULL; /* keeps every chunk reachable */
        for (;;) {
            void **chunk = malloc(1 << 20);
            if (!chunk) abort(); /* the host's memory limit refused to grow */
            memset(chunk, 0xa5, 1 << 20);
            *chunk = hoard;
            hoard = chunk;
        }
    }
    if (!strcmp(mode, "flood")) {
        char line[32];
        for (uint64_t i = 0;; i++) {
            snprintf(line, sizeof line, "flood %llu", (unsigned long long)i);
            charter_log(CHARTER_TRACE, line);
        }
    }
    int rc = CHARTER_FATAL;
    if (!strcmp(mode, "fatal")) {
        charter_set(out, "fatal on purpose");
    } else if (!strcmp(mode, "retryable")) {
        charter_set(out, "retryable on purpose");
        rc = CHARTER_RETRYABLE;
    } else if (!strcmp(mode, "print")) {
        printf("hello from stdout\n");
        fprintf(stderr, "hello from stderr\n");
        rc = charter_set(out, "{\"printed\":true}");
    } else {
        charter_append(out, "unknown mode \"%s\"", mode);
    }
    free(mode);
    return rc;
}

CHARTER_STEP(run)
