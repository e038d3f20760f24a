/* c-json: a JSON API. GET /c/json?name=Ada answers {"greeting":"Hello, Ada!","lang":"c"};
 * any other method gets 405 with a JSON error. */
#include "edgefn.h"

/* Writes s as a JSON string, escaping quotes, backslashes and control bytes. */
static void write_json_string(edge_response *res, const char *s, size_t n) {
    static const char digits[] = "0123456789abcdef";
    edge_write(res, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            edge_write(res, esc, 2);
        } else if (c < 0x20) {
            char esc[6] = {'\\', 'u', '0', '0', digits[c >> 4], digits[c & 15]};
            edge_write(res, esc, 6);
        } else {
            edge_write(res, &s[i], 1);
        }
    }
    edge_write(res, "\"", 1);
}

static int32_t serve(const edge_request *req, edge_response *res) {
    if (!edge_str_eq(req->method, "GET")) {
        edge_status(res, 405);
        edge_header(res, "content-type", "application/json");
        edge_body_str(res, "{\"error\":\"only GET\"}");
        return 0;
    }
    char name[256];
    int32_t n = edge_query(req, "name", name, sizeof name);
    if (n <= 0) {
        memcpy(name, "world", 5);
        n = 5;
    }
    char greeting[300] = "Hello, ";
    memcpy(greeting + 7, name, (size_t)n);
    greeting[7 + n] = '!';
    edge_status(res, 200);
    edge_header(res, "content-type", "application/json");
    edge_end_headers(res);
    edge_write_str(res, "{\"greeting\":");
    write_json_string(res, greeting, (size_t)n + 8);
    edge_write_str(res, ",\"lang\":\"c\"}");
    return 0;
}

EDGE_HANDLER(serve)
