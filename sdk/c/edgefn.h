/*
 * edgefn.h: write an edgefn function in C.
 *
 * Declares the `edge` host functions (docs/edge.md, Host functions) and gives a handler
 * the `edge-v1` ABI (section 1) in one line:
 *
 *     #include "edgefn.h"
 *
 *     static int32_t serve(const edge_request *req, edge_response *res) {
 *         edge_status(res, 200);
 *         edge_header(res, "content-type", "text/plain");
 *         edge_body_str(res, "hello\n");
 *         return 0;
 *     }
 *     EDGE_HANDLER(serve)
 *
 * Build as a WASI reactor:
 *
 *     clang --target=wasm32-wasi -O2 -mexec-model=reactor -Wl,--strip-all \
 *           -I sdk/c -o fn.wasm fn.c
 *
 * Header only, no printf: a module that uses nothing but this file and
 * malloc imports nothing from WASI and stays a few kilobytes.
 */
#ifndef EDGEFN_H
#define EDGEFN_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Host functions (import module "edge") -------------------------------
 *
 * Every lookup returns the full length of the value and writes
 * min(length, out_cap) bytes at out_ptr; a return above out_cap means the value
 * was truncated and a larger buffer will get all of it. Where there is no
 * value the return is one of the negative codes below.
 */

#define EDGE_NOT_FOUND (-1) /* no such key, variable or header */
#define EDGE_DENIED (-2)    /* the function's policy does not allow it */
#define EDGE_QUOTA (-3)     /* a quota is exhausted */
#define EDGE_FAILED (-4)    /* an error or a timeout on the host side */

/* log levels: 0 debug .. 4 error */
#define EDGE_LOG_DEBUG 0
#define EDGE_LOG_INFO 1
#define EDGE_LOG_NOTICE 2
#define EDGE_LOG_WARN 3
#define EDGE_LOG_ERROR 4

#define EDGE_IMPORT(name) __attribute__((import_module("edge"), import_name(#name)))

EDGE_IMPORT(log)
void edge_log(int32_t level, const char *msg_ptr, int32_t msg_len);

/* tags: "k=v\n" lines, may be empty */
EDGE_IMPORT(metrics_increment)
void edge_metrics_increment(const char *name_ptr, int32_t name_len, double value,
                            const char *tags_ptr, int32_t tags_len);

EDGE_IMPORT(kv_get)
int32_t edge_kv_get(const char *key_ptr, int32_t key_len, char *out_ptr, int32_t out_cap);

/* returns 0 on success; ttl_seconds 0 keeps the value until it is replaced */
EDGE_IMPORT(kv_put)
int32_t edge_kv_put(const char *key_ptr, int32_t key_len, const char *val_ptr,
                    int32_t val_len, int32_t ttl_seconds);

/* request: "METHOD URL\n" + "name: value\n" lines + "\n" + body;
 * writes the response in the edge-v1 response encoding */
EDGE_IMPORT(http_fetch)
int32_t edge_http_fetch(const char *req_ptr, int32_t req_len, char *out_ptr, int32_t out_cap);

EDGE_IMPORT(env_get)
int32_t edge_env_get(const char *key_ptr, int32_t key_len, char *out_ptr, int32_t out_cap);

EDGE_IMPORT(request_id)
int32_t edge_request_id(char *out_ptr, int32_t out_cap);

EDGE_IMPORT(request_header)
int32_t edge_request_header(const char *name_ptr, int32_t name_len, char *out_ptr,
                            int32_t out_cap);

/* A secret of the function's project that the function lists in `secrets`;
 * EDGE_DENIED for any other name, EDGE_NOT_FOUND when the project has no such
 * secret, EDGE_FAILED when the node could not resolve it. Keep the value out of
 * logs and responses. */
EDGE_IMPORT(secret_get)
int32_t edge_secret_get(const char *name_ptr, int32_t name_len, char *out_ptr,
                        int32_t out_cap);

/* Convenience wrappers taking NUL-terminated names. */
static inline void edge_log_str(int32_t level, const char *msg) {
    edge_log(level, msg, (int32_t)strlen(msg));
}

static inline int32_t edge_env(const char *name, char *out, int32_t cap) {
    return edge_env_get(name, (int32_t)strlen(name), out, cap);
}

static inline int32_t edge_secret(const char *name, char *out, int32_t cap) {
    return edge_secret_get(name, (int32_t)strlen(name), out, cap);
}

static inline int32_t edge_header_value(const char *name, char *out, int32_t cap) {
    return edge_request_header(name, (int32_t)strlen(name), out, cap);
}

/* ---- Byte strings --------------------------------------------------------- */

typedef struct {
    const char *ptr;
    size_t len;
} edge_str;

