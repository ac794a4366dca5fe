//! The serde types shared by /health, /readyz, /status, /metrics and `hivesup status`.
//! The supervisor publishes a fresh [`Snapshot`] after every event; readers only ever see
//! whole snapshots (through a `watch` channel), never the supervisor's live state.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::program::State;
use crate::reaper::Exit;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overall {
    Ok,
    Starting,
    Degraded,
    Failed,
    Stopping,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<String>,
}

impl From<Exit> for ExitInfo {
    fn from(e: Exit) -> Self {
        match e {
            Exit::Code(c) => ExitInfo {
                code: Some(c),
                signal: None,
            },
            Exit::Signal(s) => ExitInfo {
                code: None,
                signal: Some(
                    nix::sys::signal::Signal::try_from(s)
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_else(|_| s.to_string()),
                ),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgramSnapshot {
    pub state: State,
    pub pid: Option<u32>,
    pub ready: bool,
    pub healthy: bool,
    pub restarts: u32,
    pub uptime_seconds: Option<f64>,
    pub last_exit: Option<ExitInfo>,
    pub last_probe_error: Option<String>,
    pub priority: u32,
    /// Unix time the current process started.
    pub start_time: Option<f64>,
    /// Where it should be (counts towards 200 on /health).
    pub ok: bool,
    /// Stopped by the operator (`hivesup ctl stop`): intended, so `ok`.
    #[serde(default)]
    pub held: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub status: Overall,
    pub programs: BTreeMap<String, ProgramSnapshot>,
    #[serde(skip)]
    pub orphans_reaped: Option<Arc<AtomicU64>>,
    /// Counts publications, so a reader can wait for the first snapshot after a command.
    #[serde(skip)]
    pub seq: u64,
}

impl Snapshot {
    /// 200 on /health and /readyz.
    pub fn healthy(&self) -> bool {
        self.status == Overall::Ok
    }

    /// A copy whose uptimes are measured now (the snapshot itself is only rebuilt on events).
    pub fn at(&self, now: SystemTime) -> Snapshot {
        let mut s = self.clone();
        let now = unix(now);
        for p in s.programs.values_mut() {
            p.uptime_seconds = p
                .start_time
                .map(|t| ((now - t).max(0.0) * 1000.0).round() / 1000.0);
        }
        s
    }

    /// Kubernetes-style `?verbose` text.
    pub fn verbose(&self, what: &str) -> String {
        let mut out = String::new();
        for (name, p) in &self.programs {
            if p.held {
                let _ = writeln!(out, "[+]{name} ok (stopped by operator)");
            } else if p.ok {
                let _ = writeln!(out, "[+]{name} ok");
            } else {
                let reason = match &p.last_probe_error {
                    Some(e) => format!("{} ({e})", p.state.as_str()),
                    None if p.state == State::Running && !p.healthy => {
                        "running but unhealthy".to_string()
                    }
                    None => p.state.as_str().to_string(),
                };
                let _ = writeln!(out, "[-]{name} failed: {reason}");
            }
        }
        if self.status == Overall::Stopping {
            let _ = writeln!(out, "[-]supervisor failed: shutting down");
        }
        let verdict = if self.healthy() { "passed" } else { "failed" };
        let _ = writeln!(out, "{what} check {verdict}");
        out
    }

    /// Prometheus text exposition.
    pub fn metrics(&self) -> String {
        let mut out = String::new();
        let gauge = |out: &mut String,
                     name: &str,
                     help: &str,
                     kind: &str,
                     f: &dyn Fn(&ProgramSnapshot) -> Option<f64>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (prog, p) in &self.programs {
                if let Some(v) = f(p) {
                    let _ = writeln!(out, "{name}{{program=\"{}\"}} {v}", escape(prog));
                }
            }
        };
        let b = |x: bool| Some(if x { 1.0 } else { 0.0 });
        gauge(
            &mut out,
            "hivesup_program_up",
            "1 if the program has a running process.",
            "gauge",
            &|p| b(p.pid.is_some()),
        );
        gauge(
            &mut out,
            "hivesup_program_ready",
            "1 if the program passed its ready check.",
            "gauge",
            &|p| b(p.ready),
        );
        gauge(
            &mut out,
            "hivesup_program_healthy",
            "1 if the program's health probe passes.",
            "gauge",
            &|p| b(p.healthy),
        );
        gauge(
            &mut out,
            "hivesup_program_held",
            "1 if the operator stopped the program (hivesup ctl stop).",
            "gauge",
            &|p| b(p.held),
        );
        gauge(
            &mut out,
            "hivesup_program_restarts_total",
            "Restarts since hivesup started.",
            "counter",
            &|p| Some(p.restarts as f64),
        );
        gauge(
            &mut out,
            "hivesup_program_start_time_seconds",
            "Unix time the program's current process started.",
            "gauge",
            &|p| p.start_time,
        );
        let _ = writeln!(
            out,
            "# HELP hivesup_program_state 1 for the program's current state.\n# TYPE hivesup_program_state gauge"
        );
        for (prog, p) in &self.programs {
            let _ = writeln!(
                out,
                "hivesup_program_state{{program=\"{}\",state=\"{}\"}} 1",
                escape(prog),
                p.state.as_str()
            );
        }
        let reaped = self
            .orphans_reaped
            .as_ref()
            .map_or(0, |c| c.load(Ordering::Relaxed));
        let _ = writeln!(
            out,
            "# HELP hivesup_reaped_zombies_total Orphaned processes reaped by hivesup.\n# TYPE hivesup_reaped_zombies_total counter\nhivesup_reaped_zombies_total {reaped}"
        );
        out
    }
}

pub fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn program(state: State, ok: bool) -> ProgramSnapshot {
        ProgramSnapshot {
            state,
            pid: Some(42),
            ready: ok,
            healthy: ok,
            restarts: 2,
            uptime_seconds: None,
            last_exit: Some(Exit::Signal(9).into()),
            last_probe_error: (!ok).then(|| "connect to 127.0.0.1:1: Connection refused".into()),
            priority: 100,
            start_time: Some(1000.0),
            ok,
            held: false,
        }
    }

    pub fn snapshot(status: Overall) -> Snapshot {
        let mut programs = BTreeMap::new();
        programs.insert(
            "api".to_string(),
            program(State::Starting, status == Overall::Ok),
        );
        programs.insert("db".to_string(), program(State::Running, true));
        Snapshot {
            status,
            programs,
            orphans_reaped: Some(Arc::new(AtomicU64::new(7))),
            seq: 0,
        }
    }

    #[test]
    fn verbose_lines() {
        let s = snapshot(Overall::Starting);
        assert_eq!(
            s.verbose("health"),
            "[-]api failed: starting (connect to 127.0.0.1:1: Connection refused)\n[+]db ok\nhealth check failed\n"
        );
    }

    #[test]
    fn metrics_names() {
        let m = snapshot(Overall::Ok).metrics();
        for needle in [
            "hivesup_program_up{program=\"db\"} 1",
            "hivesup_program_ready{program=\"db\"} 1",
            "hivesup_program_healthy{program=\"db\"} 1",
            "hivesup_program_restarts_total{program=\"api\"} 2",
            "hivesup_program_start_time_seconds{program=\"db\"} 1000",
            "hivesup_program_state{program=\"api\",state=\"starting\"} 1",
            "hivesup_reaped_zombies_total 7",
        ] {
            assert!(m.contains(needle), "{needle} missing in\n{m}");
        }
    }

    #[test]
    fn uptime_is_measured_at_read_time() {
        let s = snapshot(Overall::Ok).at(UNIX_EPOCH + std::time::Duration::from_secs(1010));
        assert_eq!(s.programs["db"].uptime_seconds, Some(10.0));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["programs"]["db"]["last_exit"]["signal"], "SIGKILL");
        assert_eq!(json["status"], "ok");
    }
}
