//! Configuration: TOML text -> [`Config`], with every problem located and reported.
//!
//! `raw.rs` parses the spanned document and offers typed accessors (which expand `${VAR}`
//! with `expand.rs`), `validate.rs` walks it into these types, `env.rs` reads env files and
//! secrets, `error.rs` renders problems as `FILE:LINE:COL: message`.

pub mod duration;
pub mod env;
pub mod error;
pub mod expand;
mod raw;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

pub use env::{EnvValue, Secret, SecretError};
pub use error::{ConfigErrors, LoadError};

/// Where the config lives when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/hivesup/hivesup.toml";

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub supervisor: SupervisorConfig,
    /// In file order.
    pub programs: Vec<ProgramConfig>,
}

#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// `None` when `health_addr = ""`.
    pub health_addr: Option<SocketAddr>,
    pub shutdown_timeout: Duration,
    pub log_format: LogFormat,
    /// Where `hivesup ctl` reaches us; `None` when `control_socket = ""`.
    pub control_socket: Option<ControlSocket>,
    /// SIGHUP reloads the config instead of being forwarded.
    pub reload_on_sighup: bool,
    pub user_switch: UserSwitch,
}

/// Where the control socket lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlSocket {
    pub path: PathBuf,
    /// Written in the config: failing to create it is then an error, not a warning.
    pub explicit: bool,
}

/// The control socket when the config does not name one.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/hivesup.sock";

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            health_addr: Some(SocketAddr::from(([0, 0, 0, 0], 8080))),
            // docker stop sends SIGKILL after 10 s: leave a second for our own exit.
            shutdown_timeout: Duration::from_secs(9),
            log_format: LogFormat::Text,
            control_socket: Some(ControlSocket {
                path: PathBuf::from(DEFAULT_CONTROL_SOCKET),
                explicit: false,
            }),
            reload_on_sighup: false,
            user_switch: UserSwitch::Required,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// What a non-root hivesup does with a program's `user` it cannot switch to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserSwitch {
    /// A start error: the config asked for a user and does not get it.
    Required,
    /// The program runs as hivesup's own user (`docker run --user`), with a warning.
    IfRoot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Daemon,
    Oneshot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    Always,
    OnFailure,
    Never,
}

/// What `command` says to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandSpec {
    /// Executed directly, with a PATH lookup for the first element.
    Argv(Vec<String>),
    /// Run with `/bin/sh -c`.
    Shell(String),
}

impl CommandSpec {
    pub fn argv(&self) -> Vec<String> {
        match self {
            CommandSpec::Argv(v) => v.clone(),
            CommandSpec::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
        }
    }
}

/// `user = "name" | "uid" | "uid:gid"`; resolved to ids only at spawn time, because the
/// account database of the machine that runs `check` may differ from the one that runs us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserSpec {
    Name(String),
    Uid(u32),
    UidGid(u32, u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Tcp(String),
    Unix(PathBuf),
    Http(HttpTarget),
    Exec(Vec<String>),
    /// A libpq-style connection string; never logged (it may hold a password).
    Postgres(String),
}

