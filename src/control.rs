//! The control socket: `hivesup ctl` talks to a running hivesup here, never through the
//! health port.
//!
//! A unix stream socket (`supervisor.control_socket`, mode 0600, so only hivesup's own
//! user and root can connect; the peer's uid is checked again on accept). One request per
//! connection, one JSON line; the answer is a stream of JSON lines ending with `done` or
//! `error`. Status and logs are served from the snapshots and the output rings; commands
//! that change something go to the supervisor's mailbox, and this module then waits, on
//! the snapshot stream, until the change is visible (a program stopped, or ready).
//! This module owns the wire format; `ctl.rs` is its client.

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nix::sys::stat::{Mode, umask};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::config::ControlSocket;
use crate::output::{LogLine, Logs};
use crate::program::State;
use crate::signals;
use crate::snapshot::{Overall, Snapshot};
use crate::supervisor::{self, Ack, Command, Message, Wait};

/// A request line longer than this is refused.
const MAX_REQUEST: u64 = 64 * 1024;
/// A client must send its request this fast (a connection that says nothing is dropped).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the kernel's backlog.
const MAX_CLIENTS: usize = 64;

/// One request: the first line a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "snake_case")]
pub enum Request {
    Status {
        name: Option<String>,
    },
    Start {
        name: String,
        #[serde(default = "yes")]
        wait: bool,
    },
    Stop {
        name: String,
        #[serde(default = "yes")]
        wait: bool,
    },
    Restart {
        name: String,
        #[serde(default = "yes")]
        wait: bool,
    },
    Signal {
        name: String,
        signal: String,
    },
    Logs {
        name: String,
        lines: usize,
        follow: bool,
    },
    Reload,
    Shutdown,
}

fn yes() -> bool {
    true
}

/// One line of the answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// A line of program output (`logs`).
    Log(LogLine),
    /// Lines a slow `logs -f` reader missed.
    Skipped(u64),
    /// The command completed; `status` carries the snapshot for `status`.
    Done {
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        status: Option<Snapshot>,
    },
    Error(String),
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("{} is in use by another running hivesup", path.display())]
    InUse { path: PathBuf },
    #[error("{} exists and is not a socket; not touching it", path.display())]
    NotASocket { path: PathBuf },
    #[error("failed to create the control socket {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Binds the control socket. A socket left behind by a hivesup that is gone (the
/// container was killed) is replaced; one that still answers is not.
pub fn bind(socket: &ControlSocket) -> Result<UnixListener, BindError> {
    let path = &socket.path;
    let io = |source| BindError::Io {
        path: path.clone(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(BindError::InUse { path: path.clone() });
            }
            std::fs::remove_file(path).map_err(io)?;
        }
        Ok(_) => return Err(BindError::NotASocket { path: path.clone() }),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
    }
    // The socket is created 0600 from the start: with a chmod after bind there would be
    // a moment in which others could connect. Nothing else creates files at this point.
    let old = umask(Mode::from_bits_truncate(0o177));
    let bound = std::os::unix::net::UnixListener::bind(path);
    umask(old);
    let listener = bound.map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    listener.set_nonblocking(true).map_err(io)?;
    UnixListener::from_std(listener).map_err(io)
}

/// What the server needs from the rest of hivesup.
#[derive(Clone)]
pub struct Context {
    pub mailbox: mpsc::UnboundedSender<Message>,
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    pub logs: Arc<Logs>,
}

/// Serves until the task is aborted.
pub async fn serve(listener: UnixListener, ctx: Context) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
    let me = nix::unistd::geteuid().as_raw();
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "control socket: accept failed");
                // EMFILE and friends: do not spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            connection(stream, ctx, me).await;
        });
    }
}

