//! Init mode `hivesup [--] CMD [ARGS...]` (tini / dumb-init drop-in): exit with the child's
//! code (0, 1, 2, 126, 127, 255 ...), 128+N when a signal N killed it, 127 for a missing
//! command, 126 for a non-executable one; every catchable signal is forwarded to the child's
//! process group; zombies are reaped (as PID 1 and as a child subreaper).
mod common;
use common::*;
use std::time::Duration;

fn exit_of(args: &[&str], unshare: bool) -> (i32, Hivesup) {
    let mut h = Hivesup::init(TestDir::new(), args, unshare);
    let c = h.wait_code(WAIT);
    (c, h)
}

#[test]
fn exit_codes_pass_through() {
    for code in [0, 1, 2, 126, 127, 255, 42] {
        let s = format!("exit {code}");
        let (c, h) = exit_of(&["sh", "-c", &s], false);
        h.check(c == code, || {
            format!("`hivesup -- sh -c '{s}'`: expected {code}, got {c}")
        });
    }
}

#[test]
fn exit_codes_pass_through_as_pid1() {
    for code in [0, 1, 2, 126, 127, 255] {
        let s = format!("exit {code}");
        let (c, h) = exit_of(&["sh", "-c", &s], true);
        h.check(c == code, || {
            format!("PID 1 `hivesup -- sh -c '{s}'`: expected {code}, got {c}")
        });
    }
}

/// Killed by signal N: 128+N (as tini and a shell do).
#[test]
fn death_by_signal_gives_128_plus_n() {
    for (sig, want) in [(9, 137), (15, 143), (10, 138), (2, 130)] {
        let s = sig.to_string();
        let (c, h) = exit_of(&[&fx("exit.py"), "--signal", &s], false);
        h.check(c == want, || {
            format!("child killed by signal {sig}: expected {want}, got {c}")
        });
    }
}

#[test]
fn missing_command_127_non_executable_126() {
    let (c, h) = exit_of(&["/nonexistent/hvs-nothing"], false);
    h.check(c == 127, || {
        format!("missing command: expected 127, got {c}")
    });
    h.assert_no_panic();
    let (c, h) = exit_of(&["hvs-no-such-command-in-path"], false);
    h.check(c == 127, || {
        format!("command not in PATH: expected 127, got {c}")
    });

    let t = TestDir::new();
    let script = t.write("noexec.sh", "#!/bin/sh\nexit 0\n");
    set_mode(std::path::Path::new(&script), 0o644);
    let mut h = Hivesup::init(t, &[&script], false);
    let c = h.wait_code(WAIT);
    h.check(c == 126, || {
        format!("non-executable command: expected 126, got {c}")
    });
    h.assert_no_panic();
}

/// Without `--`: `hivesup CMD ARGS` works the same.
#[test]
fn without_double_dash() {
    let mut h = Hivesup::start_with(
        TestDir::new(),
        "",
        Opts {
            args: Some(vec!["sh".into(), "-c".into(), "echo plain; exit 3".into()]),
            ..Opts::default()
        },
    );
    let c = h.wait_code(WAIT);
    h.check(c == 3, || {
        format!("`hivesup sh -c ...`: expected 3, got {c}")
    });
    h.wait_stdout("plain");
}

/// The child's output is passed through unchanged (no prefix), stdout and stderr.
#[test]
fn output_passes_through() {
    let (c, h) = exit_of(&["sh", "-c", "echo to-out; echo to-err >&2"], false);
    assert_eq!(c, 0);
    h.wait_stdout("to-out");
    h.wait_for_line(Stream::Stderr, |l| l == "to-err", WAIT, "to-err on stderr");
}

