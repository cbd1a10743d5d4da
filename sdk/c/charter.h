/*
 * Write a Charter step in C: one function from JSON text to JSON text.
 *
 *   #include "charter.h"
 *
 *   static int run(const char *input, size_t len, charter_string *out) {
 *       charter_log(CHARTER_INFO, "hello");
 *       return charter_set(out, "{\"hello\":\"world\"}");   // CHARTER_OK
 *   }
 *   CHARTER_STEP(run)
 *
 * A step returns CHARTER_OK with `out` holding its JSON output, or
 * CHARTER_RETRYABLE / CHARTER_FATAL with `out` holding the message. Strings
 * handed out by this header are malloc'd and owned by the caller
 * (charter_string_free). printf/stderr become log lines tagged with the
 * plugin.
 *
 * These are the canonical-ABI bindings of wit/host@0.1.0, plus
 * charter_notify_send from wit/host@0.2.0 and charter_knowledge_search
 * from wit/host@0.3.0 (each interface is imported at the lowest version
 * that has it, everything else at 0.1.0, as sdk/wit/guest-wit.py
 * builds the world), and the `step` world of wit/plugin@0.1.0, written by hand (no wit-bindgen C generator is
 * packaged on the registries this project builds from). A component imports
 * only the host functions its code calls; the plugin's `host-functions`
 * file lists them for the build's WIT.
 * Build: sdk/build.sh c PLUGIN_DIR OUT.wasm.
 */
#ifndef CHARTER_H
#define CHARTER_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *ptr;
    size_t len;
} charter_string;

enum { CHARTER_OK = 0, CHARTER_RETRYABLE = 1, CHARTER_FATAL = 2 };
typedef enum { CHARTER_TRACE, CHARTER_DEBUG, CHARTER_INFO, CHARTER_WARN, CHARTER_ERROR } charter_level;

typedef struct {
    charter_string label;
    float confidence;
} charter_classification;

#define CHARTER_IMPORT(module, name) __attribute__((import_module(module), import_name(name)))

/* Raw imports (canonical ABI, lowered). Return areas are 4-byte aligned. */
CHARTER_IMPORT("charter:host/log@0.1.0", "write")
extern void __charter_log_write(int32_t level, const char *msg, size_t len);
CHARTER_IMPORT("charter:host/kv@0.1.0", "get")
extern void __charter_kv_get(const char *key, size_t len, void *ret);
CHARTER_IMPORT("charter:host/kv@0.1.0", "set")
extern void __charter_kv_set(const char *key, size_t klen, const char *val, size_t vlen, void *ret);
CHARTER_IMPORT("charter:host/secrets@0.1.0", "get")
extern void __charter_secrets_get(const char *name, size_t len, void *ret);
CHARTER_IMPORT("charter:host/llm@0.1.0", "complete")
extern void __charter_llm_complete(const char *prompt, size_t len, void *ret);
CHARTER_IMPORT("charter:host/llm@0.1.0", "classify")
extern void __charter_llm_classify(const char *text, size_t len, const charter_string *labels, size_t n, void *ret);
CHARTER_IMPORT("charter:host/explain@0.1.0", "rationale")
extern void __charter_explain_rationale(const char *text, size_t len);
/* Since charter:host@0.2.0 (the host refuses notify at 0.1.0). */
CHARTER_IMPORT("charter:host/notify@0.2.0", "send")
extern void __charter_notify_send(const char *channel, size_t clen, const char *subject, size_t slen,
                                  const char *body, size_t blen, void *ret);
/* Since charter:host@0.3.0. */
CHARTER_IMPORT("charter:host/knowledge@0.3.0", "search")
extern void __charter_knowledge_search(const char *corpus, size_t clen, const char *query, size_t qlen, uint32_t k,
                                       void *ret);

/* The host allocates strings it returns through this export. */
__attribute__((export_name("cabi_realloc"))) void *cabi_realloc(void *ptr, size_t old, size_t align, size_t size) {
    (void)old;
    (void)align;
    /* Never a made-up pointer, even for an empty string or list: every
     * pointer the host is handed back is one free() accepts. */
    void *p = realloc(ptr, size ? size : 1);
    if (!p) abort();
    return p;
}

static inline void charter_string_free(charter_string *s) {
    free(s->ptr);
    s->ptr = NULL;
    s->len = 0;
}

/* A NUL-terminated copy of `len` bytes. */
static inline charter_string charter_string_copy(const char *s, size_t len) {
    charter_string out = {malloc(len + 1), len};
    if (!out.ptr) abort();
    memcpy(out.ptr, s, len);
    out.ptr[len] = 0;
    return out;
}

/* Set `out` to a copy of `s`; returns CHARTER_OK. */
static inline int charter_set(charter_string *out, const char *s) {
    *out = charter_string_copy(s, strlen(s));
    return CHARTER_OK;
}

/* The host's strings are not NUL-terminated: make them so. */
static inline charter_string __charter_own(char *ptr, size_t len) {
    charter_string s = charter_string_copy(ptr, len);
    free(ptr);
    return s;
}