async fn connection(stream: UnixStream, ctx: Context, me: u32) {
    let cred = stream.peer_cred();
    let (read, mut write) = stream.into_split();
    // Mode 0600 already keeps others out; this holds even if someone loosens the mode.
    if let Ok(cred) = cred {
        if cred.uid() != 0 && cred.uid() != me {
            let _ = send(
                &mut write,
                &Reply::Error(format!(
                    "permission denied: uid {} may not control this hivesup (only uid 0 and {me})",
                    cred.uid()
                )),
            )
            .await;
            return;
        }
    }
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(MAX_REQUEST);
    let request = match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await {
        Err(_) => Err("no request within 5s".to_string()),
        Ok(Err(e)) => Err(format!("failed to read the request: {e}")),
        Ok(Ok(_)) if !line.ends_with('\n') => Err(format!(
            "the request must be one line of at most {MAX_REQUEST} bytes"
        )),
        Ok(Ok(_)) => {
            serde_json::from_str::<Request>(&line).map_err(|e| format!("not a valid request: {e}"))
        }
    };
    let replies = match request {
        Ok(req) => handle(req, &ctx, &mut reader, &mut write).await,
        Err(e) => Err(e),
    };
    let last = match replies {
        Ok(done) => done,
        Err(e) => Reply::Error(e),
    };
    let _ = send(&mut write, &last).await;
}

async fn send(w: &mut (impl AsyncWrite + Unpin), reply: &Reply) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line).await?;
    w.flush().await
}

/// Handles one request; returns the final reply (`done`), streaming any before it.
async fn handle(
    req: Request,
    ctx: &Context,
    client: &mut (impl AsyncRead + Unpin),
    out: &mut (impl AsyncWrite + Unpin),
) -> Result<Reply, String> {
    let done = |message: String| Reply::Done {
        message,
        status: None,
    };
    match req {
        Request::Status { name } => {
            let mut snap = ctx.snapshots.borrow().at(SystemTime::now());
            if let Some(name) = name {
                snap.programs.retain(|n, _| *n == name);
                if snap.programs.is_empty() {
                    return Err(no_such_program(&ctx.snapshots.borrow(), &name));
                }
            }
            Ok(Reply::Done {
                message: format!("{:?}", snap.status).to_lowercase(),
                status: Some(snap),
            })
        }
        Request::Logs {
            name,
            lines,
            follow,
        } => {
            if !ctx.snapshots.borrow().programs.contains_key(&name) {
                return Err(no_such_program(&ctx.snapshots.borrow(), &name));
            }
            let (tail, feed) = ctx.logs.tail_and_follow(&name, lines);
            for line in tail {
                send(out, &Reply::Log((*line).clone()))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            if follow {
                follow_logs(&name, feed, ctx.snapshots.clone(), client, out).await?;
            }
            Ok(done(String::new()))
        }
        Request::Start { name, wait } => command(ctx, Command::Start(name), wait).await.map(done),
        Request::Stop { name, wait } => command(ctx, Command::Stop(name), wait).await.map(done),
        Request::Restart { name, wait } => {
            command(ctx, Command::Restart(name), wait).await.map(done)
        }
        Request::Signal { name, signal } => {
            let sig = signals::parse_signal(&signal).map_err(|e| e.to_string())?;
            command(ctx, Command::Signal(name, sig), false)
                .await
                .map(done)
        }
        Request::Reload => command(ctx, Command::Reload, false).await.map(done),
        Request::Shutdown => command(ctx, Command::Shutdown, false).await.map(done),
    }
}

fn no_such_program(snap: &Snapshot, name: &str) -> String {
    supervisor::no_such_program(name, snap.programs.keys().map(String::as_str))
}

/// Streams new lines of one program until hivesup stops or the client goes away.
async fn follow_logs(
    name: &str,
    mut feed: broadcast::Receiver<Arc<LogLine>>,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    client: &mut (impl AsyncRead + Unpin),
    out: &mut (impl AsyncWrite + Unpin),
) -> Result<(), String> {
    let mut buf = [0u8; 64];
    loop {
        let reply = tokio::select! {
            // The client says nothing more; EOF (or an error) means it went away.
            n = client.read(&mut buf) => match n {
                Ok(0) | Err(_) => return Err("client went away".into()),
                Ok(_) => continue,
            },
            line = feed.recv() => match line {
                Ok(l) if l.program == name => Reply::Log((*l).clone()),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => Reply::Skipped(n),
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            changed = snapshots.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                continue;
            }
        };
        // A client that went away ends the follow.
        if send(out, &reply).await.is_err() {
            return Err("client went away".into());
        }
    }
}

/// Sends a command to the supervisor and, if asked, waits until its effect is visible.
async fn command(ctx: &Context, command: Command, wait: bool) -> Result<String, String> {
    let (tx, rx) = oneshot::channel();
    let mut snapshots = ctx.snapshots.clone();
    ctx.mailbox
        .send(Message::Control { command, reply: tx })
        .map_err(|_| "hivesup is stopping".to_string())?;
    let ack = rx.await.map_err(|_| "hivesup is stopping".to_string())??;
    match (&ack.wait, wait) {
        (Some(_), true) => wait_for(&mut snapshots, &ack).await,
        _ => Ok(ack.message),
    }
}

async fn wait_for(
    snapshots: &mut watch::Receiver<Arc<Snapshot>>,
    ack: &Ack,
) -> Result<String, String> {
    loop {
        let snap = snapshots.borrow_and_update().clone();
        if snap.seq >= ack.after {
            if let Some(verdict) = judge(&snap, ack) {
                return verdict;
            }
        }
        if snapshots.changed().await.is_err() {
            return Err("hivesup stopped".into());
        }
    }
}

/// Whether a snapshot shows the command done (`Ok`), failed (`Err`), or not yet (`None`).
pub fn judge(snap: &Snapshot, ack: &Ack) -> Option<Result<String, String>> {
    let wait = ack.wait.as_ref()?;
    let name = match wait {
        Wait::Stopped(n) | Wait::Ready(n) => n,
    };
    let Some(p) = snap.programs.get(name) else {
        return Some(Err(format!("{name} was removed by a reload")));
    };
    let exit = p
        .last_exit
        .as_ref()
        .map(|e| match (&e.code, &e.signal) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(s)) => format!("killed by {s}"),
            _ => "-".into(),
        })
        .unwrap_or_else(|| "-".into());
    let reason = || p.last_probe_error.clone().unwrap_or_else(|| exit.clone());
    match wait {
        Wait::Stopped(_) => (p.pid.is_none()
            && matches!(p.state, State::Stopped | State::Exited | State::Failed))
        .then(|| Ok(format!("{name} stopped ({exit})"))),
        Wait::Ready(_) => {
            if snap.status == Overall::Stopping {
                return Some(Err("hivesup is shutting down".into()));
            }
            match p.state {
                State::Running if p.ready => Some(Ok(format!(
                    "{name} is running (pid {})",
                    p.pid.map_or("-".into(), |p| p.to_string())
                ))),
                State::Exited if p.last_exit.as_ref().and_then(|e| e.code) == Some(0) => {
                    Some(Ok(format!("{name} ran and exited 0")))
                }
                State::Backoff => Some(Err(format!(
                    "{name} failed to start: {}; hivesup retries it",
                    reason()
                ))),
                State::Failed | State::Exited => {
                    Some(Err(format!("{name} failed to start: {}", reason())))
                }
                State::Stopped => Some(Err(format!("{name} was stopped"))),
                _ => None,
            }
        }
    }
}

