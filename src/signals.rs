//! OS signals -> supervisor messages, and signal names <-> numbers.
//!
//! A PID 1 drops every signal it has no handler for (the kernel protects init), so we
//! install handlers for each signal we mean to act on: TERM/INT/QUIT stop everything,
//! HUP/USR1/USR2 are forwarded, CHLD wakes the reaper. SEGV/BUS/FPE/ILL/ABRT/TRAP/SYS are
//! left alone, as tini does: they are synchronous faults of hivesup itself.
//!
//! The handlers themselves are signal-hook's self-pipe; everything else runs on a small
//! ordinary thread, never in signal context.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use nix::sys::signal::Signal;
use signal_hook::iterator::Signals;

use crate::reaper::Reaper;

/// Signals that ask hivesup to stop everything.
pub const STOP: &[Signal] = &[Signal::SIGTERM, Signal::SIGINT, Signal::SIGQUIT];
/// Signals hivesup forwards to the programs that list them in `forward_signals`.
pub const FORWARD: &[Signal] = &[Signal::SIGHUP, Signal::SIGUSR1, Signal::SIGUSR2];

/// Signals that init mode does not forward: uncatchable ones, synchronous faults (they are
/// about hivesup itself), SIGCHLD (ours), and SIGPIPE (a closed stdout of ours is no news
/// for the child).
const NOT_FORWARDED_IN_INIT: &[Signal] = &[
    Signal::SIGKILL,
    Signal::SIGSTOP,
    Signal::SIGSEGV,
    Signal::SIGBUS,
    Signal::SIGFPE,
    Signal::SIGILL,
    Signal::SIGABRT,
    Signal::SIGTRAP,
    Signal::SIGSYS,
    Signal::SIGCHLD,
    Signal::SIGPIPE,
];

/// Every catchable signal init mode forwards to its child's process group.
pub fn init_forwarded() -> Vec<Signal> {
    Signal::iterator()
        .filter(|s| !NOT_FORWARDED_IN_INIT.contains(s))
        .collect()
}

/// Parses "SIGTERM", "TERM", "sigterm" or "15".
pub fn parse_signal(text: &str) -> Result<Signal, String> {
    let t = text.trim();
    if let Ok(n) = t.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| format!("expected a signal, found the number {n}"));
    }
    let upper = t.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>().map_err(|_| {
        format!("expected a signal name like \"SIGTERM\", \"TERM\" or 15, found \"{text}\"")
    })
}

/// Starts the signal thread: SIGCHLD drains the reaper, every other listed signal goes to
/// `deliver`. Also starts a one-second fallback reap tick (as tini does), so a lost wakeup
/// can delay a reap by at most a second and never forever.
pub fn listen(
    reaper: Arc<Reaper>,
    signals: &[Signal],
    deliver: impl Fn(Signal) + Send + 'static,
) -> std::io::Result<()> {
    let mut numbers: Vec<i32> = signals.iter().map(|s| *s as i32).collect();
    numbers.push(libc::SIGCHLD);
    let mut iter = Signals::new(&numbers)?;
    let r = reaper.clone();
    thread::Builder::new()
        .name("hivesup-signals".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            for n in iter.forever() {
                if n == libc::SIGCHLD {
                    r.reap();
                } else if let Ok(sig) = Signal::try_from(n) {
                    deliver(sig);
                }
            }
        })?;
    thread::Builder::new()
        .name("hivesup-reap-tick".into())
        .stack_size(128 * 1024)
        .spawn(move || {
            loop {
                thread::sleep(Duration::from_secs(1));
                reaper.reap();
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        for (text, want) in [
            ("15", Signal::SIGTERM),
            ("TERM", Signal::SIGTERM),
            ("SIGTERM", Signal::SIGTERM),
            ("sigint", Signal::SIGINT),
            ("hup", Signal::SIGHUP),
            ("SIGUSR1", Signal::SIGUSR1),
            ("9", Signal::SIGKILL),
        ] {
            assert_eq!(parse_signal(text), Ok(want), "{text}");
        }
        assert!(parse_signal("SIGFOO").is_err());
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("99").is_err());
        assert!(parse_signal("").is_err());
    }

    #[test]
    fn init_forwards_the_usual_signals_but_not_faults() {
        let f = init_forwarded();
        for s in [
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGHUP,
            Signal::SIGUSR1,
            Signal::SIGWINCH,
        ] {
            assert!(f.contains(&s), "{s}");
        }
        for s in [
            Signal::SIGKILL,
            Signal::SIGSEGV,
            Signal::SIGCHLD,
            Signal::SIGPIPE,
        ] {
            assert!(!f.contains(&s), "{s}");
        }
    }
}
