//! One program's state and the pure transition function that moves it.
//!
//! `step(config, state, event, now) -> (state, actions)` decides; the supervisor only
//! carries out the actions (spawn, probe, signal) and feeds the results back as events.
//! Time is an argument, so the whole table is unit-tested without a clock or a process.
//!
//! ```text
//!  state     event                          next       actions / notes
//!  pending   Start                          starting   Spawn
//!  starting  Spawned(pid)                   starting   WatchReady (probe/notify), deadline = ready timeout
//!                                                      (no ready: deadline = settle_time; oneshot: none)
//!  starting  SpawnFailed                    backoff | failed   counts as a failed start
//!  starting  Ready | Deadline(settled)      running    WatchHealth
//!  starting  Deadline(ready timeout)        stopping   stop_signal to the group; then a failed start
//!  starting  Exited (oneshot, code 0)       exited     (ready)
//!  starting/running Exited                  backoff    restart policy says restart; failures += 1
//!                                           exited     no restart and code 0
//!                                           failed     no restart and code != 0, or failures == start_retries
//!  running   HealthOk / HealthFailed        running    healthy = false after `failures` in a row
//!  backoff   Deadline                       starting   Spawn, restarts += 1
//!  *alive*   Stop                           stopping   stop_signal to the group, deadline = stop_timeout
//!  pending/backoff Stop                     stopped
//!  stopping  Deadline | ForceKill           stopping   Kill (SIGKILL group + descendants), killed = true
//!  stopping  Exited                         stopped    (or, after a ready timeout, a failed start)
//!  starting/running MainExited              (same)     not ready, no deadline: leftovers are being stopped
//!  *alive*   Hold (ctl stop)                stopping   stop_signal; once gone: stopped, held
//!  pending/backoff/exited/failed Hold       stopped    held
//!  stopping  Exited (held)                  stopped    held: no restart until Release
//!  stopped/exited/failed/backoff Release    starting   Spawn; failures and backoff reset, held = false
//!  *alive*   Respawn (ctl restart, reload)  stopping   stop_signal; once gone: starting (Spawn, restarts += 1)
//!  stopped/exited/failed/backoff Respawn    starting   as Release
//! ```
//! A held program (stopped by the operator) counts as where it should be (`ok`), and keeps
//! the priority gate open: stopping the API by hand is not an outage.
//! A failed start with `critical = true` that ends in `failed` also emits GiveUp.
//! Failures reset when a program stayed up `backoff_reset`.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::config::{Kind, ProgramConfig, ReadyCheck, Restart};
use crate::reaper::Exit;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Pending,
    Starting,
    Running,
    Exited,
    Backoff,
    Stopping,
    Stopped,
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Starting => "starting",
            State::Running => "running",
            State::Exited => "exited",
            State::Backoff => "backoff",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
            State::Failed => "failed",
        }
    }
}

/// Why a program is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopIntent {
    /// hivesup is shutting down.
    Shutdown,
    /// It did not become ready in time: once gone, that is a failed start.
    Restart,
    /// The operator stopped it: once gone it stays stopped.
    Hold,
    /// The operator restarted it (or its definition changed): once gone, start again.
    Respawn,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Program {
    pub state: State,
    pub pid: Option<u32>,
    pub ready: bool,
    pub healthy: bool,
    pub restarts: u32,
    /// Failed starts in a row.
    pub failures: u32,
    pub next_backoff: Duration,
    pub started_at: Option<Instant>,
    pub last_exit: Option<Exit>,
    pub last_error: Option<String>,
    pub health_failures: u32,
    pub deadline: Option<Instant>,
    pub stop_intent: Option<StopIntent>,
    /// SIGKILL was needed to stop it.
    pub killed: bool,
    /// Stopped by the operator (`ctl stop`): stays stopped, and that is intended.
    pub held: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Start,
    Spawned {
        pid: u32,
    },
    SpawnFailed {
        error: String,
        code: i32,
    },
    /// The main process is gone but not yet everything of the program (see `Exited`).
    MainExited,
    Exited(Exit),
    Ready,
    NotReady {
        error: String,
    },
    HealthOk,
    HealthFailed {
        error: String,
    },
    Deadline,
    Stop,
    ForceKill,
    /// What the program left behind needed SIGKILL (reported just before `Exited`).
    LeftoversKilled,
    /// `ctl stop`: stop and stay stopped.
    Hold,
    /// `ctl start`: start a program that is not running, now.
    Release,
    /// `ctl restart` or a changed definition: stop if running, then start.
    Respawn,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Spawn,
    WatchReady,
    WatchHealth,
    CancelProbes,
    Signal(Signal),
    Kill,
    /// A critical program was given up: stop everything and exit with this code.
    GiveUp {
        code: i32,
    },
}

