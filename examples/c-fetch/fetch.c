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
    memcpy(wire, "GET ", 4);
    memcpy(wire + 4, url, (size_t)n);
    memcpy(wire + 4 + n, "\n\n", 2);
    size_t w = 4 + (size_t)n + 2;

    char *out = malloc(OUT_CAP);
    if (!out) return -1;
    int32_t got = edge_http_fetch(wire, (int32_t)w, out, OUT_CAP);
    if (got < 0 || got > OUT_CAP) {
        free(out);
        return fail(res, got == EDGE_DENIED ? "upstream not allowed\n" : "fetch failed\n");
    }
    edge_fetched answer = edge_parse_response(out, (size_t)got);
    if (!answer.status) {
        free(out);
        return fail(res, "malformed upstream answer\n");
    }
    edge_status(res, 200);
    edge_header(res, "content-type", "text/plain");
    edge_end_headers(res);
    edge_write_str(res, "upstream answered ");
    edge_write_i32(res, answer.status);
    edge_write_str(res, ": ");
    edge_write(res, answer.body.ptr, answer.body.len);
    free(out);
    return 0;
}

EDGE_HANDLER(serve)
