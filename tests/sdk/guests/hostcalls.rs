//! hostcalls (Rust SDK): one path per `edge` host function; a value is the body, no
//! value is "error CODE".
//!   /log  /metric  /id  /header?name=N  /secret?name=N  /env?name=N  /kv?key=K
//!   /big?n=N (a body of N bytes)
use edgefn::{HostError, Level, Request, Response};

fn answer(got: Result<String, HostError>) -> Response {
    match got {
        Ok(value) => Response::text(&value),
        Err(e) => Response::text(&format!("error {}", e.code())),
    }
}

fn serve(req: &Request) -> Response {
    let name = req.query("name").unwrap_or_default();
    match req.path() {
        "/log" => {
            for (level, text) in [
                (Level::Debug, "debug line"),
                (Level::Info, "info line"),
                (Level::Notice, "notice line"),
                (Level::Warn, "warn line"),
                (Level::Error, "error line"),
            ] {
                edgefn::log(level, text);
            }
            Response::text("logged")
        }
        "/metric" => {
            edgefn::metrics_increment("hits", 1.5, &[("route", "a")]);
            Response::text("counted")
        }
        "/id" => answer(edgefn::request_id()),
        "/header" => answer(edgefn::request_header(&name)),
        "/secret" => answer(edgefn::secret_get(&name)),
        "/env" => answer(edgefn::env_get(&name)),
        "/kv" => answer(
            edgefn::kv_get(&req.query("key").unwrap_or_default())
                .map(|v| String::from_utf8_lossy(&v).into_owned()),
        ),
        "/big" => {
            let n: usize = req.query("n").and_then(|n| n.parse().ok()).unwrap_or(0);
            Response::new(200).body(vec![b'x'; n])
        }
        _ => Response::text("unknown host call\n").status(404),
    }
}

edgefn::handler!(serve);
