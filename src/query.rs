//! `hivesup health` and `hivesup status`: ask a running hivesup over its health port.
//! This is what `HEALTHCHECK CMD ["hivesup", "health"]` runs, so images need no curl.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::client;
use crate::snapshot::Snapshot;

/// Docker's HEALTHCHECK default timeout is 30 s; ours answers from memory, so 3 s is
/// plenty and keeps a wedged hivesup from looking merely slow.
pub const TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("failed to ask hivesup at {addr}")]
    Request {
        addr: SocketAddr,
        #[source]
        source: client::ClientError,
    },
    #[error("hivesup at {addr} answered {status}: {body}")]
    Status {
        addr: SocketAddr,
        status: u16,
        body: String,
    },
    #[error("failed to read the status from {addr}")]
    Decode {
        addr: SocketAddr,
        #[source]
        source: serde_json::Error,
    },
    #[error("failed to start the async runtime")]
    Runtime(#[source] std::io::Error),
}

/// Where to reach a hivesup bound to `addr`: a wildcard address means loopback.
pub fn connect_addr(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

fn get(addr: SocketAddr, path: &str) -> Result<client::Response, QueryError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(QueryError::Runtime)?;
    rt.block_on(client::get(
        &addr.ip().to_string(),
        addr.port(),
        path,
        TIMEOUT,
    ))
    .map_err(|source| QueryError::Request { addr, source })
}

/// GET /health?verbose: Ok(text) on 200, Err on anything else.
pub fn health(addr: SocketAddr) -> Result<String, QueryError> {
    let r = get(addr, "/health?verbose")?;
    if r.status == 200 {
        Ok(r.body)
    } else {
        Err(QueryError::Status {
            addr,
            status: r.status,
            body: r.body.trim_end().replace('\n', "; "),
        })
    }
}

/// GET /status, raw JSON text.
pub fn status_json(addr: SocketAddr) -> Result<String, QueryError> {
    let r = get(addr, "/status")?;
    if r.status != 200 {
        return Err(QueryError::Status {
            addr,
            status: r.status,
            body: r.body,
        });
    }
    Ok(r.body)
}

/// The status as a table: NAME STATE PID UPTIME RESTARTS READY HEALTHY.
pub fn status_table(addr: SocketAddr) -> Result<String, QueryError> {
    let json = status_json(addr)?;
    let snap: Snapshot =
        serde_json::from_str(&json).map_err(|source| QueryError::Decode { addr, source })?;
    Ok(render_table(&snap))
}

pub fn render_table(snap: &Snapshot) -> String {
    let mut rows = vec![[
        "NAME".to_string(),
        "STATE".into(),
        "PID".into(),
        "UPTIME".into(),
        "RESTARTS".into(),
        "READY".into(),
        "HEALTHY".into(),
    ]];
    let yn = |b: bool| if b { "yes" } else { "no" }.to_string();
    for (name, p) in &snap.programs {
        rows.push([
            name.clone(),
            if p.held {
                "stopped (held)".to_string()
            } else {
                p.state.as_str().to_string()
            },
            p.pid.map_or("-".into(), |p| p.to_string()),
            p.uptime_seconds.map_or("-".into(), |s| {
                humantime::format_duration(Duration::from_secs(s as u64)).to_string()
            }),
            p.restarts.to_string(),
            yn(p.ready),
            yn(p.healthy),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    let status = serde_json::to_value(snap.status)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    out.push_str(&format!("status: {status}\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Overall;
    use crate::snapshot::tests::snapshot;

    #[test]
    fn wildcard_binds_are_reached_on_loopback() {
        assert_eq!(
            connect_addr("0.0.0.0:8080".parse().unwrap()),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(
            connect_addr("[::]:1".parse().unwrap()),
            "[::1]:1".parse().unwrap()
        );
        assert_eq!(
            connect_addr("10.1.2.3:5".parse().unwrap()),
            "10.1.2.3:5".parse().unwrap()
        );
    }

    #[test]
    fn table_has_a_row_per_program() {
        let mut s = snapshot(Overall::Ok);
        s.programs.get_mut("db").unwrap().uptime_seconds = Some(75.0);
        let t = render_table(&s);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("NAME  STATE"), "{t}");
        assert!(
            lines[2].starts_with("db    running   42   1m 15s  2         yes    yes"),
            "{t}"
        );
        assert_eq!(lines[3], "status: ok");
    }
}
