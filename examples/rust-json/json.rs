//! rust-json: a JSON API. GET /rust/json?name=Ada answers
//! {"greeting":"Hello, Ada!","lang":"rust"}; any other method gets 405.
use edgefn::{Request, Response};

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn serve(req: &Request) -> Response {
    if req.method != "GET" {
        return Response::json(r#"{"error":"only GET"}"#).status(405);
    }
    let name = req.query("name").filter(|n| !n.is_empty()).unwrap_or_else(|| "world".into());
    let greeting = format!("Hello, {}!", name);
    Response::json(&format!(r#"{{"greeting":{},"lang":"rust"}}"#, json_string(&greeting)))
}

edgefn::handler!(serve);
