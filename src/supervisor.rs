//! The supervisor: the one owner of program state.
//!
//! An actor: it `select!`s on its mailbox (child exits, probe results, signals), on an
//! external shutdown future and on its next deadline, handles one event, lets
//! [`program::step`] decide, carries out the resulting actions, and publishes a snapshot.
//! No polling tick drives it. Programs start by priority groups (lower first); a group
//! starts only when every lower one is ready, and shutdown stops groups in reverse order,
//! each after the previous one has fully exited.
//!
//! Operator commands (`hivesup ctl`, through `control.rs`) arrive as [`Message::Control`]
//! and are events like any other, so two commands on one program are serialised here and
//! a program is never started twice. A reload validates the whole new config first and
//! changes nothing when it is invalid.

use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::AbortHandle;
use tokio::time::sleep_until;

use crate::config::{self, Config, ProgramConfig, ReadyCheck};
use crate::output::{Logs, Output, Stream};
use crate::probe::{self, NotifySocket};
use crate::procs;
use crate::program::{self, Action, Event, Program, State};
use crate::reaper::{Exit, Reaper};
use crate::signals;
use crate::snapshot::{self, Overall, ProgramSnapshot, Snapshot};
use crate::spawn::{self, SpawnSpec};

/// Messages into the supervisor's mailbox.
#[derive(Debug)]
pub enum Message {
    /// The program's main process exited; what it left behind may still be stopping.
    MainExited {
        idx: usize,
        pid: u32,
    },
    /// The program's main process and everything it left behind are gone.
    Exited {
        idx: usize,
        pid: u32,
        exit: Exit,
        leftovers_killed: bool,
    },
    Ready {
        idx: usize,
        pid: u32,
    },
    NotReady {
        idx: usize,
        pid: u32,
        error: String,
    },
    Health {
        idx: usize,
        pid: u32,
        result: Result<(), String>,
    },
    Signal(Signal),
    /// An operator's command; the reply says what happened and what to wait for.
    Control {
        command: Command,
        reply: oneshot::Sender<Result<Ack, String>>,
    },
}

/// What `hivesup ctl` can ask the supervisor to do. Status and logs need no supervisor:
/// they are read from snapshots and the output rings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Start(String),
    Stop(String),
    Restart(String),
    Signal(String, Signal),
    Reload,
    Shutdown,
}

/// The supervisor's answer to a [`Command`] it accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub message: String,
    /// The command is complete once a snapshot of at least this sequence number shows it.
    pub after: u64,
    pub wait: Option<Wait>,
}

/// What a command's caller waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// The program has no process left.
    Stopped(String),
    /// The program is running and ready (a oneshot: exited 0).
    Ready(String),
}

/// How long leftovers of an exited program get to disappear after SIGKILL.
const LEFTOVER_GRACE: Duration = Duration::from_secs(2);
/// After the shutdown timeout everything got SIGKILL; this much longer we wait for the
/// kernel to deliver it (a process in uninterruptible sleep may take a moment).
const KILL_GRACE: Duration = Duration::from_secs(2);

struct Slot {
    cfg: Arc<ProgramConfig>,
    name: Arc<str>,
    state: Program,
    tasks: Vec<AbortHandle>,
    notify: Option<NotifySocket>,
    started_wall: Option<SystemTime>,
    instance: Option<Instance>,
    /// A changed definition (reload) that takes over at the next spawn.
    next_cfg: Option<Arc<ProgramConfig>>,
    /// Removed by a reload: stopping or gone, no longer part of any group.
    retired: bool,
}

impl Slot {
    fn new(p: &ProgramConfig) -> Slot {
        Slot {
            cfg: Arc::new(p.clone()),
            name: Arc::from(p.name.as_str()),
            state: Program::new(p),
            tasks: Vec::new(),
            notify: None,
            started_wall: None,
            instance: None,
            next_cfg: None,
            retired: false,
        }
    }
}

/// What the supervisor and the exit watcher of one running process share.
struct Instance {
    /// Clock ticks since boot just before the spawn: leftovers started after it.
    since: u64,
    /// The stop signal went to the group already: its members need no second one.
    stop_sent: Arc<AtomicBool>,
}

struct Shutdown {
    deadline: Instant,
    forced: bool,
}

pub struct Supervisor {
    slots: Vec<Slot>,
    /// Indices into `slots`, grouped by ascending priority.
    groups: Vec<(u32, Vec<usize>)>,
    released: usize,
    shutdown_timeout: Duration,
    reaper: Arc<Reaper>,
    tx: mpsc::UnboundedSender<Message>,
    rx: mpsc::UnboundedReceiver<Message>,
    snapshot: watch::Sender<Arc<Snapshot>>,
    output: Output,
    shutdown: Option<Shutdown>,
    give_up_code: Option<i32>,
    runtime_dir: Option<PathBuf>,
    me: u32,
    config: Config,
    /// Snapshots published so far.
    seq: u64,
}

