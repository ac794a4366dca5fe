//! The command line: `hivesup [--config FILE] [check | health | status | ctl | postgres ...]`,
//! or `hivesup [--] CMD [ARGS...]` for init mode.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "hivesup",
    version,
    about = "PID 1 for all-in-one containers: programs by priority, gated on readiness; one reaper; ordered shutdown; one /health",
    after_help = "Without a command, supervises the programs in the config.\nInit mode (like tini): hivesup -- CMD [ARGS...]"
)]
pub struct Cli {
    /// Config file [default: $HIVESUP_CONFIG, else /etc/hivesup/hivesup.toml]
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the config: print `ok`, or every error as FILE:LINE:COL: message
    Check,
    /// Exit 0 if a running hivesup answers 200 on /health, else 1 (for HEALTHCHECK)
    Health {
        /// Address of hivesup's health port [default: supervisor.health_addr of the config]
        #[arg(long, value_name = "HOST:PORT")]
        addr: Option<String>,
    },
    /// Print the programs of a running hivesup as a table
    Status {
        /// Address of hivesup's health port [default: supervisor.health_addr of the config]
        #[arg(long, value_name = "HOST:PORT")]
        addr: Option<String>,
        /// Print the raw JSON of /status
        #[arg(long)]
        json: bool,
    },
    /// Control a running hivesup through its control socket (status, start, stop, logs...)
    Ctl(crate::ctl::CtlArgs),
    /// Convert a supervisord config (with its [include] files) to hivesup TOML on stdout
    ///
    /// Warnings go to stderr. Exit 0 when converted (even with warnings), 2 when the input
    /// cannot be read or converted, with every problem as FILE:LINE: message.
    Import {
        /// The supervisord config, e.g. /etc/supervisor/supervisord.conf
        file: PathBuf,
    },
    /// Prepare (init) or provision PostgreSQL: the images' bootstrap steps
    Postgres(crate::pgboot::PostgresArgs),
    /// Run CMD as the only child (init mode, like tini)
    #[command(external_subcommand)]
    Exec(Vec<OsString>),
}

/// What main should do.
#[derive(Debug)]
pub enum Mode {
    /// `hivesup -- CMD ...` (or an unknown first word): init mode.
    Init(Vec<String>),
    Parsed(Cli),
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("init mode takes no --config: use either `hivesup -- CMD` or `hivesup --config FILE`")]
    ConfigWithInit,
    #[error("`hivesup --` needs a command to run")]
    NoCommand,
    #[error("argument {0:?} is not valid UTF-8")]
    NotUtf8(OsString),
}

/// Splits off init mode before clap sees the arguments: `--` and anything after it is
/// the child's, untouched.
pub fn parse(args: Vec<OsString>) -> Result<Mode, Result<clap::Error, CliError>> {
    if let Some(pos) = args.iter().position(|a| a == "--") {
        if pos > 1 {
            let before: Vec<_> = args[1..pos].iter().collect();
            if before.iter().any(|a| {
                *a == "--config" || *a == "-c" || a.to_string_lossy().starts_with("--config=")
            }) {
                return Err(Err(CliError::ConfigWithInit));
            }
        }
        if pos == 1 {
            return init_argv(&args[2..]).map(Mode::Init).map_err(Err);
        }
    }
    let cli = Cli::try_parse_from(args).map_err(Ok)?;
    match cli.command {
        Some(Command::Exec(argv)) => {
            if cli.config.is_some() {
                return Err(Err(CliError::ConfigWithInit));
            }
            init_argv(&argv).map(Mode::Init).map_err(Err)
        }
        _ => Ok(Mode::Parsed(cli)),
    }
}

fn init_argv(args: &[OsString]) -> Result<Vec<String>, CliError> {
    if args.is_empty() {
        return Err(CliError::NoCommand);
    }
    args.iter()
        .map(|a| a.clone().into_string().map_err(CliError::NotUtf8))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Mode, Result<clap::Error, CliError>> {
        parse(args.iter().map(OsString::from).collect())
    }

    #[test]
    fn modes() {
        assert!(matches!(
            p(&["hivesup"]),
            Ok(Mode::Parsed(Cli { command: None, .. }))
        ));
        assert!(matches!(
            p(&["hivesup", "check"]),
            Ok(Mode::Parsed(Cli {
                command: Some(Command::Check),
                ..
            }))
        ));
        match p(&["hivesup", "--", "sleep", "--", "1"]) {
            Ok(Mode::Init(argv)) => assert_eq!(argv, ["sleep", "--", "1"]),
            other => panic!("{other:?}"),
        }
        match p(&["hivesup", "sleep", "1"]) {
            Ok(Mode::Init(argv)) => assert_eq!(argv, ["sleep", "1"]),
            other => panic!("{other:?}"),
        }
        // `check` as a command to run needs `--`.
        assert!(matches!(p(&["hivesup", "--", "check"]), Ok(Mode::Init(_))));
        assert!(matches!(
            p(&["hivesup", "--config", "x", "--", "sleep"]),
            Err(Err(CliError::ConfigWithInit))
        ));
        assert!(matches!(
            p(&["hivesup", "--"]),
            Err(Err(CliError::NoCommand))
        ));
        match p(&["hivesup", "-c", "f.toml", "health", "--addr", "127.0.0.1:1"]) {
            Ok(Mode::Parsed(Cli {
                config: Some(c),
                command: Some(Command::Health { addr: Some(a) }),
            })) => {
                assert_eq!((c.to_str().unwrap(), a.as_str()), ("f.toml", "127.0.0.1:1"))
            }
            other => panic!("{other:?}"),
        }
    }
}
