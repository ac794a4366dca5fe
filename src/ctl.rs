//! `hivesup ctl`: the client of the control socket (`control.rs` owns the wire format).
//! Human output by default, `--json` for scripts. Exit codes: 0 done, 1 the command
//! failed (or, for `status`, a program is not where it should be), 3 no hivesup answers.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use clap::Subcommand;

use crate::config::{self, DEFAULT_CONTROL_SOCKET, LoadError};
use crate::control::{Reply, Request};
use crate::output::LogLine;
use crate::query;

/// Exit code when no hivesup answers on the socket.
pub const UNREACHABLE: i32 = 3;

#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    /// The control socket [default: supervisor.control_socket of the config]
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Print JSON lines instead of text
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub verb: Verb,
}

#[derive(Debug, Subcommand)]
pub enum Verb {
    /// The programs (or one) as a table; exit 1 if any shown is not where it should be
    Status { name: Option<String> },
    /// Start a stopped or failed program; waits until it is ready
    Start {
        name: String,
        /// Return once the command is accepted
        #[arg(long)]
        no_wait: bool,
    },
    /// Stop a program; it stays stopped (no restart) until `ctl start`; waits until gone
    Stop {
        name: String,
        #[arg(long)]
        no_wait: bool,
    },
    /// Stop (if running), then start; waits until ready
    Restart {
        name: String,
        #[arg(long)]
        no_wait: bool,
    },
    /// Send a signal (HUP, 1, SIGUSR1...) to the program's process group
    Signal { signal: String, name: String },
    /// The program's recent output (kept in memory, the last 1000 lines)
    Logs {
        name: String,
        /// Keep printing new lines
        #[arg(short, long)]
        follow: bool,
        /// How many lines of the past
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
    },
    /// Re-read the config: start added, stop removed, restart changed programs
    Reload,
    /// Stop every program in reverse priority order, then exit
    Shutdown,
}

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error(
        "no control socket at {}: is hivesup running? (the path comes from {}; use --socket to give another)",
        path.display(), from
    )]
    Missing { path: PathBuf, from: String },
    #[error(
        "nothing answers on {}: hivesup is not running (the socket is left from an earlier run)",
        path.display()
    )]
    Refused { path: PathBuf },
    #[error(
        "permission denied on {}{owner}: run `hivesup ctl` as root or as the user hivesup runs as",
        path.display()
    )]
    Denied { path: PathBuf, owner: String },
    #[error("failed to connect to {}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("control is disabled: supervisor.control_socket is \"\" in {}", config.display())]
    Disabled { config: PathBuf },
    #[error("no --socket given and the config cannot tell it")]
    Config(#[source] LoadError),
    #[error("the connection to hivesup broke")]
    Io(#[source] std::io::Error),
    #[error("hivesup answered something unexpected: {0}")]
    Protocol(String),
}

impl CtlError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CtlError::Missing { .. }
            | CtlError::Refused { .. }
            | CtlError::Denied { .. }
            | CtlError::Connect { .. } => UNREACHABLE,
            _ => 1,
        }
    }
}

/// `--socket`, else the config's control_socket; a config that does not exist (or cannot
/// be read, as a non-root user) means the default.
fn socket_path(config_path: &Path, flag: Option<PathBuf>) -> Result<(PathBuf, String), CtlError> {
    if let Some(p) = flag {
        return Ok((p, "--socket".into()));
    }
    match config::load(config_path) {
        Ok(c) => match c.supervisor.control_socket {
            Some(s) => Ok((
                s.path,
                format!("supervisor.control_socket in {}", config_path.display()),
            )),
            None => Err(CtlError::Disabled {
                config: config_path.to_path_buf(),
            }),
        },
        Err(LoadError::Read { .. }) => Ok((
            PathBuf::from(DEFAULT_CONTROL_SOCKET),
            format!("the default, as {} cannot be read", config_path.display()),
        )),
        Err(e) => Err(CtlError::Config(e)),
    }
}