static inline edge_str edge_cstr(const char *s) {
    edge_str r = {s, strlen(s)};
    return r;
}

static inline int edge_str_eq(edge_str s, const char *lit) {
    size_t n = strlen(lit);
    return s.len == n && memcmp(s.ptr, lit, n) == 0;
}

static inline int edge_starts_with(edge_str s, const char *prefix) {
    size_t n = strlen(prefix);
    return s.len >= n && memcmp(s.ptr, prefix, n) == 0;
}

/* Leading decimal digits of s as an unsigned number (0 when none). */
static inline uint32_t edge_parse_u32(edge_str s) {
    uint32_t v = 0;
    for (size_t i = 0; i < s.len && s.ptr[i] >= '0' && s.ptr[i] <= '9'; i++)
        v = v * 10 + (uint32_t)(s.ptr[i] - '0');
    return v;
}

/* Writes v in decimal at out (room for 11 bytes); returns the length. */
static inline size_t edge_fmt_i32(char *out, int32_t v) {
    char tmp[11];
    size_t n = 0, len = 0;
    uint32_t u = v < 0 ? 0u - (uint32_t)v : (uint32_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) out[len++] = '-';
    while (n) out[len++] = tmp[--n];
    return len;
}

/* ---- The request ---------------------------------------------------------- */

typedef struct {
    edge_str method;  /* "GET" */
    edge_str path;    /* request target with its query: "/a/b?x=1" */
    edge_str headers; /* "name: value\n" lines, names lower-case */
    edge_str body;
} edge_request;

/* The path without its query. */
static inline edge_str edge_path_only(const edge_request *req) {
    edge_str p = req->path;
    const char *q = memchr(p.ptr, '?', p.len);
    if (q) p.len = (size_t)(q - p.ptr);
    return p;
}

static inline int edge_hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/*
 * Finds query parameter `name` and percent-decodes its value into out (at most
 * cap bytes, '+' as space). Returns the decoded length, or -1 when absent.
 */
static inline int32_t edge_query(const edge_request *req, const char *name, char *out,
                                 size_t cap) {
    const char *q = memchr(req->path.ptr, '?', req->path.len);
    if (!q) return -1;
    const char *end = req->path.ptr + req->path.len;
    size_t nlen = strlen(name);
    for (const char *p = q + 1; p < end;) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        const char *kend = eq ? eq : stop;
        if ((size_t)(kend - p) == nlen && memcmp(p, name, nlen) == 0) {
            size_t n = 0;
            for (const char *v = eq ? eq + 1 : stop; v < stop && n < cap; v++) {
                int hi, lo;
                if (*v == '%' && v + 2 < stop && (hi = edge_hex(v[1])) >= 0 &&
                    (lo = edge_hex(v[2])) >= 0) {
                    out[n++] = (char)(hi * 16 + lo);
                    v += 2;
                } else {
                    out[n++] = *v == '+' ? ' ' : *v;
                }
            }
            return (int32_t)n;
        }
        p = stop + 1;
    }
    return -1;
}

/* The value of the first line `name: value` of a header block (names lower-case),
 * or {0, 0}. */
static inline edge_str edge_header_in(edge_str headers, const char *name) {
    edge_str none = {0, 0};
    size_t nlen = strlen(name);
    const char *p = headers.ptr, *end = p + headers.len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *stop = nl ? nl : end;
        if ((size_t)(stop - p) > nlen && memcmp(p, name, nlen) == 0 && p[nlen] == ':') {
            const char *v = p + nlen + 1;
            while (v < stop && *v == ' ') v++;
            const char *ve = stop;
            if (ve > v && ve[-1] == '\r') ve--;
            edge_str r = {v, (size_t)(ve - v)};
            return r;
        }
        p = stop + 1;
    }
    return none;
}

/* The value of the first request header `name` (lower-case), or {0, 0}. */
static inline edge_str edge_request_header_in(const edge_request *req, const char *name) {
    return edge_header_in(req->headers, name);
}

/* ---- Outbound responses ----------------------------------------------------
 *
 * edge_http_fetch writes the answer in the section-1 encoding; this splits it
 * into views of the same buffer.
 */

typedef struct {
    int status;       /* 0 when the encoding is malformed */
    edge_str headers; /* "name: value\n" lines, for edge_header_in */
    edge_str body;
} edge_fetched;

