/* c-echo: answers with the request's body and content type, and its method in x-method. */
#include "edgefn.h"

static int32_t serve(const edge_request *req, edge_response *res) {
    edge_str type = edge_request_header_in(req, "content-type");
    edge_status(res, 200);
    if (type.ptr)
        edge_header_n(res, "content-type", type.ptr, type.len);
    else
        edge_header(res, "content-type", "application/octet-stream");
    edge_header_n(res, "x-method", req->method.ptr, req->method.len);
    edge_body(res, req->body.ptr, req->body.len);
    return 0;
}

EDGE_HANDLER(serve)
