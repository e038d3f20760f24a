//! An edgefn function in Rust: GET /?name=Ada answers "Hello, Ada!".
//! Build with ./build.sh, check with `edgefn test .`; sdk/edgefn.rs is the whole SDK.
use edgefn::{Request, Response};

fn serve(req: &Request) -> Response {
    let name = req.query("name").filter(|n| !n.is_empty()).unwrap_or_else(|| "world".into());
    Response::text(&format!("Hello, {}!\n", name))
}

edgefn::handler!(serve);