/// What the outside world holds: a way to send messages and the snapshot stream.
pub struct Handle {
    pub mailbox: mpsc::UnboundedSender<Message>,
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    pub logs: Arc<Logs>,
}

impl Supervisor {
    pub fn new(config: &Config, reaper: Arc<Reaper>) -> (Self, Handle) {
        let (tx, rx) = mpsc::unbounded_channel();
        let slots: Vec<Slot> = config.programs.iter().map(Slot::new).collect();
        let (snap_tx, snap_rx) = watch::channel(Arc::new(Snapshot {
            status: Overall::Starting,
            programs: Default::default(),
            orphans_reaped: Some(reaper.orphan_counter()),
            seq: 0,
        }));
        let output = Output::start(config.supervisor.log_format);
        let logs = output.logs();
        let mut sup = Supervisor {
            slots,
            groups: Vec::new(),
            released: 0,
            shutdown_timeout: config.supervisor.shutdown_timeout,
            reaper,
            tx: tx.clone(),
            rx,
            snapshot: snap_tx,
            output,
            shutdown: None,
            give_up_code: None,
            runtime_dir: None,
            me: std::process::id(),
            config: config.clone(),
            seq: 0,
        };
        sup.regroup();
        sup.publish();
        (
            sup,
            Handle {
                mailbox: tx,
                snapshots: snap_rx,
                logs,
            },
        )
    }

    /// Groups the live programs by ascending priority. A group counts as released once
    /// none of its members waits to be started.
    fn regroup(&mut self) {
        let live: Vec<usize> = (0..self.slots.len())
            .filter(|&i| !self.slots[i].retired)
            .collect();
        let mut priorities: Vec<u32> = live.iter().map(|&i| self.slots[i].cfg.priority).collect();
        priorities.sort_unstable();
        priorities.dedup();
        self.groups = priorities
            .into_iter()
            .map(|prio| {
                let members = live
                    .iter()
                    .copied()
                    .filter(|&i| self.slots[i].cfg.priority == prio)
                    .collect();
                (prio, members)
            })
            .collect();
        self.released = self
            .groups
            .iter()
            .take_while(|(_, members)| {
                members
                    .iter()
                    .all(|&i| self.slots[i].state.state != State::Pending)
            })
            .count();
    }