static inline edge_fetched edge_parse_response(const char *buf, size_t len) {
    edge_fetched r = {0, {buf, 0}, {buf, 0}};
    const char *end = buf + len, *nl = memchr(buf, '\n', len);
    if (!nl || nl - buf < 3) return r;
    for (int i = 0; i < 3; i++) {
        if (buf[i] < '0' || buf[i] > '9') return r;
        r.status = r.status * 10 + (buf[i] - '0');
    }
    const char *p = nl + 1;
    r.headers.ptr = p;
    while (p < end) {
        const char *line_end = memchr(p, '\n', (size_t)(end - p));
        if (!line_end) break;
        if (line_end == p || (line_end == p + 1 && *p == '\r')) {
            r.headers.len = (size_t)(p - r.headers.ptr);
            r.body.ptr = line_end + 1;
            r.body.len = (size_t)(end - (line_end + 1));
            return r;
        }
        p = line_end + 1;
    }
    r.status = 0; /* no blank line ends the headers */
    return r;
}

/* ---- The response writer ---------------------------------------------------
 *
 * Writes the section-1 encoding into the host's buffer. `len` counts every
 * byte asked for, written or not: once it passes `cap` the rest is dropped,
 * and returning `len` from `handle` tells the host the response did not fit.
 */

typedef struct {
    char *buf;
    size_t cap;
    size_t len;
} edge_response;

static inline void edge_write(edge_response *res, const void *data, size_t n) {
    if (res->len < res->cap) {
        size_t room = res->cap - res->len;
        memcpy(res->buf + res->len, data, n < room ? n : room);
    }
    res->len += n;
}

static inline void edge_write_str(edge_response *res, const char *s) {
    edge_write(res, s, strlen(s));
}

static inline void edge_write_i32(edge_response *res, int32_t v) {
    char tmp[11];
    edge_write(res, tmp, edge_fmt_i32(tmp, v));
}

/* First call: the three-digit status line. */
static inline void edge_status(edge_response *res, int status) {
    char line[4] = {(char)('0' + status / 100 % 10), (char)('0' + status / 10 % 10),
                    (char)('0' + status % 10), '\n'};
    edge_write(res, line, 4);
}

static inline void edge_header_n(edge_response *res, const char *name, const char *value,
                                 size_t value_len) {
    edge_write_str(res, name);
    edge_write(res, ": ", 2);
    edge_write(res, value, value_len);
    edge_write(res, "\n", 1);
}

static inline void edge_header(edge_response *res, const char *name, const char *value) {
    edge_header_n(res, name, value, strlen(value));
}

static inline void edge_header_i32(edge_response *res, const char *name, int32_t value) {
    char tmp[11];
    edge_header_n(res, name, tmp, edge_fmt_i32(tmp, value));
}

/* Ends the header block; everything written after it is the body. */
static inline void edge_end_headers(edge_response *res) { edge_write(res, "\n", 1); }

/* Ends the headers and writes the whole body. */
static inline void edge_body(edge_response *res, const void *data, size_t n) {
    edge_end_headers(res);
    edge_write(res, data, n);
}

static inline void edge_body_str(edge_response *res, const char *s) {
    edge_body(res, s, strlen(s));
}

/* ---- The edge-v1 exports -------------------------------------------------- */

#define EDGE_EXPORT(name) __attribute__((export_name(#name)))

/* alloc/dealloc over malloc/free; the host takes its buffers from alloc. */
#define EDGE_ALLOC_EXPORTS                                                               \
    EDGE_EXPORT(alloc) void *edge_export_alloc(int32_t size) {                           \
        return malloc(size > 0 ? (size_t)size : 1);                                      \
    }                                                                                    \
    EDGE_EXPORT(dealloc) void edge_export_dealloc(void *ptr, int32_t size) {             \
        (void)size;                                                                      \
        free(ptr);                                                                       \
    }

/*
 * Exports alloc, dealloc and handle around
 *     int32_t fn(const edge_request *req, edge_response *res)
 * fn writes the response with the edge_* writers and returns 0, or a negative
 * number for a guest error (the client gets 500).
 */
#define EDGE_HANDLER(fn)                                                                 \
    EDGE_ALLOC_EXPORTS                                                                   \
    EDGE_EXPORT(handle) int32_t edge_export_handle(                                      \
        const char *method, int32_t method_len, const char *path, int32_t path_len,      \
        const char *headers, int32_t headers_len, const char *body, int32_t body_len,    \
        char *response, int32_t response_cap) {                                          \
        edge_request req = {{method, (size_t)method_len},                                \
                            {path, (size_t)path_len},                                    \
                            {headers, (size_t)headers_len},                              \
                            {body, (size_t)body_len}};                                   \
        edge_response res = {response, (size_t)response_cap, 0};                         \
        int32_t rc = fn(&req, &res);                                                     \
        if (rc < 0) return rc;                                                           \
        return res.len > INT32_MAX ? INT32_MAX : (int32_t)res.len;                       \
    }

#ifdef __cplusplus
}
#endif

#endif /* EDGEFN_H */
