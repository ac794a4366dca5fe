//! The postgres bootstrap: what the official image's `docker-entrypoint.sh` does, as two
//! oneshot programs around the postgres daemon (see `conf/agent.toml`):
//!
//! - `hivesup postgres init` (before postgres, as root or as the postgres account itself):
//!   creates PGDATA and the socket directory, runs `initdb` as the postgres user on an
//!   empty data directory, refuses a data directory of another major version, and leaves
//!   a "first start pending" marker.
//! - `hivesup postgres provision` (after postgres is ready): creates the application role,
//!   its database and the `vector` extension, idempotently; on the first start only it
//!   runs `/docker-entrypoint-initdb.d` and then clears the marker.
//!
//! Layout: `env.rs` resolves `POSTGRES_*`/`*_FILE`, `sql.rs` quotes and builds SCRAM
//! verifiers, `init.rs` and `provision.rs` are the two steps, `process.rs` runs a child
//! as another user. Passwords never reach a log line, an error message or a command line.
//!
//! This runs in its own process, a child of PID 1 and never PID 1 itself, so waiting on
//! its own children (initdb, scripts) with std is safe: no other reaper shares its pids.

mod env;
mod error;
mod init;
mod process;
mod provision;
mod sql;

use std::path::PathBuf;

pub use env::Credentials;
pub use error::{Error, PgError};
pub use init::InitArgs;
pub use provision::ProvisionArgs;

/// `hivesup postgres ...`
#[derive(clap::Args, Debug)]
pub struct PostgresArgs {
    #[command(subcommand)]
    pub command: PostgresCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum PostgresCommand {
    /// Prepare PGDATA before postgres starts: initdb on an empty directory (run as root)
    Init(InitArgs),
    /// Create POSTGRES_USER, POSTGRES_DB and the vector extension once postgres is ready
    Provision(ProvisionArgs),
}

/// Paths and the account shared by both steps. Defaults are the Debian PostgreSQL 17
/// layout of the images; tests point them at a host's PostgreSQL 15.
#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// The data directory
    #[arg(long, env = "PGDATA", default_value = "/var/lib/postgresql/data")]
    pub pgdata: PathBuf,
    /// Directory holding initdb and postgres
    #[arg(long, default_value = "/usr/lib/postgresql/17/bin")]
    pub bindir: PathBuf,
    /// The server's unix socket directory (unix_socket_directories)
    #[arg(long, default_value = "/var/run/postgresql")]
    pub socket_dir: PathBuf,
    /// OS account that owns PGDATA and runs postgres; also the superuser's name
    #[arg(long, default_value = "postgres")]
    pub user: String,
}

/// Runs one step to completion. Builds its own current-thread runtime; when called from
/// inside a runtime it does so on a fresh thread, since a runtime cannot block in another.
pub fn run(args: PostgresArgs) -> Result<(), Error> {
    init_logging();
    if tokio::runtime::Handle::try_current().is_ok() {
        return std::thread::scope(|s| s.spawn(|| dispatch(args)).join())
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    }
    dispatch(args)
}

fn dispatch(args: PostgresArgs) -> Result<(), Error> {
    match args.command {
        PostgresCommand::Init(a) => init::run(&a),
        PostgresCommand::Provision(a) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(Error::Runtime)?;
            rt.block_on(provision::run(&a))
        }
    }
}

/// hivesup's own logs go to stderr; the supervisor prefixes them with the program name.
/// A subscriber installed by main first is kept.
fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .with_ansi(false)
        .try_init();
}

/// Name of the marker file in PGDATA. Its content is the state of the first start:
/// `pending` (initdb done, provisioning not yet) or `running-scripts` (initdb.d scripts
/// started and did not all finish). Only a complete provisioning removes it.
pub const MARKER: &str = "hivesup-first-start";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    Pending,
    RunningScripts,
}

impl Marker {
    fn as_str(self) -> &'static str {
        match self {
            Marker::Pending => "pending",
            Marker::RunningScripts => "running-scripts",
        }
    }

    /// Unknown content counts as `RunningScripts`: when in doubt, fail loudly.
    fn parse(s: &str) -> Marker {
        match s.lines().next().unwrap_or("").trim() {
            "pending" => Marker::Pending,
            _ => Marker::RunningScripts,
        }
    }
}

fn read_marker(pgdata: &std::path::Path) -> Result<Option<Marker>, Error> {
    let path = pgdata.join(MARKER);
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(Some(Marker::parse(&s))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Read { path, source }),
    }
}

fn write_marker(
    pgdata: &std::path::Path,
    marker: Marker,
    owner: &process::Account,
) -> Result<(), Error> {
    let path = pgdata.join(MARKER);
    let text = format!(
        "{}\n# written by `hivesup postgres init`; removed once `hivesup postgres provision` has \
         finished the first start\n",
        marker.as_str()
    );
    std::fs::write(&path, text).map_err(|source| Error::Write {
        path: path.clone(),
        source,
    })?;
    owner.chown(&path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_states_round_trip_and_garbage_fails_safe() {
        for m in [Marker::Pending, Marker::RunningScripts] {
            assert_eq!(Marker::parse(&format!("{}\n# comment\n", m.as_str())), m);
        }
        assert_eq!(Marker::parse("pending\n"), Marker::Pending);
        assert_eq!(Marker::parse(""), Marker::RunningScripts);
    }
}
