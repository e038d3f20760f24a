//! rust-kv-counter: counts its requests in the function's KV store and answers with
//! the new count.
use edgefn::{HostError, Request, Response};

fn serve(_req: &Request) -> Response {
    let count: u64 = match edgefn::kv_get("count") {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().parse().unwrap_or(0),
        Err(HostError::NotFound) => 0,
        Err(e) => return Response::text(&format!("kv unavailable: {}\n", e)).status(503),
    };
    let next = (count + 1).to_string();
    if let Err(e) = edgefn::kv_put("count", next.as_bytes(), 0) {
        return Response::text(&format!("kv unavailable: {}\n", e)).status(503);
    }
    Response::new(200).header("content-type", "text/plain").body(format!("count: {}\n", next))
}

edgefn::handler!(serve);