impl Program {
    pub fn new(cfg: &ProgramConfig) -> Self {
        Program {
            state: State::Pending,
            pid: None,
            ready: false,
            healthy: false,
            restarts: 0,
            failures: 0,
            next_backoff: cfg.restart_backoff,
            started_at: None,
            last_exit: None,
            last_error: None,
            health_failures: 0,
            deadline: None,
            stop_intent: None,
            killed: false,
            held: false,
        }
    }

    /// Ready for the next priority to start: running and ready, or a oneshot done.
    pub fn gate_open(&self) -> bool {
        matches!(self.state, State::Running | State::Exited) || self.held_stopped()
    }

    /// Stopped by the operator and fully gone.
    pub fn held_stopped(&self) -> bool {
        self.held && self.state == State::Stopped && self.pid.is_none()
    }

    /// Where it should be: daemons running, ready and healthy; oneshots exited 0.
    pub fn ok(&self) -> bool {
        match self.state {
            State::Running => self.ready && self.healthy,
            State::Exited => true,
            State::Stopped => self.held_stopped(),
            _ => false,
        }
    }

    /// A process of it may still exist.
    pub fn alive(&self) -> bool {
        self.pid.is_some()
    }

    /// No process and nothing more will happen unless asked.
    pub fn finished(&self) -> bool {
        matches!(
            self.state,
            State::Exited | State::Stopped | State::Failed | State::Pending
        ) && self.pid.is_none()
    }
}

