//! A minimal HTTP/1.0 GET client, shared by the `http` probe and the `health`/`status`
//! commands, so that images need no curl and hivesup pulls in no HTTP client stack.
//! HTTP/1.0 keeps it honest: the server closes the connection and never sends chunks.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Responses larger than this are cut; probes need the status line, `status` a small JSON.
const MAX_RESPONSE: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("failed to connect to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to talk to {addr}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no answer from {addr} within {}", humantime::format_duration(*.after))]
    Timeout { addr: String, after: Duration },
    #[error("malformed HTTP response from {addr}")]
    Malformed { addr: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// GETs `path` from `host:port` within `limit` (connect, send and read all together).
pub async fn get(
    host: &str,
    port: u16,
    path: &str,
    limit: Duration,
) -> Result<Response, ClientError> {
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    match timeout(limit, exchange(host, port, path, &addr)).await {
        Ok(r) => r,
        Err(_) => Err(ClientError::Timeout { addr, after: limit }),
    }
}

async fn exchange(host: &str, port: u16, path: &str, addr: &str) -> Result<Response, ClientError> {
    let mut stream =
        TcpStream::connect((host, port))
            .await
            .map_err(|source| ClientError::Connect {
                addr: addr.to_string(),
                source,
            })?;
    let io = |source| ClientError::Io {
        addr: addr.to_string(),
        source,
    };
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: hivesup\r\nAccept: */*\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream.read(&mut chunk).await.map_err(io)?;
        if n == 0 || buf.len() + n > MAX_RESPONSE {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    parse(&buf).ok_or_else(|| ClientError::Malformed {
        addr: addr.to_string(),
    })
}

fn parse(raw: &[u8]) -> Option<Response> {
    let text = String::from_utf8_lossy(raw);
    let status_line = text.lines().next()?;
    let mut parts = status_line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some(Response { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_body() {
        let r = parse(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\n\r\nno").unwrap();
        assert_eq!(
            r,
            Response {
                status: 503,
                body: "no".into()
            }
        );
        assert_eq!(parse(b"garbage"), None);
        assert_eq!(parse(b""), None);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn refused_and_timeout_are_errors() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        // Accepts (kernel backlog) but never answers.
        let e = get("127.0.0.1", port, "/", Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::Timeout { .. }), "{e}");
        drop(l);
        let e = get("127.0.0.1", port, "/", Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::Connect { .. }), "{e}");
    }
}