/// Every catchable signal sent to hivesup reaches the child's whole process group (the child
/// and its own child), and the child's exit code (0 after SIGTERM) is hivesup's.
#[test]
fn signals_forwarded_to_the_group() {
    for unshare in [false, true] {
        let t = TestDir::new();
        let ps = fx("print_signals.py");
        let mut h = Hivesup::init(t, &[&ps, "--tag", "parent", "--child"], unshare);
        h.wait_stdout("parent ready");
        h.wait_stdout("parentchild ready");
        for (sig, name) in [
            (libc::SIGHUP, "SIGHUP"),
            (libc::SIGUSR1, "SIGUSR1"),
            (libc::SIGUSR2, "SIGUSR2"),
            (libc::SIGWINCH, "SIGWINCH"),
            (libc::SIGCONT, "SIGCONT"),
            (libc::SIGTERM, "SIGTERM"),
        ] {
            h.signal(sig);
            h.wait_stdout(&format!("parent {name}"));
            h.wait_stdout(&format!("parentchild {name}"));
        }
        let c = h.wait_code(WAIT);
        h.check(c == 0, || {
            format!("child exited 0 after SIGTERM (unshare={unshare}): got {c}")
        });
    }
}

/// SIGINT is forwarded too; a child that dies of it gives 130.
#[test]
fn sigint_forwarded_child_dies_130() {
    let mut h = Hivesup::init(TestDir::new(), &["sleep", "1000"], false);
    // wait until sleep has been exec'd (hivesup's child is `sleep`)
    let pid = h.pid();
    poll("hivesup's child to be sleep", WAIT, || {
        descendants(pid)
            .iter()
            .any(|p| p.comm == "sleep")
            .then_some(())
    });
    h.signal(libc::SIGINT);
    let c = h.wait_code(WAIT);
    h.check(c == 130, || {
        format!("sleep killed by SIGINT: expected 130, got {c}")
    });
}

/// The child runs in its own session and process group.
#[test]
fn child_has_own_session() {
    let mut h = Hivesup::init(TestDir::new(), &["sleep", "1000"], false);
    let pid = h.pid();
    let child = poll("hivesup's child to be sleep", WAIT, || {
        descendants(pid).into_iter().find(|p| p.comm == "sleep")
    });
    h.check(
        child.session == child.pid && child.pgrp == child.pid,
        || format!("{child:?}"),
    );
    h.signal(libc::SIGTERM);
    assert_eq!(h.wait_code(WAIT), 143);
}

/// As PID 1: 1,000 orphans of the child are reaped; no zombie is left in the namespace.
#[test]
fn reaps_orphans_as_pid1() {
    let mut h = Hivesup::init(TestDir::new(), &[&fx("orphans.py"), "1000", "--stay"], true);
    h.wait_for_line(
        Stream::Stdout,
        |l| l == "orphans done 1000",
        LONG,
        "orphans done",
    );
    let pid = h.pid();
    // everything in the namespace but the child itself must go: no zombie, no orphan left
    let left = only_child_left(pid);
    h.check(left.len() == 1 && left[0].state != 'Z', || {
        let z = left.iter().filter(|p| p.state == 'Z').count();
        format!(
            "{} processes left under hivesup, {z} zombies: {:?}",
            left.len(),
            &left[..left.len().min(10)]
        )
    });
    h.signal(libc::SIGTERM);
    assert_eq!(h.wait_code(WAIT), 0);
}

/// Not PID 1: hivesup is a child subreaper, so orphans of its child are reparented to it (not
/// to the host's init) and reaped.
#[test]
fn subreaper_reaps_orphans_when_not_pid1() {
    let t = TestDir::new();
    let hold = t.p("release");
    let mut h = Hivesup::init(
        t,
        &[&fx("orphans.py"), "20", "--hold", &hold, "--stay"],
        false,
    );
    h.wait_stdout("orphans done 20");
    let pid = h.pid();
    let kids: Vec<Proc> = poll("20 orphans reparented to hivesup", WAIT, || {
        let k: Vec<Proc> = descendants(pid)
            .into_iter()
            .filter(|p| p.ppid == pid && p.comm == "orphans.py")
            .collect();
        // the child itself plus 20 orphans
        (k.len() == 21).then_some(k)
    });
    drop(kids);
    h.dir.touch("release");
    let left = only_child_left(pid);
    h.check(left.len() == 1 && left[0].state != 'Z', || {
        format!("left under hivesup: {left:?}")
    });
    h.signal(libc::SIGTERM);
    assert_eq!(h.wait_code(WAIT), 0);
}

/// Polls until exactly one process (the child) is left under `root`; returns what is left then
/// (or at the deadline).
fn only_child_left(root: i32) -> Vec<Proc> {
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let left = descendants(root);
        let done = left.len() == 1 && left[0].state != 'Z';
        if done || std::time::Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