pub fn step(
    cfg: &ProgramConfig,
    mut p: Program,
    ev: Event,
    now: Instant,
) -> (Program, Vec<Action>) {
    let mut actions = Vec::new();
    match (p.state, ev) {
        (State::Pending, Event::Start) => {
            p.state = State::Starting;
            p.deadline = None;
            actions.push(Action::Spawn);
        }
        (State::Starting, Event::Spawned { pid }) => {
            p.pid = Some(pid);
            p.started_at = Some(now);
            p.ready = false;
            p.healthy = false;
            p.health_failures = 0;
            match (&cfg.kind, &cfg.ready) {
                (Kind::Oneshot, _) => p.deadline = None,
                (Kind::Daemon, Some(r)) => {
                    p.deadline = Some(now + r.timeout);
                    actions.push(Action::WatchReady);
                }
                (Kind::Daemon, None) => p.deadline = Some(now + cfg.settle_time),
            }
        }
        (State::Starting, Event::SpawnFailed { error, code }) => {
            p.last_error = Some(error);
            p.last_exit = Some(Exit::Code(code));
            p.pid = None;
            failed_start(cfg, &mut p, now, &mut actions);
        }
        (State::Starting, Event::Ready) if p.pid.is_some() => {
            become_ready(cfg, &mut p, &mut actions)
        }
        (State::Starting, Event::Deadline) if p.pid.is_some() && cfg.kind == Kind::Daemon => {
            if cfg.ready.is_none() {
                become_ready(cfg, &mut p, &mut actions);
            } else {
                let how = match cfg.ready.as_ref().map(|r| &r.check) {
                    Some(ReadyCheck::Notify) => "no READY=1 on NOTIFY_SOCKET",
                    _ => "probe never succeeded",
                };
                let timeout = cfg.ready.as_ref().map_or(Duration::ZERO, |r| r.timeout);
                let last = p
                    .last_error
                    .take()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default();
                p.last_error = Some(format!(
                    "not ready within {} ({how}){last}",
                    humantime::format_duration(timeout)
                ));
                begin_stop(cfg, &mut p, StopIntent::Restart, now, &mut actions);
            }
        }
        (State::Starting, Event::NotReady { error }) => p.last_error = Some(error),
        (State::Starting | State::Running, Event::Exited(exit)) => {
            actions.push(Action::CancelProbes);
            p.pid = None;
            p.deadline = None;
            p.last_exit = Some(exit);
            p.healthy = false;
            let stayed_up = p
                .started_at
                .is_some_and(|t| now.duration_since(t) >= cfg.backoff_reset);
            if stayed_up {
                p.failures = 0;
                p.next_backoff = cfg.restart_backoff;
            }
            if cfg.kind == Kind::Oneshot && exit.success() {
                p.state = State::Exited;
                p.ready = true;
                p.failures = 0;
                p.last_error = None;
            } else {
                p.ready = false;
                let restart = match cfg.restart {
                    Restart::Always => true,
                    Restart::OnFailure => !exit.success(),
                    Restart::Never => false,
                };
                if !restart && exit.success() {
                    p.state = State::Exited;
                } else if !restart {
                    p.last_error = Some(format!("{exit}; restart = \"never\""));
                    give_up(cfg, &mut p, &mut actions);
                } else {
                    p.last_error = Some(exit.to_string());
                    failed_start(cfg, &mut p, now, &mut actions);
                }
            }
        }
        (State::Running, Event::HealthOk) => {
            p.health_failures = 0;
            p.healthy = true;
            p.last_error = None;
        }
        (State::Running, Event::HealthFailed { error }) => {
            p.health_failures += 1;
            p.last_error = Some(error);
            let limit = cfg.health.as_ref().map_or(1, |h| h.failures);
            if p.health_failures >= limit {
                p.healthy = false;
            }
        }
        (State::Backoff, Event::Deadline) => {
            p.state = State::Starting;
            p.deadline = None;
            p.restarts += 1;
            actions.push(Action::Spawn);
        }
        (State::Pending | State::Backoff, Event::Stop) => {
            p.state = State::Stopped;
            p.deadline = None;
        }
        (State::Starting | State::Running, Event::Stop) if p.pid.is_some() => {
            begin_stop(cfg, &mut p, StopIntent::Shutdown, now, &mut actions);
        }
        (State::Stopping, Event::Stop) => p.stop_intent = Some(StopIntent::Shutdown),
        (State::Starting | State::Running, Event::Hold) if p.pid.is_some() => {
            begin_stop(cfg, &mut p, StopIntent::Hold, now, &mut actions);
        }
        (State::Stopping, Event::Hold) if p.stop_intent != Some(StopIntent::Shutdown) => {
            p.stop_intent = Some(StopIntent::Hold);
        }
        (
            State::Pending | State::Backoff | State::Exited | State::Failed | State::Stopped,
            Event::Hold,
        ) => {
            p.state = State::Stopped;
            p.deadline = None;
            p.held = true;
        }
        (State::Starting | State::Running, Event::Respawn) if p.pid.is_some() => {
            begin_stop(cfg, &mut p, StopIntent::Respawn, now, &mut actions);
        }
        (State::Stopping, Event::Respawn) if p.stop_intent != Some(StopIntent::Shutdown) => {
            p.stop_intent = Some(StopIntent::Respawn);
        }
        (
            State::Backoff | State::Exited | State::Failed | State::Stopped,
            Event::Release | Event::Respawn,
        ) => start_now(cfg, &mut p, &mut actions),
        (State::Stopping, Event::Deadline)
        | (State::Starting | State::Running | State::Stopping, Event::ForceKill)
            if p.pid.is_some() =>
        {
            p.state = State::Stopping;
            p.stop_intent.get_or_insert(StopIntent::Shutdown);
            p.killed = true;
            p.deadline = None;
            actions.push(Action::CancelProbes);
            actions.push(Action::Kill);
        }
        (State::Stopping, Event::Exited(exit)) => {
            p.pid = None;
            p.deadline = None;
            p.last_exit = Some(exit);
            p.ready = false;
            p.healthy = false;
            match p.stop_intent.take() {
                Some(StopIntent::Restart) => failed_start(cfg, &mut p, now, &mut actions),
                Some(StopIntent::Respawn) => {
                    p.restarts += 1;
                    start_now(cfg, &mut p, &mut actions);
                }
                Some(StopIntent::Hold) => {
                    p.state = State::Stopped;
                    p.held = true;
                    // SIGKILL for an operator's stop says nothing about hivesup's own exit.
                    p.killed = false;
                }
                _ => p.state = State::Stopped,
            }
        }
        (State::Stopping, Event::LeftoversKilled) => p.killed = true,
        // Not ready, not healthy, and no settle or ready deadline can make it so while what
        // it left behind is being stopped.
        (State::Starting | State::Running, Event::MainExited) => {
            p.ready = false;
            p.healthy = false;
            p.deadline = None;
            actions.push(Action::CancelProbes);
        }
        // Anything else is stale (a probe result after exit, a second Start) and ignored.
        _ => {}
    }
    (p, actions)
}

