//! rust-wagi: a WAGI (CGI over WASI) program in Rust; plain std, no SDK needed. The
//! request arrives as CGI variables and stdin, the response goes to stdout.
use std::env;
use std::io::{self, Write};

fn main() {
    let method = env::var("REQUEST_METHOD").unwrap_or_default();
    let query = env::var("QUERY_STRING").unwrap_or_default();
    let mut out = io::stdout().lock();
    let _ = write!(
        out,
        "Content-Type: text/plain; charset=utf-8\n\nHello from WAGI in Rust!\nmethod: {}\nquery: {}\n",
        method, query
    );
    eprintln!("rust-wagi served a request");
}
