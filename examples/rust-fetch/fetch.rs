//! rust-fetch: fetches UPSTREAM_URL (a declared variable; the host must be in
//! http_fetch.allow_hosts) and reports its status and body.
use edgefn::{FetchRequest, Request, Response};

fn serve(_req: &Request) -> Response {
    let url = match edgefn::env_get("UPSTREAM_URL") {
        Ok(url) => url,
        Err(_) => return Response::text("UPSTREAM_URL is not set\n").status(502),
    };
    match edgefn::http_fetch(&FetchRequest::get(&url)) {
        Ok(upstream) => Response::new(200).header("content-type", "text/plain").body(format!(
            "upstream answered {}: {}",
            upstream.status,
            upstream.body_text()
        )),
        Err(e) => Response::text(&format!("fetch failed: {}\n", e)).status(502),
    }
}

edgefn::handler!(serve);