/// A start the operator asked for: not a retry, so the failure count starts afresh.
fn start_now(cfg: &ProgramConfig, p: &mut Program, actions: &mut Vec<Action>) {
    p.state = State::Starting;
    p.held = false;
    p.deadline = None;
    p.failures = 0;
    p.next_backoff = cfg.restart_backoff;
    p.last_error = None;
    p.killed = false;
    actions.push(Action::Spawn);
}

fn become_ready(cfg: &ProgramConfig, p: &mut Program, actions: &mut Vec<Action>) {
    p.state = State::Running;
    p.ready = true;
    p.healthy = true;
    p.deadline = None;
    p.last_error = None;
    if cfg.health.is_some() {
        actions.push(Action::WatchHealth);
    }
}

fn begin_stop(
    cfg: &ProgramConfig,
    p: &mut Program,
    intent: StopIntent,
    now: Instant,
    actions: &mut Vec<Action>,
) {
    p.state = State::Stopping;
    p.stop_intent = Some(intent);
    p.deadline = Some(now + cfg.stop_timeout);
    actions.push(Action::CancelProbes);
    actions.push(Action::Signal(cfg.stop_signal));
}

/// One more failed start: back off, or give up after `start_retries` in a row.
fn failed_start(cfg: &ProgramConfig, p: &mut Program, now: Instant, actions: &mut Vec<Action>) {
    p.failures += 1;
    if p.failures >= cfg.start_retries {
        let last = p.last_error.take().unwrap_or_default();
        p.last_error = Some(format!(
            "gave up after {} failed starts in a row: {last}",
            p.failures
        ));
        give_up(cfg, p, actions);
        return;
    }
    p.state = State::Backoff;
    p.deadline = Some(now + p.next_backoff);
    p.next_backoff = (p.next_backoff * 2).min(cfg.restart_backoff_max);
}