static inline void charter_log(charter_level level, const char *msg) {
    __charter_log_write((int32_t)level, msg, strlen(msg));
}

/* kv.get: 0 with *value set (value->ptr NULL if absent), or -1 with *err set. */
static inline int charter_kv_get(const char *key, charter_string *value, charter_string *err) {
    uint32_t ret[4];
    __charter_kv_get(key, strlen(key), ret);
    uint8_t is_err = *(uint8_t *)&ret[0];
    if (is_err) {
        *err = __charter_own((char *)ret[1], ret[2]);
        return -1;
    }
    if (*(uint8_t *)&ret[1]) {
        *value = __charter_own((char *)ret[2], ret[3]);
    } else {
        value->ptr = NULL;
        value->len = 0;
    }
    return 0;
}

static inline int charter_kv_set(const char *key, const char *value, charter_string *err) {
    uint32_t ret[3];
    __charter_kv_set(key, strlen(key), value, strlen(value), ret);
    if (*(uint8_t *)&ret[0]) {
        *err = __charter_own((char *)ret[1], ret[2]);
        return -1;
    }
    return 0;
}

/* result<string, string>: 0 with *ok set, or -1 with *err set. */
static inline int __charter_string_result(uint32_t *ret, charter_string *ok, charter_string *err) {
    charter_string s = __charter_own((char *)ret[1], ret[2]);
    if (*(uint8_t *)&ret[0]) {
        *err = s;
        return -1;
    }
    *ok = s;
    return 0;
}

static inline int charter_secrets_get(const char *name, charter_string *value, charter_string *err) {
    uint32_t ret[3];
    __charter_secrets_get(name, strlen(name), ret);
    return __charter_string_result(ret, value, err);
}

static inline int charter_llm_complete(const char *prompt, charter_string *answer, charter_string *err) {
    uint32_t ret[3];
    __charter_llm_complete(prompt, strlen(prompt), ret);
    return __charter_string_result(ret, answer, err);
}

static inline int charter_llm_classify(const char *text, const char *const *labels, size_t n,
                                       charter_classification *out, charter_string *err) {
    charter_string *list = malloc(n * sizeof *list + 1);
    if (!list) abort();
    for (size_t i = 0; i < n; i++) {
        list[i].ptr = (char *)labels[i];
        list[i].len = strlen(labels[i]);
    }
    uint32_t ret[4];
    __charter_llm_classify(text, strlen(text), list, n, ret);
    free(list);
    if (*(uint8_t *)&ret[0]) {
        *err = __charter_own((char *)ret[1], ret[2]);
        return -1;
    }
    out->label = __charter_own((char *)ret[1], ret[2]);
    memcpy(&out->confidence, &ret[3], sizeof(float));
    return 0;
}

static inline void charter_explain(const char *text) {
    __charter_explain_rationale(text, strlen(text));
}

/*
 * notify.send: send `subject` and `body` to `channel` (declared under
 * [channels] and granted to the plugin by name). 0 with *id set to the
 * delivery's id (its idempotency key), or -1 with *err set (not
 * delivered). A channel the plugin is not granted is refused by the host
 * before anything is sent: the step fails as denied.
 */
static inline int charter_notify_send(const char *channel, const char *subject, const char *body,
                                      charter_string *id, charter_string *err) {
    uint32_t ret[3];
    __charter_notify_send(channel, strlen(channel), subject, strlen(subject), body, strlen(body), ret);
    return __charter_string_result(ret, id, err);
}

/* One passage of a knowledge search (both strings NUL-terminated). */
typedef struct {
    charter_string source; /* "path/in/corpus.md#Heading" */
    charter_string text;
    float score;           /* higher is more relevant: BM25, or cosine (-1..1) with embeddings */
} charter_passage;

typedef struct {
    charter_passage *items;
    size_t len;
} charter_passages;

static inline void charter_passages_free(charter_passages *p) {
    for (size_t i = 0; i < p->len; i++) {
        charter_string_free(&p->items[i].source);
        charter_string_free(&p->items[i].text);
    }
    free(p->items);
    p->items = NULL;
    p->len = 0;
}

/*
 * knowledge.search: the at most `k` passages of `corpus` (declared under
 * [knowledge] and granted to the plugin by name) that best match `query`,
 * best first. 0 with *out set (free it with charter_passages_free), or -1
 * with *err set (the corpus is unavailable, the embeddings endpoint
 * failed). A corpus the plugin is not granted, or an over-long query, is
 * refused by the host: the step fails as denied or over a limit.
 */