/// Removes the socket file, if it is still ours.
pub fn remove(path: &Path) {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::tests::{program, snapshot};

    #[test]
    fn requests_on_the_wire() {
        let r: Request = serde_json::from_str(r#"{"verb":"stop","name":"api"}"#).unwrap();
        assert_eq!(
            r,
            Request::Stop {
                name: "api".into(),
                wait: true
            }
        );
        let r: Request = serde_json::from_str(r#"{"verb":"reload"}"#).unwrap();
        assert_eq!(r, Request::Reload);
        assert!(serde_json::from_str::<Request>(r#"{"verb":"explode"}"#).is_err());
    }

    fn ack(wait: Wait) -> Ack {
        Ack {
            message: String::new(),
            after: 0,
            wait: Some(wait),
        }
    }

    #[test]
    fn judging_a_wait() {
        let mut snap = snapshot(Overall::Ok);
        let stopped = ack(Wait::Stopped("db".into()));
        let ready = ack(Wait::Ready("db".into()));
        // Running and ready: a start is done, a stop is not.
        assert_eq!(judge(&snap, &stopped), None);
        assert!(matches!(judge(&snap, &ready), Some(Ok(_))));
        let mut p = program(State::Stopped, true);
        p.pid = None;
        snap.programs.insert("db".into(), p);
        assert!(matches!(judge(&snap, &stopped), Some(Ok(_))));
        assert!(matches!(judge(&snap, &ready), Some(Err(_))));
        snap.programs
            .insert("db".into(), program(State::Backoff, false));
        let Some(Err(e)) = judge(&snap, &ready) else {
            panic!()
        };
        assert!(e.contains("Connection refused"), "{e}");
        snap.programs.remove("db");
        assert!(matches!(judge(&snap, &ready), Some(Err(_))));
    }
}
