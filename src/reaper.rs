//! The reaper: the ONLY caller of `waitpid` in hivesup.
//!
//! The kernel keeps one exit status per pid; a second reaper (tokio::process, std's
//! `Child::wait`, `Command::status`) would race `waitpid(-1)` and one side would get
//! ECHILD: either hivesup never learns a program died or std panics (kapp-controller
//! PR #1805, amalgam8 #401). So every child is spawned through [`Reaper::spawn`], which
//! registers its pid, and every exit status is routed from here by pid.
//!
//! Spawning and reaping share one gate (a std Mutex): a child that exits at once cannot be
//! reaped before its pid is registered, and std's internal wait for a child whose exec
//! failed cannot race `waitpid(-1)`.

use std::collections::HashMap;
use std::io;
use std::process::{ChildStderr, ChildStdout, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::Serialize;
use tokio::sync::oneshot;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    /// The shell's convention: the exit code, or 128+N for death by signal N.
    pub fn code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }

    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => match nix::sys::signal::Signal::try_from(*s) {
                Ok(sig) => write!(f, "killed by {}", sig.as_str()),
                Err(_) => write!(f, "killed by signal {s}"),
            },
        }
    }
}

/// A child just started; its exit status arrives on `exit`.
pub struct Spawned {
    pub pid: u32,
    pub exit: oneshot::Receiver<Exit>,
    pub stdout: Option<ChildStdout>,
    pub stderr: Option<ChildStderr>,
}

/// Who waits for a pid, and whether hivesup spawned it (a program or a probe) or only
/// watches it (a leftover reparented to us).
struct Route {
    tx: oneshot::Sender<Exit>,
    spawned: bool,
}

#[derive(Default)]
pub struct Reaper {
    gate: Mutex<HashMap<i32, Route>>,
    orphans: Arc<AtomicU64>,
}

impl Reaper {
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawns `cmd` and registers its pid before any reap can see it. The std `Child` is
    /// dropped without waiting (dropping it does not reap).
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<Spawned> {
        let mut routes = self.lock();
        let mut child = cmd.spawn()?;
        let pid = child.id();
        let (tx, rx) = oneshot::channel();
        routes.insert(pid as i32, Route { tx, spawned: true });
        drop(routes);
        Ok(Spawned {
            pid,
            exit: rx,
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
        })
    }

    /// Asks for the exit status of a process that is already our child but was not
    /// spawned here (a descendant reparented to us). `None` when it is already gone.
    pub fn watch(&self, pid: u32) -> Option<oneshot::Receiver<Exit>> {
        let mut routes = self.lock();
        // Under the gate no reap runs: if the pid still exists now, its status will be
        // routed to us.
        match kill(Pid::from_raw(pid as i32), None) {
            Err(Errno::ESRCH) => None,
            _ => {
                let (tx, rx) = oneshot::channel();
                routes.insert(pid as i32, Route { tx, spawned: false });
                Some(rx)
            }
        }
    }

    /// Whether `pid` is a program or probe hivesup spawned and has not reaped yet.
    pub fn is_spawned(&self, pid: u32) -> bool {
        self.lock().get(&(pid as i32)).is_some_and(|r| r.spawned)
    }

    /// Orphans reaped so far (children nobody registered), as a shared counter.
    pub fn orphan_counter(&self) -> Arc<AtomicU64> {
        self.orphans.clone()
    }

    /// Collects every exited child. Signals coalesce (ten exits may raise one SIGCHLD),
    /// so this drains `waitpid(-1, WNOHANG)` until nothing is left.
    pub fn reap(&self) {
        let mut routes = self.lock();
        loop {
            let (pid, exit) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, Exit::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, Exit::Signal(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "waitpid failed");
                    break;
                }
            };
            match routes.remove(&pid.as_raw()) {
                // A receiver that went away (an aborted probe) simply drops the status.
                Some(route) => {
                    let _ = route.tx.send(exit);
                }
                None => {
                    self.orphans.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(pid = pid.as_raw(), %exit, "reaped orphan");
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Route>> {
        // A poisoned gate only means another thread panicked while holding it, and a
        // panic ends the process anyway (see main's panic hook).
        self.gate.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Makes hivesup a child subreaper when it is not PID 1, so orphans of its programs are
/// reparented to it (and reaped, and found when a program is restarted) instead of going
/// to the host's init. See prctl(2), PR_SET_CHILD_SUBREAPER.
pub fn become_subreaper() -> io::Result<()> {
    if std::process::id() == 1 {
        return Ok(());
    }
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes one integer argument and touches no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(Exit::Code(0).code(), 0);
        assert_eq!(Exit::Code(255).code(), 255);
        assert_eq!(Exit::Signal(9).code(), 137);
        assert_eq!(Exit::Signal(15).code(), 143);
        assert!(Exit::Code(0).success());
        assert!(!Exit::Signal(15).success());
        assert_eq!(Exit::Signal(9).to_string(), "killed by SIGKILL");
    }
}