static inline int charter_knowledge_search(const char *corpus, const char *query, uint32_t k, charter_passages *out,
                                           charter_string *err) {
    uint32_t ret[3];
    __charter_knowledge_search(corpus, strlen(corpus), query, strlen(query), k, ret);
    if (*(uint8_t *)&ret[0]) {
        *err = __charter_own((char *)ret[1], ret[2]);
        return -1;
    }
    /* list<passage>: records of 20 bytes (source ptr/len, text ptr/len, score). */
    uint8_t *list = (uint8_t *)(uintptr_t)ret[1];
    size_t n = ret[2];
    out->items = calloc(n ? n : 1, sizeof *out->items);
    if (!out->items) abort();
    out->len = n;
    for (size_t i = 0; i < n; i++) {
        uint32_t e[5];
        memcpy(e, list + i * 20, sizeof e);
        out->items[i].source = __charter_own((char *)(uintptr_t)e[0], e[1]);
        out->items[i].text = __charter_own((char *)(uintptr_t)e[2], e[3]);
        memcpy(&out->items[i].score, &e[4], sizeof(float));
    }
    free(list);
    return 0;
}

/* Append `s` to `buf` as a JSON string literal (with quotes). */
static inline void charter_json_quote(charter_string *buf, const char *s) {
    size_t n = strlen(s), cap = buf->len + 6 * n + 3;
    buf->ptr = realloc(buf->ptr, cap + 1);
    if (!buf->ptr) abort();
    char *o = buf->ptr + buf->len;
    *o++ = '"';
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
        } else if (c < 0x20) {
            o += sprintf(o, "\\u%04x", c);
        } else {
            *o++ = (char)c;
        }
    }
    *o++ = '"';
    *o = 0;
    buf->len = (size_t)(o - buf->ptr);
}

/* Append printf-formatted text to `buf`. */
__attribute__((format(printf, 2, 3))) static inline void charter_append(charter_string *buf, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    buf->ptr = realloc(buf->ptr, buf->len + (size_t)n + 1);
    if (!buf->ptr) abort();
    va_start(ap, fmt);
    vsnprintf(buf->ptr + buf->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    buf->len += (size_t)n;
}

/*
 * The value of top-level `key` in the JSON object `json` (a flat reader for
 * small inputs: strings without escapes, numbers, true/false/null). Returns
 * a pointer to the value's first character, or NULL.
 */
static inline const char *charter_json_find(const char *json, const char *key) {
    size_t klen = strlen(key);
    int depth = 0;
    for (const char *p = json; *p; p++) {
        if (*p == '{' || *p == '[') depth++;
        else if (*p == '}' || *p == ']') depth--;
        else if (*p == '"') {
            const char *start = p + 1, *end = strchr(start, '"');
            if (!end) return NULL;
            p = end;
            if (depth == 1 && (size_t)(end - start) == klen && !strncmp(start, key, klen)) {
                const char *q = end + 1;
                while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r') q++;
                if (*q != ':') continue;
                q++;
                while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r') q++;
                return q;
            }
        }
    }
    return NULL;
}

/* The string value of `key` (a malloc'd copy), or NULL if absent or not a string. */
static inline char *charter_json_string(const char *json, const char *key) {
    const char *v = charter_json_find(json, key);
    if (!v || *v != '"') return NULL;
    const char *end = strchr(v + 1, '"');
    if (!end) return NULL;
    return charter_string_copy(v + 1, (size_t)(end - v - 1)).ptr;
}

/* The unsigned integer value of `key`, or `fallback`. */
static inline uint64_t charter_json_u64(const char *json, const char *key, uint64_t fallback) {
    const char *v = charter_json_find(json, key);
    if (!v || *v < '0' || *v > '9') return fallback;
    return strtoull(v, NULL, 10);
}

/* The export: run(input: string) -> result<string, step-error>. */
#define CHARTER_STEP(fn)                                                                     \
    static uint32_t __charter_ret[4];                                                        \
    __attribute__((export_name("run"))) uint32_t *__charter_run(char *input, size_t len) {   \
        charter_string in = charter_string_copy(input, len);                                 \
        free(input);                                                                         \
        charter_string out = {NULL, 0};                                                      \
        int rc = fn(in.ptr, in.len, &out);                                                   \
        charter_string_free(&in);                                                            \
        fflush(stdout);                                                                      \
        fflush(stderr);                                                                      \
        memset(__charter_ret, 0, sizeof __charter_ret);                                      \
        if (rc == CHARTER_OK) {                                                              \
            __charter_ret[1] = (uint32_t)(uintptr_t)out.ptr;                                 \
            __charter_ret[2] = (uint32_t)out.len;                                            \
        } else {                                                                             \
            *(uint8_t *)&__charter_ret[0] = 1;                                               \
            *(uint8_t *)&__charter_ret[1] = rc == CHARTER_RETRYABLE ? 0 : 1;                 \
            __charter_ret[2] = (uint32_t)(uintptr_t)out.ptr;                                 \
            __charter_ret[3] = (uint32_t)out.len;                                            \
        }                                                                                    \
        return __charter_ret;                                                                \
    }                                                                                        \
    __attribute__((export_name("cabi_post_run"))) void __charter_post_run(uint32_t *ret) {   \
        free((void *)(uintptr_t)(*(uint8_t *)&ret[0] ? ret[2] : ret[1]));                    \
    }

#endif
