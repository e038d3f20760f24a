/* c-kv-counter: counts its requests in the function's KV store (shared by every
 * instance and, with Redis, every node) and answers with the new count. */
#include "edgefn.h"

static int32_t serve(const edge_request *req, edge_response *res) {
    (void)req;
    char digits[16];
    int32_t n = edge_kv_get("count", 5, digits, sizeof digits);
    uint32_t count = 0;
    if (n >= 0) {
        edge_str s = {digits, (size_t)(n < (int32_t)sizeof digits ? n : (int32_t)sizeof digits)};
        count = edge_parse_u32(s);
    } else if (n != EDGE_NOT_FOUND) {
        edge_status(res, 503);
        edge_body_str(res, "kv unavailable\n");
        return 0;
    }
    count++;
    size_t len = edge_fmt_i32(digits, (int32_t)count);
    if (edge_kv_put("count", 5, digits, (int32_t)len, 0) != 0) {
        edge_status(res, 503);
        edge_body_str(res, "kv unavailable\n");
        return 0;
    }
    edge_status(res, 200);
    edge_header(res, "content-type", "text/plain");
    edge_end_headers(res);
    edge_write_str(res, "count: ");
    edge_write(res, digits, len);
    edge_write(res, "\n", 1);
    return 0;
}

EDGE_HANDLER(serve)