fn connect(path: &Path, from: String) -> Result<UnixStream, CtlError> {
    UnixStream::connect(path).map_err(|source| match source.kind() {
        ErrorKind::NotFound => CtlError::Missing {
            path: path.to_path_buf(),
            from,
        },
        ErrorKind::ConnectionRefused => CtlError::Refused {
            path: path.to_path_buf(),
        },
        ErrorKind::PermissionDenied => CtlError::Denied {
            path: path.to_path_buf(),
            owner: std::fs::metadata(path)
                .map(|m| format!(" (owner uid {}, mode {:o})", m.uid(), m.mode() & 0o7777))
                .unwrap_or_default(),
        },
        _ => CtlError::Connect {
            path: path.to_path_buf(),
            source,
        },
    })
}

fn request(verb: Verb) -> Request {
    match verb {
        Verb::Status { name } => Request::Status { name },
        Verb::Start { name, no_wait } => Request::Start {
            name,
            wait: !no_wait,
        },
        Verb::Stop { name, no_wait } => Request::Stop {
            name,
            wait: !no_wait,
        },
        Verb::Restart { name, no_wait } => Request::Restart {
            name,
            wait: !no_wait,
        },
        Verb::Signal { signal, name } => Request::Signal { name, signal },
        Verb::Logs {
            name,
            follow,
            lines,
        } => Request::Logs {
            name,
            lines,
            follow,
        },
        Verb::Reload => Request::Reload,
        Verb::Shutdown => Request::Shutdown,
    }
}

/// Runs one `ctl` command; returns the exit code.
pub fn run(config_path: &Path, args: CtlArgs) -> Result<i32, CtlError> {
    let (path, from) = socket_path(config_path, args.socket)?;
    let stream = connect(&path, from)?;
    let req = request(args.verb);
    let is_status = matches!(req, Request::Status { .. });
    let mut line = serde_json::to_vec(&req).map_err(|e| CtlError::Protocol(e.to_string()))?;
    line.push(b'\n');
    (&stream).write_all(&line).map_err(CtlError::Io)?;
    let stdout = std::io::stdout();
    let mut reader = BufReader::new(&stream);
    let mut buf = String::new();
    loop {
        buf.clear();
        if reader.read_line(&mut buf).map_err(CtlError::Io)? == 0 {
            return Err(CtlError::Protocol(
                "the connection closed before the command finished".into(),
            ));
        }
        let reply: Reply = serde_json::from_str(&buf)
            .map_err(|e| CtlError::Protocol(format!("{e}: {}", buf.trim_end())))?;
        let mut out = stdout.lock();
        if args.json {
            // A reader that went away (`| head`) ends the command quietly.
            if writeln!(out, "{}", buf.trim_end()).is_err() {
                return Ok(0);
            }
        }
        match reply {
            Reply::Log(l) => {
                if !args.json && print_log(&mut out, &l).is_err() {
                    return Ok(0);
                }
            }
            Reply::Skipped(n) => {
                if !args.json {
                    eprintln!("hivesup ctl: {n} lines skipped (reading too slowly)");
                }
            }
            Reply::Done { message, status } => {
                let code = match &status {
                    Some(s) if is_status && !s.programs.values().all(|p| p.ok) => 1,
                    _ => 0,
                };
                if !args.json {
                    match status {
                        Some(s) => {
                            let _ = write!(out, "{}", query::render_table(&s));
                        }
                        None if !message.is_empty() => {
                            let _ = writeln!(out, "{message}");
                        }
                        None => {}
                    }
                }
                return Ok(code);
            }
            Reply::Error(e) => {
                if !args.json {
                    eprintln!("hivesup ctl: {e}");
                }
                return Ok(1);
            }
        }
    }
}

fn print_log(out: &mut impl Write, l: &LogLine) -> std::io::Result<()> {
    writeln!(out, "{}", l.line)
}
