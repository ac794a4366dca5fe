//! The Docker CLI and a raw HTTP client for the tests that drive the real images
//! (images.rs, data.rs, least_privilege.rs): one copy of the plumbing they share.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

/// `docker ARGS...` to completion: (success, stdout, stderr), both trimmed.
pub fn docker(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run the docker CLI");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    )
}

/// `docker ARGS...`, which must succeed; its stdout.
pub fn docker_ok(args: &[&str]) -> String {
    let (ok, out, err) = docker(args);
    assert!(ok, "docker {} failed:\n{out}\n{err}", args.join(" "));
    out
}

/// One HTTP/1.1 request to 127.0.0.1:PORT with an optional JSON body: (status, body).
/// Status 0 when the connection or the exchange failed.
pub fn http(port: u16, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
    let Ok(mut s) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(3))
    else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(req.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut resp = Vec::new();
    if s.read_to_end(&mut resp).is_err() {
        return (0, String::new());
    }
    let resp = String::from_utf8_lossy(&resp);
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_owned())
}

/// The JSON object in a (possibly chunked) body: between the first '{' and the last '}'.
pub fn json_of(body: &str) -> Value {
    match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) if a < b => serde_json::from_str(&body[a..=b]).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

/// [`http`] with the body read as JSON (`Null` when it is none).
pub fn api(port: u16, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let (status, body) = http(port, method, path, body);
    (status, json_of(&body))
}

/// The host port Docker published for CONTAINER's `container_port`/tcp (`-p 127.0.0.1::PORT`).
pub fn published_port(container: &str, container_port: u16) -> u16 {
    let out = docker_ok(&["port", container, &format!("{container_port}/tcp")]);
    out.lines()
        .next()
        .and_then(|l| l.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {out:?}"))
}
