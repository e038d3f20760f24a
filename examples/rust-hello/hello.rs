//! rust-hello: an edge-v1 function in Rust.
use edgefn::{Level, Request, Response};

fn serve(req: &Request) -> Response {
    edgefn::log(Level::Info, &format!("rust-hello served {}", req.path()));
    Response::text("Hello from edgefn in Rust!\n")
}

edgefn::handler!(serve);
