//! http probe: a GET answers 2xx.

use std::time::Duration;

use crate::client;
use crate::config::HttpTarget;

pub async fn check(t: &HttpTarget, limit: Duration) -> Result<(), String> {
    let r = client::get(&t.host, t.port, &t.path, limit)
        .await
        .map_err(|e| crate::supervisor::error_chain(&e))?;
    if (200..300).contains(&r.status) {
        Ok(())
    } else {
        Err(format!("GET {} answered {}", t.path, r.status))
    }
}
