//! Thin: parse the command line, choose the mode, run it, turn the result into an exit code.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use hivesup::cli::{self, Command, Mode};
use hivesup::config::{self, LoadError};
use hivesup::supervisor::{Message, Supervisor};
use hivesup::{control, ctl, http, init, logging, query, reaper, signals, spawn};

/// Exit code for an invalid config or command line.
const USAGE: u8 = 2;

fn main() -> ExitCode {
    // A panic anywhere (the supervisor loop, the reaper) must end the process: a PID 1 that
    // keeps running after its supervisor died is the worst state.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        std::process::exit(70);
    }));

    let mode = match cli::parse(std::env::args_os().collect()) {
        Ok(m) => m,
        Err(Ok(clap_err)) => clap_err.exit(),
        Err(Err(e)) => {
            eprintln!("hivesup: {e}");
            return ExitCode::from(USAGE);
        }
    };
    let result = match mode {
        Mode::Init(argv) => {
            logging::init(config::LogFormat::Text);
            init::run(argv).map_err(anyhow::Error::from)
        }
        Mode::Parsed(cli) => {
            let path = config::resolve_path(cli.config.as_deref());
            match cli.command {
                None => supervise(&path),
                Some(Command::Check) => Ok(check(&path)),
                Some(Command::Health { addr }) => health(&path, addr.as_deref()),
                Some(Command::Status { addr, json }) => status(&path, addr.as_deref(), json),
                Some(Command::Ctl(args)) => match ctl::run(&path, args) {
                    Ok(code) => Ok(code),
                    Err(e) => {
                        let code = e.exit_code();
                        eprintln!("hivesup ctl: {:#}", anyhow::Error::from(e));
                        Ok(code)
                    }
                },
                Some(Command::Import { file }) => Ok(hivesup::import::command(&file)),
                Some(Command::Postgres(args)) => hivesup::pgboot::run(args)
                    .map(|()| 0)
                    .map_err(anyhow::Error::from),
                Some(Command::Exec(_)) => unreachable!("cli::parse turns Exec into Mode::Init"),
            }
        }
    };
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("hivesup: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn load_or_report(path: &Path) -> Result<config::Config, i32> {
    match config::load(path) {
        Ok(c) => Ok(c),
        Err(LoadError::Invalid(errors)) => {
            eprintln!("{errors}");
            Err(1)
        }
        Err(e) => {
            eprintln!("hivesup: {:#}", anyhow::Error::from(e));
            Err(1)
        }
    }
}

fn check(path: &Path) -> i32 {
    match load_or_report(path) {
        Ok(_) => {
            println!("ok");
            0
        }
        Err(code) => code,
    }
}

fn supervise(path: &Path) -> anyhow::Result<i32> {
    let mut config = match load_or_report(path) {
        Ok(c) => c,
        Err(_) => return Ok(USAGE as i32),
    };
    logging::init(config.supervisor.log_format);
    spawn::apply_user_switch(&mut config);

    // Everything that would make a program fail to spawn is reported now, before anything
    // starts, so nothing is left half-started.
    let problems: Vec<String> = config.programs.iter().flat_map(spawn::preflight).collect();
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("hivesup: {}: {p}", path.display());
        }
        return Ok(USAGE as i32);
    }
    hivesup::procs::check_available().map_err(|e| anyhow!(e))?;
    // Before any thread starts, so that only the signal thread ever takes these.
    let mut wanted = signals::STOP.to_vec();
    wanted.extend_from_slice(signals::FORWARD);
    let blocked = signals::block(&wanted).context("failed to block signals")?;
    if let Err(e) = reaper::become_subreaper() {
        tracing::warn!(error = %e, "failed to become a child subreaper; orphans of programs will go to the host's init");
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    runtime.block_on(async move {
        // Bind before any program starts: a port in use is a start error, not a half-start.
        let listener = match config.supervisor.health_addr {
            Some(addr) => Some(bind(addr)?),
            None => None,
        };
        let control = match &config.supervisor.control_socket {
            Some(socket) => match control::bind(socket) {
                Ok(l) => {
                    tracing::info!("control socket on {}", socket.path.display());
                    Some((l, socket.path.clone()))
                }
                Err(e) if socket.explicit => {
                    return Err(anyhow::Error::from(e).context("supervisor.control_socket"));
                }
                Err(e) => {
                    tracing::warn!(
                        "control socket disabled: {:#} (set supervisor.control_socket to a writable path, or \"\" to silence this)",
                        anyhow::Error::from(e)
                    );
                    None
                }
            },
            None => None,
        };
        let reaper = Arc::new(reaper::Reaper::new());
        let (supervisor, handle) = Supervisor::new(&config, reaper.clone());
        let mailbox = handle.mailbox.clone();
        signals::listen(blocked, reaper, move |sig| {
            let _ = mailbox.send(Message::Signal(sig));
        })
        .context("failed to install signal handlers")?;
        let server = listener.map(|l| {
            let app = http::router(handle.snapshots.clone());
            tokio::spawn(async move {
                http::serve(l, app, http::Limits::default()).await;
            })
        });
        let control = control.map(|(listener, path)| {
            let ctx = control::Context {
                mailbox: handle.mailbox.clone(),
                snapshots: handle.snapshots.clone(),
                logs: handle.logs.clone(),
            };
            (tokio::spawn(control::serve(listener, ctx)), path)
        });
        let code = supervisor.run(std::future::pending()).await;
        if let Some(s) = server {
            s.abort();
        }
        if let Some((task, path)) = control {
            task.abort();
            control::remove(&path);
        }
        Ok(code)
    })
}

fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let std_listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("failed to listen on {addr} (supervisor.health_addr)"))?;
    std_listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(std_listener)?;
    let bound = listener.local_addr()?;
    tracing::info!("listening on {bound}");
    Ok(listener)
}

/// `--addr`, else the config's health_addr (a wildcard means loopback).
fn health_addr(path: &Path, addr: Option<&str>) -> anyhow::Result<SocketAddr> {
    if let Some(a) = addr {
        return a
            .parse()
            .map_err(|_| anyhow!("--addr: expected HOST:PORT like 127.0.0.1:8080, found \"{a}\""));
    }
    let config = config::load(path)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| {
            format!(
                "no --addr given and the config {} cannot tell it",
                path.display()
            )
        })?;
    let addr = config.supervisor.health_addr.ok_or_else(|| {
        anyhow!(
            "supervisor.health_addr is \"\" in {}: there is no health port to ask",
            path.display()
        )
    })?;
    Ok(query::connect_addr(addr))
}

fn health(path: &Path, addr: Option<&str>) -> anyhow::Result<i32> {
    let addr = health_addr(path, addr)?;
    match query::health(addr) {
        Ok(text) => {
            print!("{text}");
            Ok(0)
        }
        Err(e) => {
            println!("{e:#}");
            Ok(1)
        }
    }
}

fn status(path: &Path, addr: Option<&str>, json: bool) -> anyhow::Result<i32> {
    let addr = health_addr(path, addr)?;
    if json {
        println!("{}", query::status_json(addr)?);
    } else {
        print!("{}", query::status_table(addr)?);
    }
    Ok(0)
}
