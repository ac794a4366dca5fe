//! The health server: /health, /readyz, /livez, /status, /metrics. Read-only by design:
//! handlers clone the latest `Arc<Snapshot>` and serialize it; they never touch the
//! supervisor's state and never wait on a child.
//!
//! [`serve`] owns the listening socket and every connection, with limits (README, "Health
//! port limits"): the port is often reachable from a whole cluster, and it shares hivesup's
//! single thread with the supervisor loop, so no client may hold resources without bound.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::snapshot::Snapshot;

type Rx = watch::Receiver<Arc<Snapshot>>;

/// At most this many connections are open at once (fewer when RLIMIT_NOFILE is low, see
/// [`Limits::effective_max_connections`]).
pub const MAX_CONNECTIONS: usize = 512;
/// File descriptors kept back from the connection budget for programs' pipes, probes and
/// hivesup's own sockets.
pub const RESERVED_FDS: u64 = 128;
/// A request head must be complete this long after hivesup starts waiting for it: after
/// the accept, or after the previous response on a keep-alive connection. So this is also
/// the idle keep-alive timeout, and the bound on a slowloris client.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection on which no byte moved either way for this long is closed (a client that
/// stops reading its responses, or stalls in a request body).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Request line plus headers, in bytes; larger heads get 431 and the connection closes.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// Headers per request; more get 431.
pub const MAX_HEADERS: usize = 64;
/// A connection's read buffer never grows past this (hyper's minimum is 8 KiB).
pub const MAX_BUF_BYTES: usize = 16 * 1024;
/// Completed handshakes the kernel queues for accept(2) (capped by net.core.somaxconn).
/// std binds with 128: under a connection flood the queue overflows, the kernel drops
/// handshakes, and a well-behaved client waits a whole SYN retransmit (1 s, then 3 s ...).
pub const LISTEN_BACKLOG: i32 = 1024;

/// Connection limits of the health server; [`Limits::default`] is what hivesup uses.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: MAX_CONNECTIONS,
            header_read_timeout: HEADER_READ_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            max_header_bytes: MAX_HEADER_BYTES,
            max_headers: MAX_HEADERS,
        }
    }
}

impl Limits {
    /// `max_connections`, lowered so that open connections plus [`RESERVED_FDS`] fit in the
    /// soft RLIMIT_NOFILE: past it accept(2) fails with EMFILE, and so would the pipes of a
    /// program being restarted. hivesup does not raise the limit, because programs inherit it.
    pub fn effective_max_connections(&self) -> usize {
        let soft = nofile_soft_limit();
        let budget = usize::try_from(soft.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX);
        self.max_connections.min(budget).max(1)
    }
}

fn nofile_soft_limit() -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct that we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return 1024;
    }
    rl.rlim_cur
}

#[derive(Deserialize)]
struct Params {
    verbose: Option<String>,
}

pub fn router(rx: Rx) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/readyz", get(readyz))
        .route("/livez", get(livez))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(rx)
}

async fn health(State(rx): State<Rx>, Query(q): Query<Params>) -> Response {
    verdict(&rx, q, "health")
}

async fn readyz(State(rx): State<Rx>, Query(q): Query<Params>) -> Response {
    verdict(&rx, q, "readyz")
}

fn verdict(rx: &Rx, q: Params, what: &str) -> Response {
    let snap = rx.borrow().clone();
    let code = if snap.healthy() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    if q.verbose.is_some() {
        return (code, snap.verbose(what)).into_response();
    }
    (code, axum::Json(snap.at(SystemTime::now()))).into_response()
}

async fn livez(State(rx): State<Rx>, Query(q): Query<Params>) -> Response {
    // The sender lives inside the supervisor loop: once the loop is gone, so is liveness.
    let alive = rx.has_changed().is_ok();
    let code = if alive {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let text = match (alive, q.verbose.is_some()) {
        (true, true) => "[+]supervisor ok\nlivez check passed\n",
        (false, true) => "[-]supervisor failed: loop ended\nlivez check failed\n",
        (true, false) => "ok\n",
        (false, false) => "supervisor loop ended\n",
    };
    (code, text).into_response()
}

async fn status(State(rx): State<Rx>) -> Response {
    let snap = rx.borrow().clone();
    axum::Json(snap.at(SystemTime::now())).into_response()
}

async fn metrics(State(rx): State<Rx>) -> Response {
    let snap = rx.borrow().clone();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        snap.metrics(),
    )
        .into_response()
}

