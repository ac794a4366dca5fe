//! Probes: does a program answer? Each kind is one `async fn check`, returning `Ok(())`
//! or a one-line reason that ends up in /health's `last_probe_error`.
//!
//! Probes never wait on a process themselves: the exec probe's child is spawned and
//! reaped through the reaper like any program.

mod exec;
mod http;
mod notify;
mod postgres;
mod tcp;

use std::sync::Arc;
use std::time::Duration;

pub use notify::NotifySocket;

use crate::config::Probe;
use crate::reaper::Reaper;
use crate::spawn::SpawnSpec;

/// What a probe may need besides its own config.
#[derive(Clone)]
pub struct Context {
    pub reaper: Arc<Reaper>,
    /// User, directory and environment of the program, for exec probes.
    pub base: SpawnSpec,
}

/// Runs one probe attempt, bounded by `limit`.
pub async fn check(probe: &Probe, ctx: &Context, limit: Duration) -> Result<(), String> {
    let attempt = async {
        match probe {
            Probe::Tcp(addr) => tcp::check_tcp(addr).await,
            Probe::Unix(path) => tcp::check_unix(path).await,
            Probe::Http(target) => http::check(target, limit).await,
            Probe::Exec(argv) => exec::check(argv, ctx).await,
            Probe::Postgres(conn) => postgres::check(conn).await,
        }
    };
    match tokio::time::timeout(limit, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "{} probe timed out after {}",
            probe.kind(),
            humantime::format_duration(limit)
        )),
    }
}