fn give_up(cfg: &ProgramConfig, p: &mut Program, actions: &mut Vec<Action>) {
    p.state = State::Failed;
    p.deadline = None;
    if cfg.critical {
        let code = match p.last_exit.map(Exit::code) {
            Some(0) | None => 1,
            Some(c) => c,
        };
        actions.push(Action::GiveUp { code });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CommandSpec, HealthConfig, Probe, ReadyConfig};

    fn cfg() -> ProgramConfig {
        let mut c = ProgramConfig::new("p", CommandSpec::Shell("x".into()));
        c.restart_backoff = Duration::from_secs(1);
        c.restart_backoff_max = Duration::from_secs(4);
        c.start_retries = 3;
        c
    }

    /// Applies events in order, returning the final state and all actions.
    fn run(cfg: &ProgramConfig, t0: Instant, events: &[(u64, Event)]) -> (Program, Vec<Action>) {
        let mut p = Program::new(cfg);
        let mut all = Vec::new();
        for (ms, ev) in events {
            let (np, a) = step(cfg, p, ev.clone(), t0 + Duration::from_millis(*ms));
            p = np;
            all.extend(a);
        }
        (p, all)
    }

    #[test]
    fn daemon_without_ready_is_ready_after_settle_time() {
        let c = cfg();
        let t0 = Instant::now();
        let (p, a) = run(&c, t0, &[(0, Event::Start), (0, Event::Spawned { pid: 7 })]);
        assert_eq!(
            (p.state, p.deadline),
            (State::Starting, Some(t0 + c.settle_time))
        );
        assert_eq!(a, [Action::Spawn]);
        let (p, _) = step(&c, p, Event::Deadline, t0 + c.settle_time);
        assert_eq!(p.state, State::Running);
        assert!(p.ok() && p.gate_open());
    }

    #[test]
    fn not_ready_failures_are_not_yet_and_ready_opens_the_gate() {
        let mut c = cfg();
        c.ready = Some(ReadyConfig {
            check: ReadyCheck::Probe(Probe::Tcp("127.0.0.1:1".into())),
            timeout: Duration::from_secs(5),
            interval: Duration::from_millis(100),
        });
        let t0 = Instant::now();
        let (p, a) = run(
            &c,
            t0,
            &[
                (0, Event::Start),
                (0, Event::Spawned { pid: 7 }),
                (
                    100,
                    Event::NotReady {
                        error: "refused".into(),
                    },
                ),
                (
                    200,
                    Event::NotReady {
                        error: "refused".into(),
                    },
                ),
            ],
        );
        assert_eq!(a, [Action::Spawn, Action::WatchReady]);
        assert_eq!(
            (p.state, p.failures, p.gate_open()),
            (State::Starting, 0, false)
        );
        assert_eq!(p.last_error.as_deref(), Some("refused"));
        let (p, _) = step(&c, p, Event::Ready, t0 + Duration::from_millis(300));
        assert_eq!(
            (p.state, p.gate_open(), p.last_error.clone()),
            (State::Running, true, None)
        );
    }

    #[test]
    fn ready_timeout_stops_then_counts_as_failed_start() {
        let mut c = cfg();
        c.ready = Some(ReadyConfig {
            check: ReadyCheck::Notify,
            timeout: Duration::from_secs(2),
            interval: Duration::from_millis(100),
        });
        let t0 = Instant::now();
        let (p, a) = run(
            &c,
            t0,
            &[
                (0, Event::Start),
                (0, Event::Spawned { pid: 7 }),
                (2000, Event::Deadline),
            ],
        );
        assert_eq!(p.state, State::Stopping);
        assert!(a.contains(&Action::Signal(Signal::SIGTERM)));
        assert!(
            p.last_error
                .as_deref()
                .unwrap()
                .starts_with("not ready within 2s")
        );
        let (p, _) = step(
            &c,
            p,
            Event::Exited(Exit::Signal(15)),
            t0 + Duration::from_millis(2100),
        );
        assert_eq!((p.state, p.failures), (State::Backoff, 1));
    }

    #[test]
    fn backoff_doubles_to_the_cap_then_gives_up() {
        let mut c = cfg();
        c.start_retries = 4;
        let t0 = Instant::now();
        let mut p = Program::new(&c);
        let mut t = t0;
        let mut delays = Vec::new();
        (p, _) = step(&c, p, Event::Start, t);
        for _ in 0..4 {
            (p, _) = step(&c, p, Event::Spawned { pid: 1 }, t);
            (p, _) = step(&c, p, Event::Exited(Exit::Code(3)), t);
            if p.state == State::Backoff {
                let d = p.deadline.unwrap() - t;
                delays.push(d.as_secs());
                t += d;
                (p, _) = step(&c, p, Event::Deadline, t);
            }
        }
        assert_eq!(delays, [1, 2, 4]);
        assert_eq!((p.state, p.restarts), (State::Failed, 3));
        assert!(
            p.last_error
                .as_deref()
                .unwrap()
                .starts_with("gave up after 4 failed starts in a row")
        );
    }

    #[test]
    fn staying_up_resets_the_failure_count() {
        let c = cfg();
        let t0 = Instant::now();
        let (p, _) = run(
            &c,
            t0,
            &[
                (0, Event::Start),
                (0, Event::Spawned { pid: 1 }),
                (10, Event::Exited(Exit::Code(1))),
                (1010, Event::Deadline),
                (1010, Event::Spawned { pid: 2 }),
                (1020, Event::Exited(Exit::Code(1))),
            ],
        );
        assert_eq!((p.failures, p.next_backoff), (2, Duration::from_secs(4)));
        let (p, _) = run(
            &c,
            t0,
            &[
                (0, Event::Start),
                (0, Event::Spawned { pid: 1 }),
                (10, Event::Exited(Exit::Code(1))),
                (1010, Event::Deadline),
                (1010, Event::Spawned { pid: 2 }),
                (70_000, Event::Exited(Exit::Code(1))),
            ],
        );
        assert_eq!((p.failures, p.next_backoff), (1, Duration::from_secs(2)));
    }

    #[test]
    fn restart_policy_table() {
        let t0 = Instant::now();
        let cases = [
            (
                Kind::Daemon,
                Restart::OnFailure,
                Exit::Code(0),
                State::Exited,
            ),
            (
                Kind::Daemon,
                Restart::OnFailure,
                Exit::Code(1),
                State::Backoff,
            ),
            (
                Kind::Daemon,
                Restart::OnFailure,
                Exit::Signal(9),
                State::Backoff,
            ),
            (Kind::Daemon, Restart::Always, Exit::Code(0), State::Backoff),
            (Kind::Daemon, Restart::Never, Exit::Code(0), State::Exited),
            (Kind::Daemon, Restart::Never, Exit::Code(2), State::Failed),
            (
                Kind::Oneshot,
                Restart::OnFailure,
                Exit::Code(0),
                State::Exited,
            ),
            (Kind::Oneshot, Restart::Always, Exit::Code(0), State::Exited),
            (
                Kind::Oneshot,
                Restart::OnFailure,
                Exit::Code(1),
                State::Backoff,
            ),
            (Kind::Oneshot, Restart::Never, Exit::Code(1), State::Failed),
        ];
        for (kind, restart, exit, want) in cases {
            let mut c = cfg();
            c.kind = kind;
            c.restart = restart;
            let (p, _) = run(
                &c,
                t0,
                &[
                    (0, Event::Start),
                    (0, Event::Spawned { pid: 1 }),
                    (5, Event::Exited(exit)),
                ],
            );
            assert_eq!(p.state, want, "{kind:?} {restart:?} {exit:?}");
        }
    }

    #[test]
    fn critical_give_up_carries_the_exit_code() {
        let t0 = Instant::now();
        for (exit, code) in [
            (Exit::Code(3), 3),
            (Exit::Signal(9), 137),
            (Exit::Code(0), 1),
        ] {
            let mut c = cfg();
            c.critical = true;
            c.restart = Restart::Never;
            c.kind = Kind::Oneshot;
            if exit.success() {
                // A daemon that exits 0 under `always` and runs out of retries.
                c.kind = Kind::Daemon;
                c.restart = Restart::Always;
                c.start_retries = 1;
            }
            let (p, a) = run(
                &c,
                t0,
                &[
                    (0, Event::Start),
                    (0, Event::Spawned { pid: 1 }),
                    (5, Event::Exited(exit)),
                ],
            );
            assert_eq!(p.state, State::Failed);
            assert!(a.contains(&Action::GiveUp { code }), "{exit:?}: {a:?}");
        }
    }

    #[test]
    fn spawn_failure_is_a_failed_start() {
        let c = cfg();
        let t0 = Instant::now();
        let (p, _) = run(
            &c,
            t0,
            &[
                (0, Event::Start),
                (
                    0,
                    Event::SpawnFailed {
                        error: "not found".into(),
                        code: 127,
                    },
                ),
            ],
        );
        assert_eq!(
            (p.state, p.failures, p.last_exit),
            (State::Backoff, 1, Some(Exit::Code(127)))
        );
    }

    #[test]
    fn health_turns_unhealthy_after_n_failures_and_recovers() {
        let mut c = cfg();
        c.health = Some(HealthConfig {
            probe: Probe::Tcp("127.0.0.1:1".into()),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            failures: 2,
        });
        let t0 = Instant::now();
        let (p, a) = run(
            &c,
            t0,
            &[
                (0, Event::Start),
                (0, Event::Spawned { pid: 1 }),
                (1000, Event::Deadline),
                (2000, Event::HealthFailed { error: "x".into() }),
            ],
        );
        assert!(a.contains(&Action::WatchHealth));
        assert!(p.healthy && p.ok());
        let (p, _) = step(&c, p, Event::HealthFailed { error: "x".into() }, t0);
        assert!(!p.healthy && !p.ok() && p.gate_open());
        let (p, _) = step(&c, p, Event::HealthOk, t0);
        assert!(p.healthy && p.ok());
    }

    #[test]
    fn stop_escalates_to_kill_and_ends_stopped() {
        let c = cfg();
        let t0 = Instant::now();
        let (p, a) = run(
            &c,
            t0,
            &[
                (0, Event::Start),
                (0, Event::Spawned { pid: 1 }),
                (1000, Event::Deadline),
                (2000, Event::Stop),
            ],
        );
        assert_eq!(p.state, State::Stopping);
        assert_eq!(
            p.deadline,
            Some(t0 + Duration::from_millis(2000) + c.stop_timeout)
        );
        assert!(a.ends_with(&[Action::CancelProbes, Action::Signal(Signal::SIGTERM)]));
        let (p, a) = step(&c, p, Event::Deadline, t0 + Duration::from_secs(7));
        assert!(a.contains(&Action::Kill) && p.killed);
        let (p, _) = step(
            &c,
            p,
            Event::Exited(Exit::Signal(9)),
            t0 + Duration::from_secs(7),
        );
        assert_eq!((p.state, p.pid), (State::Stopped, None));
        // A stopped program never restarts, even under `always`.
        let (p, a) = step(&c, p, Event::Deadline, t0 + Duration::from_secs(60));
        assert_eq!((p.state, a), (State::Stopped, vec![]));
    }

    #[test]
    fn pending_and_backoff_stop_at_once() {
        let c = cfg();
        let t0 = Instant::now();
        let (p, a) = run(&c, t0, &[(0, Event::Stop)]);
        assert_eq!((p.state, a), (State::Stopped, vec![]));
        let (p, _) = run(
            &c,
            t0,
            &[
                (0, Event::Start),
                (0, Event::Spawned { pid: 1 }),
                (1, Event::Exited(Exit::Code(1))),
                (2, Event::Stop),
            ],
        );
        assert_eq!(p.state, State::Stopped);
    }

    #[test]
    fn main_exit_cancels_readiness_until_everything_is_gone() {
        let c = cfg();
        let t0 = Instant::now();
        let (p, a) = run(
            &c,
            t0,
            &[
                (0, Event::Start),
                (0, Event::Spawned { pid: 1 }),
                (10, Event::MainExited),
            ],
        );
        assert_eq!(
            (p.state, p.deadline, p.ready),
            (State::Starting, None, false)
        );
        assert!(a.contains(&Action::CancelProbes));
        let (p, _) = step(
            &c,
            p,
            Event::Exited(Exit::Code(1)),
            t0 + Duration::from_secs(5),
        );
        assert_eq!(p.state, State::Backoff);
    }

    #[test]
    fn stale_events_are_ignored() {
        let c = cfg();
        let t0 = Instant::now();
        let (p, a) = run(
            &c,
            t0,
            &[
                (0, Event::Ready),
                (0, Event::HealthOk),
                (0, Event::Exited(Exit::Code(0))),
            ],
        );
        assert_eq!((p.state, a), (State::Pending, vec![]));
    }

    /// Running and ready, pid 7, at t0.
    fn running(c: &ProgramConfig, t0: Instant) -> Program {
        let (p, _) = run(
            c,
            t0,
            &[
                (0, Event::Start),
                (0, Event::Spawned { pid: 7 }),
                (1000, Event::Deadline),
            ],
        );
        assert_eq!(p.state, State::Running);
        p
    }

    #[test]
    fn operator_stop_holds_until_released() {
        let mut c = cfg();
        c.restart = Restart::Always;
        c.critical = true;
        let t0 = Instant::now();
        let p = running(&c, t0);
        let (p, a) = step(&c, p, Event::Hold, t0);
        assert_eq!(p.state, State::Stopping);
        assert!(a.contains(&Action::Signal(c.stop_signal)));
        // Gone: stopped and held, no restart, no give-up although critical.
        let (p, a) = step(&c, p, Event::Exited(Exit::Signal(15)), t0);
        assert_eq!((p.state, p.held, p.pid), (State::Stopped, true, None));
        assert!(a.is_empty(), "{a:?}");
        assert!(p.ok() && p.gate_open() && p.held_stopped());
        // A deadline or a stale Start does nothing to a held program.
        let (p, a) = step(&c, p, Event::Deadline, t0);
        let (p, b) = step(&c, p, Event::Start, t0);
        assert_eq!((p.state, a, b), (State::Stopped, vec![], vec![]));
        // Release starts it with a clean slate.
        let (p, a) = step(&c, p, Event::Release, t0);
        assert_eq!((p.state, p.held, p.failures), (State::Starting, false, 0));
        assert_eq!(a, vec![Action::Spawn]);
    }

    #[test]
    fn operator_stop_needing_sigkill_does_not_mark_the_exit() {
        let c = cfg();
        let t0 = Instant::now();
        let p = running(&c, t0);
        let (p, _) = step(&c, p, Event::Hold, t0);
        let (p, a) = step(&c, p, Event::Deadline, t0 + c.stop_timeout);
        assert!(p.killed && a.contains(&Action::Kill));
        let (p, _) = step(&c, p, Event::Exited(Exit::Signal(9)), t0);
        assert!(p.held_stopped() && !p.killed);
    }

    #[test]
    fn respawn_stops_then_starts_without_counting_a_failure() {
        let c = cfg();
        let t0 = Instant::now();
        let p = running(&c, t0);
        let (p, _) = step(&c, p, Event::Respawn, t0);
        assert_eq!(p.state, State::Stopping);
        let (p, a) = step(&c, p, Event::Exited(Exit::Code(0)), t0);
        assert_eq!((p.state, p.restarts, p.failures), (State::Starting, 1, 0));
        assert_eq!(a, vec![Action::Spawn]);
        // From failed, backoff or exited it starts at once.
        for state in [State::Failed, State::Backoff, State::Exited] {
            let mut q = Program::new(&c);
            q.state = state;
            q.failures = 3;
            let (q, a) = step(&c, q, Event::Respawn, t0);
            assert_eq!(
                (q.state, q.failures, a),
                (State::Starting, 0, vec![Action::Spawn])
            );
        }
    }

    #[test]
    fn shutdown_wins_over_operator_commands() {
        let c = cfg();
        let t0 = Instant::now();
        let p = running(&c, t0);
        let (p, _) = step(&c, p, Event::Stop, t0);
        let (p, _) = step(&c, p, Event::Respawn, t0);
        let (p, _) = step(&c, p, Event::Hold, t0);
        assert_eq!(p.stop_intent, Some(StopIntent::Shutdown));
        let (p, a) = step(&c, p, Event::Exited(Exit::Code(0)), t0);
        assert_eq!((p.state, p.held, a), (State::Stopped, false, vec![]));
    }

    #[test]
    fn hold_of_a_program_without_a_process() {
        let c = cfg();
        let t0 = Instant::now();
        for state in [State::Pending, State::Backoff, State::Exited, State::Failed] {
            let mut q = Program::new(&c);
            q.state = state;
            q.deadline = Some(t0);
            let (q, a) = step(&c, q, Event::Hold, t0);
            assert_eq!(
                (q.state, q.held, q.deadline, a),
                (State::Stopped, true, None, vec![])
            );
        }
    }
}