    /// Runs until everything has stopped; returns hivesup's exit code.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> i32 {
        tokio::pin!(shutdown);
        let mut shutdown_seen = false;
        self.release(Instant::now());
        self.publish();
        while !self.done() {
            let deadline = self.next_deadline();
            tokio::select! {
                Some(msg) = self.rx.recv() => self.handle(msg, Instant::now()),
                _ = &mut shutdown, if !shutdown_seen => {
                    shutdown_seen = true;
                    self.begin_shutdown("shutdown requested", Instant::now());
                }
                _ = sleep_until(deadline.unwrap_or_else(far_future).into()), if deadline.is_some() => {
                    self.on_deadline(Instant::now());
                }
            }
            let now = Instant::now();
            self.release(now);
            self.advance_shutdown(now);
            self.publish();
        }
        self.finish().await
    }

    fn handle(&mut self, msg: Message, now: Instant) {
        match msg {
            Message::Exited {
                idx,
                pid,
                exit,
                leftovers_killed,
            } if self.slots[idx].state.pid == Some(pid) => {
                if leftovers_killed {
                    self.apply(idx, Event::LeftoversKilled, now);
                }
                self.apply(idx, Event::Exited(exit), now)
            }
            Message::MainExited { idx, pid } if self.slots[idx].state.pid == Some(pid) => {
                self.apply(idx, Event::MainExited, now)
            }
            Message::Ready { idx, pid } if self.slots[idx].state.pid == Some(pid) => {
                self.apply(idx, Event::Ready, now)
            }
            Message::NotReady { idx, pid, error } if self.slots[idx].state.pid == Some(pid) => {
                self.apply(idx, Event::NotReady { error }, now)
            }
            Message::Health { idx, pid, result } if self.slots[idx].state.pid == Some(pid) => {
                let event = match result {
                    Ok(()) => Event::HealthOk,
                    Err(error) => Event::HealthFailed { error },
                };
                self.apply(idx, event, now);
            }
            Message::Control { command, reply } => {
                let result = self.control(command, now);
                if let Err(e) = &result {
                    tracing::warn!(error = %e, "control command refused");
                }
                let _ = reply.send(result);
            }
            Message::Signal(Signal::SIGHUP) if self.config.supervisor.reload_on_sighup => {
                match self.reload(now) {
                    Ok(ack) => tracing::info!("SIGHUP: {}", ack.message),
                    Err(e) => tracing::error!("SIGHUP: {e}"),
                }
            }
            Message::Signal(sig) if signals::STOP.contains(&sig) => {
                if self.shutdown.is_some() {
                    tracing::info!(signal = sig.as_str(), "already stopping");
                } else {
                    self.begin_shutdown(sig.as_str(), now);
                }
            }
            Message::Signal(sig) => self.forward(sig),
            // A probe result for a process that is gone.
            _ => {}
        }
    }

    /// Feeds one event to a program and carries out what the transition asks for.
    fn apply(&mut self, idx: usize, event: Event, now: Instant) {
        let mut queue = VecDeque::from([event]);
        while let Some(ev) = queue.pop_front() {
            let slot = &mut self.slots[idx];
            let before = slot.state.clone();
            let (next, actions) = program::step(&slot.cfg, before.clone(), ev, now);
            slot.state = next;
            self.log_transition(idx, &before);
            for action in actions {
                match action {
                    Action::Spawn => queue.push_back(self.spawn_program(idx)),
                    Action::WatchReady => self.watch_ready(idx),
                    Action::WatchHealth => self.watch_health(idx),
                    Action::CancelProbes => {
                        for t in self.slots[idx].tasks.drain(..) {
                            t.abort();
                        }
                    }
                    Action::Signal(sig) => self.signal_group(idx, sig),
                    Action::Kill => self.kill_tree(idx),
                    Action::GiveUp { code } => {
                        tracing::error!(program = %self.slots[idx].name, code, "critical program failed: stopping everything");
                        self.give_up_code.get_or_insert(code);
                        self.begin_shutdown("critical program failed", now);
                    }
                }
            }
        }
    }

    fn log_transition(&self, idx: usize, before: &Program) {
        let slot = &self.slots[idx];
        let p = &slot.state;
        let name = &*slot.name;
        // The health probe's verdict, while the same process keeps running: /health turns
        // 503 (or 200 again) and the log says why.
        if p.state == State::Running && before.state == State::Running && p.pid == before.pid {
            if before.healthy && !p.healthy {
                tracing::warn!(
                    program = name,
                    pid = p.pid,
                    failures = p.health_failures,
                    error = p.last_error.as_deref().unwrap_or(""),
                    "unhealthy"
                );
            } else if !before.healthy && p.healthy {
                tracing::info!(program = name, pid = p.pid, "healthy again");
            }
        }
        if p.state == before.state && p.pid == before.pid {
            return;
        }
        match p.state {
            State::Starting if p.pid.is_some() && before.pid.is_none() => {
                tracing::info!(program = name, pid = p.pid, "started")
            }
            State::Running if before.state != State::Running => {
                tracing::info!(program = name, pid = p.pid, "ready")
            }
            State::Exited => {
                tracing::info!(program = name, exit = %fmt_exit(p.last_exit), "exited")
            }
            State::Backoff => tracing::warn!(
                program = name,
                exit = %fmt_exit(p.last_exit),
                reason = p.last_error.as_deref().unwrap_or(""),
                restart_in = %humantime::format_duration(round_ms(
                    p.deadline.map_or(Duration::ZERO, |d| d.saturating_duration_since(Instant::now()))
                )),
                "failed; restarting"
            ),
            State::Failed => {
                tracing::error!(
                    program = name,
                    reason = p.last_error.as_deref().unwrap_or(""),
                    "failed; not restarting"
                );
                if let Some(&(prio, _)) = self.groups.get(self.released) {
                    if self.shutdown.is_none() && slot.cfg.priority < prio {
                        tracing::error!(
                            priority = prio,
                            "programs of priority {prio} and above will not start: {name} failed"
                        );
                    }
                }
            }
            State::Stopping if p.killed && !before.killed => {
                tracing::warn!(
                    program = name,
                    pid = p.pid,
                    "did not stop in time: sent SIGKILL"
                )
            }
            State::Stopping => tracing::info!(program = name, pid = p.pid, "stopping"),
            State::Stopped if before.pid.is_some() => {
                tracing::info!(program = name, exit = %fmt_exit(p.last_exit), "stopped")
            }
            _ => {}
        }
    }

    fn spawn_program(&mut self, idx: usize) -> Event {
        if let Some(next) = self.slots[idx].next_cfg.take() {
            self.slots[idx].cfg = next;
        }
        let cfg = self.slots[idx].cfg.clone();
        let name = self.slots[idx].name.clone();
        // Secrets are read at each start, so a rotated file reaches the next one.
        let mut env = match cfg.resolve_environment() {
            Ok(env) => env,
            Err(e) => {
                let error = error_chain(&e);
                tracing::error!(program = %name, error = %error, "failed to start");
                return Event::SpawnFailed { error, code: 1 };
            }
        };
        if matches!(
            cfg.ready.as_ref().map(|r| &r.check),
            Some(ReadyCheck::Notify)
        ) {
            match self.notify_socket(idx) {
                Ok(path) => env.push(("NOTIFY_SOCKET".into(), path)),
                Err(e) => {
                    let error = format!("failed to create the notify socket: {e}");
                    tracing::error!(program = %name, "{error}");
                    return Event::SpawnFailed { error, code: 1 };
                }
            }
        }
        let spec = SpawnSpec {
            argv: cfg.command.argv(),
            env,
            directory: cfg.directory.clone(),
            user: cfg.user.clone(),
            capture_output: true,
            ..SpawnSpec::default()
        };
        let since = procs::now_ticks();
        match spawn::spawn(&self.reaper, &spec) {
            Ok(child) => {
                let pid = child.pid;
                if let Some(out) = child.stdout {
                    self.output.pump(&name, Stream::Stdout, out.into());
                }
                if let Some(err) = child.stderr {
                    self.output.pump(&name, Stream::Stderr, err.into());
                }
                self.slots[idx].started_wall = Some(SystemTime::now());
                let stop_sent = Arc::new(AtomicBool::new(false));
                self.slots[idx].instance = Some(Instance {
                    since,
                    stop_sent: stop_sent.clone(),
                });
                let watcher = ExitWatcher {
                    reaper: self.reaper.clone(),
                    program: name.clone(),
                    me: self.me,
                    pid,
                    since,
                    stop_signal: cfg.stop_signal,
                    stop_timeout: cfg.stop_timeout,
                    stop_sent,
                };
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    // The reaper never drops a registered sender without sending.
                    let Ok(exit) = child.exit.await else { return };
                    let _ = tx.send(Message::MainExited { idx, pid });
                    let leftovers_killed = watcher.clear_leftovers().await;
                    let _ = tx.send(Message::Exited {
                        idx,
                        pid,
                        exit,
                        leftovers_killed,
                    });
                });
                Event::Spawned { pid }
            }
            Err(e) => {
                let error = error_chain(&e);
                tracing::error!(program = %name, error = %error, "failed to start");
                Event::SpawnFailed {
                    error,
                    code: e.exit_code(),
                }
            }
        }
    }

    fn notify_socket(&mut self, idx: usize) -> std::io::Result<String> {
        if self.slots[idx].notify.is_none() {
            let dir = match &self.runtime_dir {
                Some(d) => d.clone(),
                None => {
                    let d = runtime_dir()?;
                    self.runtime_dir = Some(d.clone());
                    d
                }
            };
            let cfg = &self.slots[idx].cfg;
            let owner = match &cfg.user {
                Some(u) if nix::unistd::geteuid().is_root() => {
                    spawn::resolve_user(u).ok().map(|c| (c.uid, c.gid))
                }
                _ => None,
            };
            let path = dir.join(format!("notify-{}.sock", cfg.name));
            self.slots[idx].notify = Some(NotifySocket::bind(&path, owner)?);
        }
        let sock = self.slots[idx].notify.as_ref().expect("just created");
        sock.drain();
        Ok(sock.path.display().to_string())
    }

    fn watch_ready(&mut self, idx: usize) {
        let slot = &self.slots[idx];
        let (Some(pid), Some(ready)) = (slot.state.pid, slot.cfg.ready.clone()) else {
            return;
        };
        let tx = self.tx.clone();
        let task = match ready.check {
            ReadyCheck::Notify => {
                let Some(sock) = &slot.notify else { return };
                let watch = sock.watch();
                let sink = sock.sink();
                tokio::spawn(async move {
                    match watch.await {
                        Ok(()) => {
                            let _ = tx.send(Message::Ready { idx, pid });
                            sink.await;
                        }
                        Err(e) => {
                            let _ = tx.send(Message::NotReady {
                                idx,
                                pid,
                                error: format!("notify socket: {e}"),
                            });
                        }
                    }
                })
            }
            ReadyCheck::Probe(p) => {
                let ctx = self.probe_context(idx);
                let attempt = ready.timeout.min(Duration::from_secs(5));
                tokio::spawn(async move {
                    loop {
                        let started = Instant::now();
                        match probe::check(&p, &ctx, attempt).await {
                            Ok(()) => {
                                let _ = tx.send(Message::Ready { idx, pid });
                                return;
                            }
                            Err(error) => {
                                let _ = tx.send(Message::NotReady { idx, pid, error });
                            }
                        }
                        sleep_until((started + ready.interval).into()).await;
                    }
                })
            }
        };
        self.slots[idx].tasks.push(task.abort_handle());
    }

    fn watch_health(&mut self, idx: usize) {
        let slot = &self.slots[idx];
        let (Some(pid), Some(health)) = (slot.state.pid, slot.cfg.health.clone()) else {
            return;
        };
        let tx = self.tx.clone();
        let ctx = self.probe_context(idx);
        let task = tokio::spawn(async move {
            let mut next = Instant::now() + health.interval;
            loop {
                sleep_until(next.into()).await;
                next += health.interval;
                let result = probe::check(&health.probe, &ctx, health.timeout).await;
                if tx.send(Message::Health { idx, pid, result }).is_err() {
                    return;
                }
                // A probe slower than its interval must not queue up behind itself.
                next = next.max(Instant::now());
            }
        });
        self.slots[idx].tasks.push(task.abort_handle());
    }

    fn probe_context(&self, idx: usize) -> probe::Context {
        let cfg = &self.slots[idx].cfg;
        probe::Context {
            reaper: self.reaper.clone(),
            base: SpawnSpec {
                // The program's own environment, secrets included (read again: the program
                // started with them a moment ago).
                env: cfg.resolve_environment().unwrap_or_else(|e| {
                    tracing::warn!(program = %cfg.name, error = %error_chain(&e), "probe runs without the program's secrets");
                    cfg.plain_environment()
                }),
                directory: cfg.directory.clone(),
                user: cfg.user.clone(),
                ..SpawnSpec::default()
            },
        }
    }

    fn signal_group(&self, idx: usize, sig: Signal) {
        let Some(pid) = self.slots[idx].state.pid else {
            return;
        };
        if let Some(inst) = &self.slots[idx].instance {
            if sig == self.slots[idx].cfg.stop_signal {
                inst.stop_sent.store(true, Ordering::SeqCst);
            }
        }
        match killpg(Pid::from_raw(pid as i32), sig) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => {
                tracing::warn!(program = %self.slots[idx].name, pid, signal = sig.as_str(), error = %e, "failed to signal")
            }
        }
    }

    /// SIGKILL to the program's group and to every descendant, including those that
    /// left the group with setsid (postgres backends).
    fn kill_tree(&self, idx: usize) {
        let Some(pid) = self.slots[idx].state.pid else {
            return;
        };
        let tree = procs::Tree::read();
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        let mut victims = tree.descendants(pid);
        // The main process may be gone already, its leftovers still lingering.
        if let Some(inst) = &self.slots[idx].instance {
            victims.extend(tree.leftovers(self.me, pid, inst.since, |p| {
                p == pid || self.reaper.is_spawned(p)
            }));
        }
        for d in victims {
            let _ = kill(Pid::from_raw(d.pid as i32), Signal::SIGKILL);
        }
    }

    fn forward(&self, sig: Signal) {
        let mut sent = 0;
        for (idx, slot) in self.slots.iter().enumerate() {
            if !slot.retired && slot.state.pid.is_some() && slot.cfg.forward_signals.contains(&sig)
            {
                self.signal_group(idx, sig);
                sent += 1;
            }
        }
        tracing::info!(signal = sig.as_str(), programs = sent, "forwarded signal");
    }

    /// Starts every group whose lower groups are all ready.
    fn release(&mut self, now: Instant) {
        while self.shutdown.is_none() && self.released < self.groups.len() {
            let lower_ready = self.groups[..self.released]
                .iter()
                .flat_map(|(_, members)| members)
                .all(|&i| self.slots[i].state.gate_open());
            if !lower_ready {
                return;
            }
            let (prio, members) = self.groups[self.released].clone();
            self.released += 1;
            let names: Vec<&str> = members.iter().map(|&i| &*self.slots[i].name).collect();
            tracing::info!(priority = prio, programs = %names.join(","), "starting priority group");
            for i in members {
                self.apply(i, Event::Start, now);
            }
        }
    }

    /// Carries out an operator's command (see [`Command`]).
    fn control(&mut self, command: Command, now: Instant) -> Result<Ack, String> {
        if self.shutdown.is_some() {
            return Err("hivesup is shutting down".into());
        }
        // The snapshot published after this message shows the command's effect.
        let after = self.seq + 1;
        let ack = |message: String, wait: Option<Wait>| {
            Ok(Ack {
                message,
                after,
                wait,
            })
        };
        match command {
            Command::Shutdown => {
                self.begin_shutdown("hivesup ctl shutdown", now);
                ack("stopping all programs".into(), None)
            }
            Command::Reload => self.reload(now),
            Command::Start(name) => {
                let idx = self.find(&name)?;
                let p = &self.slots[idx].state;
                let wait = Some(Wait::Ready(name.clone()));
                match p.state {
                    State::Pending => Err(format!(
                        "{name} has not started yet: it starts when every lower priority is ready"
                    )),
                    State::Running => ack(format!("{name} is already running"), None),
                    State::Starting => ack(format!("{name} is already starting"), wait),
                    State::Stopping => {
                        tracing::info!(program = %name, "ctl start: will start again once stopped");
                        self.apply(idx, Event::Respawn, now);
                        ack(format!("{name} is stopping; it will start again"), wait)
                    }
                    _ => {
                        tracing::info!(program = %name, "ctl start");
                        self.apply(idx, Event::Release, now);
                        ack(format!("{name} started"), wait)
                    }
                }
            }
            Command::Stop(name) => {
                let idx = self.find(&name)?;
                if self.slots[idx].state.held_stopped() {
                    return ack(format!("{name} is already stopped"), None);
                }
                tracing::info!(program = %name, "ctl stop");
                self.apply(idx, Event::Hold, now);
                ack(format!("{name} stopped"), Some(Wait::Stopped(name)))
            }
            Command::Restart(name) => {
                let idx = self.find(&name)?;
                if self.slots[idx].state.state == State::Pending {
                    return Err(format!(
                        "{name} has not started yet: it starts when every lower priority is ready"
                    ));
                }
                tracing::info!(program = %name, "ctl restart");
                self.apply(idx, Event::Respawn, now);
                ack(format!("{name} restarted"), Some(Wait::Ready(name)))
            }
            Command::Signal(name, sig) => {
                let idx = self.find(&name)?;
                let Some(pid) = self.slots[idx].state.pid else {
                    return Err(format!(
                        "{name} is not running ({})",
                        self.slots[idx].state.state.as_str()
                    ));
                };
                tracing::info!(program = %name, pid, signal = sig.as_str(), "ctl signal");
                self.signal_group(idx, sig);
                ack(format!("sent {} to {name} (pid {pid})", sig.as_str()), None)
            }
        }
    }

    /// The live program called `name`.
    fn find(&self, name: &str) -> Result<usize, String> {
        self.slots
            .iter()
            .position(|s| !s.retired && &*s.name == name)
            .ok_or_else(|| {
                no_such_program(
                    name,
                    self.slots.iter().filter(|s| !s.retired).map(|s| &*s.name),
                )
            })
    }

    /// Re-reads the config file: validates all of it first (a bad file changes nothing),
    /// then stops removed programs, restarts changed ones and starts added ones, by
    /// priority. Added programs wait for the priority gate like any other.
    fn reload(&mut self, now: Instant) -> Result<Ack, String> {
        let path = self.config.path.clone();
        let mut new = config::load(&path)
            .map_err(|e| format!("reload refused, nothing changed:\n{}", error_chain(&e)))?;
        spawn::apply_user_switch(&mut new);
        let problems: Vec<String> = new.programs.iter().flat_map(spawn::preflight).collect();
        if !problems.is_empty() {
            return Err(format!(
                "reload refused, nothing changed:\n{}",
                problems
                    .iter()
                    .map(|p| format!("{}: {p}", path.display()))
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
        let mut removed = Vec::new();
        let mut changed = Vec::new();
        let mut added = Vec::new();
        // Removed ones stop highest priority first, as in a shutdown.
        let mut gone: Vec<usize> = (0..self.slots.len())
            .filter(|&i| {
                !self.slots[i].retired
                    && !new.programs.iter().any(|p| *p.name == *self.slots[i].name)
            })
            .collect();
        gone.sort_by_key(|&i| std::cmp::Reverse(self.slots[i].cfg.priority));
        for i in gone {
            self.apply(i, Event::Hold, now);
            self.slots[i].retired = true;
            removed.push(self.slots[i].name.to_string());
        }
        let mut wanted: Vec<&ProgramConfig> = new.programs.iter().collect();
        wanted.sort_by_key(|p| p.priority);
        for p in wanted {
            match self.find(&p.name) {
                Ok(i) if *self.slots[i].cfg != *p => {
                    changed.push(p.name.clone());
                    let slot = &mut self.slots[i];
                    let next = Arc::new(p.clone());
                    match slot.state.state {
                        // Not started, or stopped by the operator: the new definition
                        // simply waits for its start.
                        State::Pending | State::Stopped => slot.cfg = next,
                        _ => {
                            slot.next_cfg = Some(next);
                            self.apply(i, Event::Respawn, now);
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    added.push(p.name.clone());
                    self.slots.push(Slot::new(p));
                }
            }
        }
        let old = std::mem::replace(&mut self.config, new);
        for (key, differs) in [
            (
                "health_addr",
                old.supervisor.health_addr != self.config.supervisor.health_addr,
            ),
            (
                "control_socket",
                old.supervisor.control_socket != self.config.supervisor.control_socket,
            ),
            (
                "log_format",
                old.supervisor.log_format != self.config.supervisor.log_format,
            ),
        ] {
            if differs {
                tracing::warn!("supervisor.{key} changed: it takes effect when hivesup restarts");
            }
        }
        self.shutdown_timeout = self.config.supervisor.shutdown_timeout;
        self.regroup();
        let mut parts = Vec::new();
        for (what, names) in [("added", added), ("changed", changed), ("removed", removed)] {
            if !names.is_empty() {
                parts.push(format!("{what} {}", names.join(", ")));
            }
        }
        let message = if parts.is_empty() {
            "reloaded: no program changed".to_string()
        } else {
            format!("reloaded: {}", parts.join("; "))
        };
        tracing::info!("{message}");
        Ok(Ack {
            message,
            after: self.seq + 1,
            wait: None,
        })
    }

    fn begin_shutdown(&mut self, reason: &str, now: Instant) {
        if self.shutdown.is_some() {
            return;
        }
        tracing::info!(reason, timeout = %humantime::format_duration(self.shutdown_timeout), "stopping all programs");
        self.shutdown = Some(Shutdown {
            deadline: now + self.shutdown_timeout,
            forced: false,
        });
        for i in 0..self.slots.len() {
            if matches!(self.slots[i].state.state, State::Pending | State::Backoff) {
                self.apply(i, Event::Stop, now);
            }
        }
        self.advance_shutdown(now);
    }

    /// Stops the highest priority group that still has processes; lower groups wait.
    fn advance_shutdown(&mut self, now: Instant) {
        if self.shutdown.is_none() {
            return;
        }
        for g in (0..self.groups.len()).rev() {
            let members = self.groups[g].1.clone();
            if !members.iter().any(|&i| self.slots[i].state.alive()) {
                continue;
            }
            for i in members {
                if matches!(
                    self.slots[i].state.state,
                    State::Starting | State::Running | State::Stopping
                ) {
                    self.apply(i, Event::Stop, now);
                }
            }
            return;
        }
    }

    fn on_deadline(&mut self, now: Instant) {
        for i in 0..self.slots.len() {
            if self.slots[i].state.deadline.is_some_and(|d| d <= now) {
                self.apply(i, Event::Deadline, now);
            }
        }
        let overdue = self
            .shutdown
            .as_ref()
            .is_some_and(|s| !s.forced && s.deadline <= now);
        if overdue {
            tracing::warn!("shutdown timeout reached: sending SIGKILL to everything left");
            if let Some(s) = &mut self.shutdown {
                s.forced = true;
            }
            for i in 0..self.slots.len() {
                self.apply(i, Event::ForceKill, now);
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let programs = self.slots.iter().filter_map(|s| s.state.deadline);
        let shutdown = self.shutdown.as_ref().map(|s| {
            if s.forced {
                s.deadline + KILL_GRACE
            } else {
                s.deadline
            }
        });
        programs.chain(shutdown).min()
    }

    fn done(&self) -> bool {
        let Some(s) = &self.shutdown else {
            return false;
        };
        if s.forced && Instant::now() >= s.deadline + KILL_GRACE {
            tracing::error!("processes survived SIGKILL; exiting anyway");
            return true;
        }
        self.slots.iter().all(|s| !s.state.alive())
    }

    fn publish(&mut self) {
        let shutting_down = self.shutdown.is_some();
        self.seq += 1;
        let live = || self.slots.iter().filter(|s| !s.retired);
        let programs = live()
            .map(|s| {
                let p = &s.state;
                let start_time = p.pid.and(s.started_wall).map(snapshot::unix);
                (
                    s.name.to_string(),
                    ProgramSnapshot {
                        state: p.state,
                        pid: p.pid,
                        ready: p.ready,
                        healthy: p.healthy,
                        restarts: p.restarts,
                        uptime_seconds: None,
                        last_exit: p.last_exit.map(Into::into),
                        last_probe_error: p.last_error.clone(),
                        priority: s.cfg.priority,
                        start_time,
                        ok: p.ok(),
                        held: p.held_stopped(),
                    },
                )
            })
            .collect::<std::collections::BTreeMap<_, _>>();
        let status = if shutting_down {
            Overall::Stopping
        } else if live().all(|s| s.state.ok()) {
            Overall::Ok
        } else if live().any(|s| s.state.state == State::Failed) {
            Overall::Failed
        } else if live().any(|s| matches!(s.state.state, State::Pending | State::Starting)) {
            Overall::Starting
        } else {
            Overall::Degraded
        };
        let snap = Snapshot {
            status,
            programs,
            orphans_reaped: Some(self.reaper.orphan_counter()),
            seq: self.seq,
        };
        self.snapshot.send_replace(Arc::new(snap));
    }

    async fn finish(mut self) -> i32 {
        for slot in &mut self.slots {
            for t in slot.tasks.drain(..) {
                t.abort();
            }
            slot.notify = None;
        }
        // Anything still parented to us is a leftover: as PID 1 the kernel would kill it
        // when we exit; as a subreaper it would outlive us, so kill it now.
        for s in procs::Tree::read().children_of(self.me) {
            let _ = kill(Pid::from_raw(s.pid as i32), Signal::SIGKILL);
        }
        let killed: Vec<&str> = self
            .slots
            .iter()
            .filter(|s| s.state.killed)
            .map(|s| &*s.name)
            .collect();
        let code = match self.give_up_code {
            Some(c) => c,
            None if !killed.is_empty() => {
                tracing::warn!(programs = %killed.join(","), "stopped, but only with SIGKILL: exit 1");
                1
            }
            None => 0,
        };
        if let Some(dir) = &self.runtime_dir {
            let _ = std::fs::remove_dir(dir);
        }
        tracing::info!(code, "all programs stopped");
        self.publish();
        self.output.finish(Duration::from_secs(1)).await;
        code
    }
}

/// Watches one running process: once its main process exits, it deals with what the
/// program left behind (children that called setsid and were reparented to us, group
/// members still finishing), so the supervisor hears "exited" only when everything of
/// the program is gone and a restart never meets its predecessor's processes or shared
/// memory.
struct ExitWatcher {
    reaper: Arc<Reaper>,
    program: Arc<str>,
    me: u32,
    pid: u32,
    since: u64,
    stop_signal: Signal,
    stop_timeout: Duration,
    stop_sent: Arc<AtomicBool>,
}

impl ExitWatcher {
    /// Leftovers get the stop signal (unless the group had it already), `stop_timeout`
    /// to finish, then SIGKILL. Returns whether SIGKILL was needed.
    async fn clear_leftovers(&self) -> bool {
        let deadline = Instant::now() + self.stop_timeout;
        let mut signalled = false;
        let mut killed = false;
        // Each round waits for our direct children among the leftovers; their own
        // children are reparented to us when they die and show up in the next round.
        for _ in 0..64 {
            let left = procs::Tree::read()
                .leftovers(self.me, self.pid, self.since, |p| self.reaper.is_spawned(p));
            if left.is_empty() {
                return killed;
            }
            let pids: Vec<u32> = left.iter().map(|s| s.pid).collect();
            if !signalled {
                signalled = true;
                let group_had_it = self.stop_sent.load(Ordering::SeqCst);
                tracing::info!(program = %self.program, ?pids, "waiting for processes the program left behind");
                for s in &left {
                    if !(group_had_it && s.pgrp == self.pid) {
                        let _ = kill(Pid::from_raw(s.pid as i32), self.stop_signal);
                    }
                }
            }
            let overdue = Instant::now() >= deadline;
            if overdue {
                tracing::warn!(program = %self.program, ?pids, "leftovers did not stop in time: sent SIGKILL");
                killed = true;
                for p in &pids {
                    let _ = kill(Pid::from_raw(*p as i32), Signal::SIGKILL);
                }
            }
            let waits: Vec<_> = left
                .iter()
                .filter(|s| s.ppid == self.me)
                .filter_map(|s| self.reaper.watch(s.pid))
                .collect();
            let until = if overdue {
                Instant::now() + LEFTOVER_GRACE
            } else {
                deadline
            };
            let _ = tokio::time::timeout_at(until.into(), async {
                for w in waits {
                    let _ = w.await;
                }
            })
            .await;
            if overdue && Instant::now() >= until {
                tracing::error!(program = %self.program, "processes survived SIGKILL");
                return killed;
            }
        }
        killed
    }
}

fn runtime_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let candidates = [
        PathBuf::from("/run/hivesup"),
        std::env::temp_dir().join(format!("hivesup-{}", std::process::id())),
    ];
    let mut last = None;
    for dir in candidates {
        match std::fs::DirBuilder::new().mode(0o755).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {
                return Ok(dir);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no runtime directory")))
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis((d.as_secs_f64() * 1000.0).round() as u64)
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365)
}

fn fmt_exit(e: Option<Exit>) -> String {
    e.map_or_else(|| "-".into(), |e| e.to_string())
}

/// The error for a program name that is not in the config, listing those that are.
pub fn no_such_program<'a>(name: &str, names: impl IntoIterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.into_iter().collect();
    format!("no program \"{name}\" (programs: {})", names.join(", "))
}

pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