impl Probe {
    pub fn kind(&self) -> &'static str {
        match self {
            Probe::Tcp(_) => "tcp",
            Probe::Unix(_) => "unix",
            Probe::Http(_) => "http",
            Probe::Exec(_) => "exec",
            Probe::Postgres(_) => "postgres",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    pub host: String,
    pub port: u16,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyCheck {
    Probe(Probe),
    /// sd_notify: the program sends READY=1 to $NOTIFY_SOCKET.
    Notify,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyConfig {
    pub check: ReadyCheck,
    pub timeout: Duration,
    pub interval: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    pub failures: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramConfig {
    pub name: String,
    pub command: CommandSpec,
    pub priority: u32,
    pub kind: Kind,
    pub user: Option<UserSpec>,
    pub directory: Option<PathBuf>,
    /// `[supervisor] environment_files`, then the program's `environment_files`, then its
    /// `environment`, merged: one entry per name, holding the last value given.
    pub environment: Vec<(String, EnvValue)>,
    pub restart: Restart,
    pub stop_signal: Signal,
    pub stop_timeout: Duration,
    pub forward_signals: Vec<Signal>,
    pub critical: bool,
    pub settle_time: Duration,
    pub restart_backoff: Duration,
    pub restart_backoff_max: Duration,
    pub backoff_reset: Duration,
    pub start_retries: u32,
    pub ready: Option<ReadyConfig>,
    pub health: Option<HealthConfig>,
}

impl ProgramConfig {
    /// A program with every default, for tests and for init mode.
    pub fn new(name: &str, command: CommandSpec) -> Self {
        ProgramConfig {
            name: name.into(),
            command,
            priority: 100,
            kind: Kind::Daemon,
            user: None,
            directory: None,
            environment: Vec::new(),
            restart: Restart::OnFailure,
            stop_signal: Signal::SIGTERM,
            stop_timeout: Duration::from_secs(5),
            forward_signals: Vec::new(),
            critical: false,
            settle_time: Duration::from_secs(1),
            restart_backoff: Duration::from_secs(1),
            restart_backoff_max: Duration::from_secs(30),
            backoff_reset: Duration::from_secs(60),
            start_retries: 5,
            ready: None,
            health: None,
        }
    }

    /// The environment to start the program with: plain values as they are, secret files
    /// read now (so a rotated secret reaches the next start). The result holds secrets:
    /// never log it.
    pub fn resolve_environment(&self) -> Result<Vec<(String, String)>, SecretError> {
        self.environment
            .iter()
            .map(|(k, v)| match v {
                EnvValue::Plain(s) => Ok((k.clone(), s.clone())),
                EnvValue::File(path) => {
                    let key = format!("programs.{}.environment.{k}", self.name);
                    env::read_secret(&key, path).map(|s| (k.clone(), s.into_exposed()))
                }
            })
            .collect()
    }

    /// The values known at load: every one but the secrets.
    pub fn plain_environment(&self) -> Vec<(String, String)> {
        self.environment
            .iter()
            .filter_map(|(k, v)| match v {
                EnvValue::Plain(s) => Some((k.clone(), s.clone())),
                EnvValue::File(_) => None,
            })
            .collect()
    }

    /// The value of `name` known at load (a secret's is not).
    pub fn plain_env(&self, name: &str) -> Option<&str> {
        self.environment.iter().rev().find_map(|(k, v)| match v {
            EnvValue::Plain(s) if k == name => Some(s.as_str()),
            _ => None,
        })
    }
}

/// The config path from `--config`, else `$HIVESUP_CONFIG`, else [`DEFAULT_PATH`].
pub fn resolve_path(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    match std::env::var_os("HIVESUP_CONFIG") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_PATH),
    }
}

/// The largest config, environment or secret file hivesup reads.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Reads a config, environment or secret file of at most [`MAX_FILE_BYTES`]: a path that
/// points at `/dev/zero` or a huge file fails with a message instead of filling PID 1's
/// memory. Pipes (`--config <(...)`) still work.
pub fn read_capped(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::other("the file is larger than 1 MiB"));
    }
    Ok(bytes)
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, LoadError> {
    let bytes = read_capped(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let text = String::from_utf8_lossy(e.as_bytes()).into_owned();
        LoadError::Invalid(ConfigErrors::render(
            path,
            &text,
            vec![error::Problem {
                offset,
                message: "the file is not valid UTF-8".into(),
                elsewhere: None,
            }],
        ))
    })?;
    parse(path, &text).map_err(LoadError::Invalid)
}

/// Validates config text, expanding `${VAR}` from hivesup's own environment. `path` names
/// the file in messages, and its directory anchors relative env files and secrets.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    validate::validate(path, text, &|name| std::env::var(name).ok())
}
