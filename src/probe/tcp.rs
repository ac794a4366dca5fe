//! tcp and unix probes: the socket accepts a connection.

use std::path::Path;

use tokio::net::{TcpStream, UnixStream};

pub async fn check_tcp(addr: &str) -> Result<(), String> {
    TcpStream::connect(addr)
        .await
        .map(drop)
        .map_err(|e| format!("connect to {addr}: {e}"))
}

pub async fn check_unix(path: &Path) -> Result<(), String> {
    UnixStream::connect(path)
        .await
        .map(drop)
        .map_err(|e| format!("connect to {}: {e}", path.display()))
}