/// Serves `router` on `listener` until the task is dropped, within `limits`:
/// - at most [`Limits::effective_max_connections`] connections. A new connection beyond it is
///   still accepted, and the *oldest* open connection is closed instead: a flood of idle
///   connections cannot lock out a client that sends its request right away (the kubelet,
///   `hivesup health`), it only has to be answered before that many newer connections arrive.
///   Refusing the newcomer instead would let whoever got there first keep the port.
/// - a request head must arrive within `header_read_timeout` and fit in `max_header_bytes`
///   and `max_headers` (else 431); no byte in either direction for `idle_timeout` closes.
/// - request bodies are never read: the handlers do not ask for them, and hyper closes a
///   connection whose body was left unread instead of draining it.
///
/// Only accept(2) errors other than a client's aborted handshake are logged, once per
/// streak: per-connection errors are the client's business and would let any client flood
/// the log.
pub async fn serve(listener: TcpListener, router: Router, limits: Limits) {
    // listen(2) on a listening socket only updates its backlog (Linux inet_listen).
    // SAFETY: the fd is the listener's, open for this whole call.
    if unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) } != 0 {
        let e = io::Error::last_os_error();
        tracing::debug!(error = %e, "failed to raise the health port's listen backlog");
    }
    let max = limits.effective_max_connections();
    tracing::debug!(
        max_connections = max,
        "health server connection limit (RLIMIT_NOFILE allowing)"
    );
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // A client that shuts down its write side after the request (`nc -N`, many probe
        // scripts) still gets its answer; the timeouts bound such connections as any other.
        .half_close(true)
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_headers(limits.max_headers)
        .max_buf_size(MAX_BUF_BYTES.max(limits.max_header_bytes));
    let builder = Arc::new(builder);
    let slots = Arc::new(Mutex::new(Slots::default()));
    let mut accept_failing = false;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                accept_failing = false;
                stream
            }
            Err(e) if is_client_error(&e) => continue,
            Err(e) => {
                // EMFILE/ENFILE/ENOBUFS: the error stays until something closes, so wait
                // instead of spinning on it.
                if !accept_failing {
                    tracing::warn!(error = %e, "failed to accept a health connection; retrying every 100ms");
                    accept_failing = true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = Arc::new(ConnState::new());
        let mut evicted = false;
        let id = {
            let mut s = slots.lock().unwrap_or_else(|p| p.into_inner());
            while s.open.len() >= max {
                match s.open.pop_first() {
                    Some((_, oldest)) => {
                        oldest.evict.notify_one();
                        evicted = true;
                    }
                    None => break,
                }
            }
            s.next_id += 1;
            let id = s.next_id;
            s.open.insert(id, conn.clone());
            id
        };
        if evicted {
            // Let the evicted connection's task close its socket before the next accept,
            // so a flood never holds more descriptors than the limit (plus this one).
            tokio::task::yield_now().await;
        }
        let service = TowerToHyperService::new(router.clone());
        let builder = builder.clone();
        let slots = slots.clone();
        let idle = limits.idle_timeout;
        tokio::spawn(async move {
            let io = TokioIo::new(Tracked {
                inner: stream,
                state: conn.clone(),
            });
            let served = builder.serve_connection(io, service);
            tokio::pin!(served);
            let mut deadline = conn.last_io() + idle;
            loop {
                tokio::select! {
                    r = served.as_mut() => {
                        if let Err(e) = r {
                            tracing::trace!(error = %e, "health connection ended");
                        }
                        break;
                    }
                    () = conn.evict.notified() => break,
                    () = tokio::time::sleep_until(deadline) => {
                        deadline = conn.last_io() + idle;
                        if deadline <= Instant::now() {
                            break;
                        }
                    }
                }
            }
            // Dropping `served` closes the socket.
            slots
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .open
                .remove(&id);
        });
    }
}

/// accept(2) errors that concern one client only (it reset or aborted before we took it).
fn is_client_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

/// Open connections, oldest first (ids only grow).
#[derive(Default)]
struct Slots {
    next_id: u64,
    open: BTreeMap<u64, Arc<ConnState>>,
}

