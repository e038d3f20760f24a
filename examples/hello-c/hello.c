/* hello-c: an edge-v1 function in C. Greets with the GREETING variable when the
 * function declares one, echoes the path, and logs one line per request. */
#include "edgefn.h"

static int32_t serve(const edge_request *req, edge_response *res) {
    char greeting[128];
    int32_t n = edge_env("GREETING", greeting, sizeof greeting);
    if (n > (int32_t)sizeof greeting) n = sizeof greeting;

    char line[160] = "hello-c served ";
    size_t used = strlen(line), take = sizeof line - used;
    if (req->path.len < take) take = req->path.len;
    memcpy(line + used, req->path.ptr, take);
    edge_log(EDGE_LOG_INFO, line, (int32_t)(used + take));

    edge_status(res, 200);
    edge_header(res, "content-type", "text/plain; charset=utf-8");
    edge_end_headers(res);
    edge_write_str(res, "Hello from edgefn!\n");
    if (n > 0) {
        edge_write_str(res, "greeting: ");
        edge_write(res, greeting, (size_t)n);
        edge_write(res, "\n", 1);
    }
    edge_write_str(res, "path: ");
    edge_write(res, req->path.ptr, req->path.len);
    edge_write(res, "\n", 1);
    return 0;
}

EDGE_HANDLER(serve)
