//! Errors of the postgres bootstrap. Each says "failed to <verb> <object>" and keeps its
//! cause as a `#[source]`; none ever contains a password (they name variables and paths).

use std::{fmt, io, path::PathBuf, process::ExitStatus};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read {var} from {path}")]
    ReadSecret {
        var: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to read {var} from {path}: the file is empty")]
    EmptySecret { var: &'static str, path: PathBuf },
    #[error("failed to resolve {var}: both {var} and {var}_FILE are set, set only one")]
    AmbiguousSecret { var: &'static str },
    #[error("failed to resolve {var}: it is not set (set {var} or {var}_FILE)")]
    MissingSecret { var: &'static str },
    #[error("failed to resolve {var}: {reason}")]
    InvalidSetting {
        var: &'static str,
        reason: &'static str,
    },
    #[error("failed to look up user {user}")]
    LookupUser {
        user: String,
        #[source]
        source: nix::Error,
    },
    #[error("failed to look up user {user}: no such user")]
    NoSuchUser { user: String },
    #[error(
        "failed to act as user {user}: running as uid {uid}, which is neither root nor {user} \
         (run as root, or as {user} itself)"
    )]
    NotThatUser { user: String, uid: u32 },
    #[error("failed to create {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to set the mode of {path}")]
    SetMode {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to set the owner of {path}")]
    Chown {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to run {program}")]
    Spawn {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to run {program}: {status}")]
    CommandFailed {
        program: PathBuf,
        status: ExitStatus,
    },
    #[error(
        "failed to run {program}: {status}; the file system of {pgdata} has only {free_mib:.1} MiB \
         free and a new cluster needs about 40 MiB (give it more space)"
    )]
    NoSpace {
        program: PathBuf,
        status: ExitStatus,
        pgdata: PathBuf,
        free_mib: f64,
    },
    #[error("failed to find the PostgreSQL version of {program}: unexpected output {output:?}")]
    UnknownServerVersion { program: PathBuf, output: String },
    #[error(
        "failed to start PostgreSQL {server} on {pgdata}: it holds a PostgreSQL {data} data directory; {}",
        version_advice(data, server)
    )]
    VersionMismatch {
        pgdata: PathBuf,
        data: String,
        server: String,
    },
    #[error(
        "failed to use {pgdata}: it is not empty but has no PG_VERSION, so it is not a PostgreSQL \
         data directory (empty it, or point PGDATA at a subdirectory)"
    )]
    NotADataDir { pgdata: PathBuf },
    #[error(
        "failed to use {pgdata}: it is owned by uid {owner}, not by {user} (uid {uid}) who runs \
         postgres; give it to {user} (chown -R {user}: {pgdata}) or point PGDATA elsewhere"
    )]
    WrongOwner {
        pgdata: PathBuf,
        owner: u32,
        user: String,
        uid: u32,
    },
    #[error(
        "failed to provision {pgdata}: the initialisation scripts of its first start did not finish \
         ({marker} is still there); the data directory is half-initialised: inspect it, or remove \
         the volume to start over"
    )]
    HalfInitialised { pgdata: PathBuf, marker: PathBuf },
    #[error("failed to connect to PostgreSQL in {socket_dir} as {user}")]
    Connect {
        socket_dir: PathBuf,
        user: String,
        #[source]
        source: PgError,
    },
    #[error("failed to {what}")]
    Query {
        what: String,
        #[source]
        source: PgError,
    },
    #[error("failed to run initialisation script {path}")]
    SqlScript {
        path: PathBuf,
        #[source]
        source: PgError,
    },
    #[error("failed to start the async runtime")]
    Runtime(#[source] io::Error),
}

/// What to do about a data directory of another major version, in the words of the
/// README's "Data" section (`make agent-backup FROM=...` runs the newer pg_dump against
/// the old server; `make agent-restore` loads it into a new volume).
fn version_advice(data: &str, server: &str) -> String {
    let major = |v: &str| {
        v.split('.')
            .map(|p| p.parse::<u32>().unwrap_or(0))
            .collect::<Vec<_>>()
    };
    if major(data) > major(server) {
        format!(
            "it is newer than this server: use an image with PostgreSQL {data}, or dump it with PostgreSQL {data} and restore"
        )
    } else {
        format!(
            "upgrade it by dump and restore (serve it with PostgreSQL {data}, then `make agent-backup FROM=postgresql://...` and \
             `make agent-restore FILE=...` on a new volume) or with pg_upgrade: README, \"Data\", \"Major-version upgrade\""
        )
    }
}

/// A tokio-postgres error shown once: its own `Display` already appends the server's
/// message and `source()` returns it again, which `{:#}` would print twice.
#[derive(Debug)]
pub struct PgError(pub tokio_postgres::Error);

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_db_error() {
            Some(db) => {
                write!(f, "{}: {}", db.severity(), db.message())?;
                if let Some(detail) = db.detail() {
                    write!(f, " ({detail})")?;
                }
                Ok(())
            }
            None => match std::error::Error::source(&self.0) {
                Some(cause) => write!(f, "{}: {cause}", self.0),
                None => write!(f, "{}", self.0),
            },
        }
    }
}

impl std::error::Error for PgError {}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        PgError(e)
    }
}