struct ConnState {
    /// Told when a newer connection takes this one's slot.
    evict: Notify,
    /// Milliseconds after `since` of the last byte read or written.
    last_io_ms: AtomicU64,
    since: Instant,
}

impl ConnState {
    fn new() -> Self {
        ConnState {
            evict: Notify::new(),
            last_io_ms: AtomicU64::new(0),
            since: Instant::now(),
        }
    }
    fn touch(&self) {
        let ms = self.since.elapsed().as_millis() as u64;
        self.last_io_ms.store(ms, Ordering::Relaxed);
    }
    fn last_io(&self) -> Instant {
        self.since + Duration::from_millis(self.last_io_ms.load(Ordering::Relaxed))
    }
}

/// A TCP stream that records when a byte last moved, for the idle timeout.
struct Tracked {
    inner: TcpStream,
    state: Arc<ConnState>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.state.touch();
        }
        r
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.state.touch();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Overall;
    use crate::snapshot::tests::snapshot;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn call(rx: Rx, uri: &str) -> (StatusCode, String) {
        let resp = router(rx)
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test(flavor = "current_thread")]
    async fn health_follows_the_snapshot() {
        let (tx, rx) = watch::channel(Arc::new(snapshot(Overall::Starting)));
        let (code, body) = call(rx.clone(), "/health").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "starting");
        assert_eq!(v["programs"]["db"]["state"], "running");
        for key in [
            "pid",
            "ready",
            "healthy",
            "restarts",
            "uptime_seconds",
            "last_exit",
            "last_probe_error",
        ] {
            assert!(v["programs"]["db"].get(key).is_some(), "{key}");
        }
        assert_eq!(
            call(rx.clone(), "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(call(rx.clone(), "/status").await.0, StatusCode::OK);
        tx.send(Arc::new(snapshot(Overall::Ok))).unwrap();
        assert_eq!(call(rx.clone(), "/health").await.0, StatusCode::OK);
        let (code, text) = call(rx.clone(), "/readyz?verbose").await;
        assert_eq!(code, StatusCode::OK);
        assert!(text.ends_with("readyz check passed\n"), "{text}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn livez_fails_once_the_loop_is_gone() {
        let (tx, rx) = watch::channel(Arc::new(snapshot(Overall::Ok)));
        assert_eq!(call(rx.clone(), "/livez").await.0, StatusCode::OK);
        assert_eq!(
            call(rx.clone(), "/livez?verbose").await.1,
            "[+]supervisor ok\nlivez check passed\n"
        );
        drop(tx);
        assert_eq!(
            call(rx.clone(), "/livez").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn metrics_and_unknown_paths() {
        let (_tx, rx) = watch::channel(Arc::new(snapshot(Overall::Ok)));
        let (code, text) = call(rx.clone(), "/metrics").await;
        assert_eq!(code, StatusCode::OK);
        assert!(text.contains("hivesup_reaped_zombies_total 7"));
        assert_eq!(call(rx.clone(), "/nope").await.0, StatusCode::NOT_FOUND);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn only_get_and_head_are_answered() {
        let (_tx, rx) = watch::channel(Arc::new(snapshot(Overall::Ok)));
        for path in ["/health", "/readyz", "/livez", "/status", "/metrics"] {
            for method in ["GET", "HEAD"] {
                let req = Request::builder().method(method).uri(path);
                let resp = router(rx.clone())
                    .oneshot(req.body(Body::empty()).unwrap())
                    .await
                    .unwrap();
                assert_eq!(resp.status(), StatusCode::OK, "{method} {path}");
            }
            for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"] {
                let req = Request::builder().method(method).uri(path);
                let resp = router(rx.clone())
                    .oneshot(req.body(Body::from("x".repeat(100))).unwrap())
                    .await
                    .unwrap();
                assert_eq!(
                    resp.status(),
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path}"
                );
            }
        }
    }

    #[test]
    fn the_connection_limit_fits_the_fd_limit() {
        let soft = nofile_soft_limit();
        let max = Limits::default().effective_max_connections() as u64;
        if soft >= MAX_CONNECTIONS as u64 + RESERVED_FDS {
            assert_eq!(max, MAX_CONNECTIONS as u64, "soft limit {soft}");
        } else {
            assert_eq!(max, soft.saturating_sub(RESERVED_FDS).max(1), "soft {soft}");
        }
    }
}
