//! hivesup: PID 1 for all-in-one containers.
//!
//! # Layout
//! - `cli`: the command line, and the split between supervise and init mode.
//! - `config`: TOML -> typed [`config::Config`], every error as `FILE:LINE:COL: message`.
//! - `spawn`: program config -> child in its own session, prepared before fork.
//! - `reaper`: the ONLY caller of waitpid; routes exit statuses by pid.
//! - `signals`: OS signals -> supervisor messages; signal names.
//! - `procs`: /proc: descendants and leftovers of programs.
//! - `program`: one program's state and the pure transition function `step`.
//! - `probe`: tcp, unix, http, exec, postgres checks and sd_notify readiness.
//! - `supervisor`: the one owner of program state: priority groups, restarts,
//!   reverse-order stop. Publishes snapshots.
//! - `snapshot`: serde types shared by /health, /status, /metrics and `hivesup status`.
//! - `http`: the read-only health server, `router(rx)`.
//! - `output`: program stdout/stderr -> prefixed lines on hivesup's own.
//! - `client`, `query`: a tiny HTTP client, and the `health`/`status` commands on it.
//! - `control`: the control socket (unix, 0600): operator commands in, never on the
//!   health port. `ctl`: its client, `hivesup ctl`.
//! - `init`: single-child mode (`hivesup -- CMD`), reusing reaper, spawn and signals.
//! - `logging`: hivesup's own log lines.
//! - `import`: `hivesup import supervisord.conf`: a supervisord config -> hivesup TOML.
//! - `pgboot`: `hivesup postgres init|provision`, the postgres bootstrap of the images.

pub mod cli;
pub mod client;
pub mod config;
pub mod control;
pub mod ctl;
pub mod http;
pub mod import;
pub mod init;
pub mod logging;
pub mod output;
pub mod pgboot;
pub mod probe;
pub mod procs;
pub mod program;
pub mod query;
pub mod reaper;
pub mod signals;
pub mod snapshot;
pub mod spawn;
pub mod supervisor;
