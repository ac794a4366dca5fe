//! Init mode (`hivesup -- CMD ARGS`): a drop-in for tini and dumb-init. One child in its
//! own session and process group; every catchable signal hivesup receives goes to that
//! group; every zombie is reaped; hivesup exits with the child's code, or 128+N when a
//! signal N killed it. Reuses the reaper and the spawner; needs no async runtime.

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use signal_hook::iterator::Signals;

use crate::reaper::{self, Reaper};
use crate::signals;
use crate::spawn::{self, SpawnSpec};

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("failed to install signal handlers")]
    Signals(#[source] std::io::Error),
}

/// Runs `argv` as the only child; returns the exit code hivesup should exit with.
pub fn run(argv: Vec<String>) -> Result<i32, InitError> {
    if let Err(e) = reaper::become_subreaper() {
        tracing::warn!(error = %e, "failed to become a child subreaper; orphans will go to the host's init");
    }
    let reaper = Reaper::new();
    let forwarded = signals::init_forwarded();
    let mut numbers: Vec<i32> = forwarded.iter().map(|s| *s as i32).collect();
    numbers.push(libc::SIGCHLD);
    // Handlers go in before the child exists, so its exit cannot slip by unnoticed.
    let mut sigs = Signals::new(&numbers).map_err(InitError::Signals)?;

    // SAFETY: isatty only inspects the file descriptor.
    let tty = unsafe { libc::isatty(0) } == 1;
    let spec = SpawnSpec {
        argv: argv.clone(),
        inherit_stdin: true,
        take_tty: tty,
        ..SpawnSpec::default()
    };
    let child = match spawn::spawn(&reaper, &spec) {
        Ok(c) => c,
        Err(e) => {
            let code = e.exit_code();
            eprintln!("hivesup: {}", crate::supervisor::error_chain(&e));
            return Ok(code);
        }
    };
    let pid = child.pid;
    let mut exit = child.exit;
    reaper.reap();
    loop {
        if let Ok(status) = exit.try_recv() {
            // Orphans that are already zombies go too; the rest die with our namespace.
            reaper.reap();
            return Ok(status.code());
        }
        for n in sigs.wait() {
            if n == libc::SIGCHLD {
                reaper.reap();
            } else if let Ok(sig) = Signal::try_from(n) {
                forward(pid, sig);
            }
        }
    }
}

fn forward(pid: u32, sig: Signal) {
    let target = Pid::from_raw(pid as i32);
    // To the group first; if the child left it or the group is gone, to the child itself.
    match killpg(target, sig) {
        Ok(()) => {}
        Err(Errno::ESRCH) => {
            let _ = kill(target, sig);
        }
        Err(e) => tracing::debug!(signal = sig.as_str(), error = %e, "failed to forward signal"),
    }
}
