/* c-fetch: fetches UPSTREAM_URL (a declared variable; the host must be in
 * http_fetch.allow_hosts) and reports its status and body. */
#include "edgefn.h"

#define OUT_CAP 16384

static int32_t fail(edge_response *res, const char *why) {
    edge_status(res, 502);
    edge_header(res, "content-type", "text/plain");
    edge_body_str(res, why);
    return 0;
}

static int32_t serve(const edge_request *req, edge_response *res) {
    (void)req;
    char url[1024];
    int32_t n = edge_env("UPSTREAM_URL", url, sizeof url - 1);
    if (n < 0 || n >= (int32_t)sizeof url - 1) return fail(res, "UPSTREAM_URL is not set\n");

    /* "GET URL\n" + no headers + "\n" */
    char wire[1100];
    size_t w = 0;
    memcpy(wire, "GET ", 4), w = 4;
    memcpy(wire + w, url, (size_t)n), w += (size_t)n;
    memcpy(wire + w, "\n\n", 2), w += 2;

    char *out = malloc(OUT_CAP);
    if (!out) return -1;
    int32_t got = edge_http_fetch(wire, (int32_t)w, out, OUT_CAP);
    if (got < 0 || got > OUT_CAP) {
        free(out);
        return fail(res, got == EDGE_DENIED ? "upstream not allowed\n" : "fetch failed\n");
    }
    /* The answer is in the edge-v1 encoding: status line, headers, blank line, body. */
    edge_str answer = {out, (size_t)got};
    uint32_t status = edge_parse_u32(answer);
    const char *end = out + got, *line = memchr(out, '\n', (size_t)got);
    const char *body = end;
    while (line && line + 1 < end) {
        const char *next = line + 1, *nl = memchr(next, '\n', (size_t)(end - next));
        if (!nl) break;
        if (nl == next || (nl == next + 1 && *next == '\r')) {
            body = nl + 1;
            break;
        }
        line = nl;
    }
    edge_status(res, 200);
    edge_header(res, "content-type", "text/plain");
    edge_end_headers(res);
    edge_write_str(res, "upstream answered ");
    edge_write_i32(res, (int32_t)status);
    edge_write_str(res, ": ");
    edge_write(res, body, (size_t)(end - body));
    free(out);
    return 0;
}

EDGE_HANDLER(serve)
