//! The health server: /health, /readyz, /livez, /status, /metrics. Read-only by design:
//! handlers clone the latest `Arc<Snapshot>` and serialize it; they never touch the
//! supervisor's state and never wait on a child.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tokio::sync::watch;

use crate::snapshot::Snapshot;

type Rx = watch::Receiver<Arc<Snapshot>>;

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
}
