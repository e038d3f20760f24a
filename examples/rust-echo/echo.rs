//! rust-echo: answers with the request's body and content type, and its method in x-method.
use edgefn::{Request, Response};

fn serve(req: &Request) -> Response {
    let content_type = req.header("content-type").unwrap_or("application/octet-stream");
    Response::new(200)
        .header("content-type", content_type)
        .header("x-method", req.method)
        .body(req.body)
}

edgefn::handler!(serve);
