/* An edgefn function in C: GET /?name=Ada answers "Hello, Ada!".
 * Build with ./build.sh, check with `edgefn test .`; edgefn.h is the whole SDK. */
#include "edgefn.h"

static int32_t serve(const edge_request *req, edge_response *res) {
    char name[128];
    int32_t n = edge_query(req, "name", name, sizeof name);
    edge_status(res, 200);
    edge_header(res, "content-type", "text/plain; charset=utf-8");
    edge_end_headers(res);
    edge_write_str(res, "Hello, ");
    if (n > 0)
        edge_write(res, name, (size_t)n);
    else
        edge_write_str(res, "world");
    edge_write_str(res, "!\n");
    return 0;
}

EDGE_HANDLER(serve)
