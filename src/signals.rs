//! OS signals -> supervisor messages, and signal names <-> numbers.
//!
//! A PID 1 drops every signal it has no handler for (the kernel protects init), unless
//! the signal is blocked: a blocked signal stays pending until someone takes it. So, as
//! tini does, the supervisor blocks every signal it acts on in all its threads
//! ([`block`], before any thread starts) and one small thread takes them with
//! sigtimedwait(2): TERM/INT/QUIT stop everything, HUP/USR1/USR2 are forwarded, CHLD
//! drains the reaper. No handler runs in signal context at all. SEGV/BUS/FPE/ILL/ABRT/
//! TRAP/SYS are left alone: they are synchronous faults of hivesup itself.
//!
//! Children start with an empty mask (spawn.rs resets it between fork and exec).

use std::sync::Arc;
use std::thread;

use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};

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

/// The signals the supervisor takes, blocked in the thread that called [`block`] and so
/// in every thread it starts afterwards.
pub struct Blocked(SigSet);

/// Blocks `signals` and SIGCHLD in the calling thread. Call it before any other thread
/// exists: a thread that has them unblocked would take them with the default action
/// (death, or for PID 1 nothing at all) instead of the signal thread.
pub fn block(signals: &[Signal]) -> std::io::Result<Blocked> {
    let mut set = SigSet::empty();
    for s in signals {
        set.add(*s);
    }
    set.add(Signal::SIGCHLD);
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
    Ok(Blocked(set))
}

/// How long the signal thread sleeps without a signal before it reaps anyway, as tini
/// does: a lost wakeup can delay a reap by at most this, never forever.
const REAP_TICK: libc::timespec = libc::timespec {
    tv_sec: 1,
    tv_nsec: 0,
};

/// Starts the signal thread: SIGCHLD (or a quiet second) drains the reaper, every other
/// blocked signal goes to `deliver`. Signals that arrived since [`block`] are pending and
/// taken first.
pub fn listen(
    blocked: Blocked,
    reaper: Arc<Reaper>,
    deliver: impl Fn(Signal) + Send + 'static,
) -> std::io::Result<()> {
    let Blocked(set) = blocked;
    thread::Builder::new()
        .name("hivesup-signals".into())
        .stack_size(128 * 1024)
        .spawn(move || {
            let raw: &libc::sigset_t = set.as_ref();
            loop {
                // SAFETY: sigtimedwait reads the set and the timeout, both alive for the
                // call, and writes no siginfo (null).
                let n = unsafe { libc::sigtimedwait(raw, std::ptr::null_mut(), &REAP_TICK) };
                if n == libc::SIGCHLD || n == -1 {
                    // -1: EAGAIN (the tick) or EINTR; reaping is harmless either way.
                    reaper.reap();
                } else if let Ok(sig) = Signal::try_from(n) {
                    deliver(sig);
                }
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
