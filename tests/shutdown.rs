//! Shutdown (issue 2): SIGTERM/SIGINT/SIGQUIT stop programs in reverse priority order, each
//! group after the previous has fully exited; stop_signal to the process group; SIGKILL after
//! stop_timeout and then exit 1; exit 0 when everything stopped in time; descendants that left
//! the group (setsid, like postgres backends) are killed too; no restarts while shutting down.
mod common;
use common::*;
use std::time::Duration;

fn ps(t: &TestDir, name: &str, extra: &[&str]) -> String {
    let mut v = vec![fx("print_signals.py"), "--stamp".into(), t.p(name)];
    v.extend(extra.iter().map(|s| s.to_string()));
    arr(&v)
}

/// Priorities 10, 20, 30 stop as 30, 20, 10; 20 gets its stop signal only after 30 (which takes
/// 500 ms to exit) has fully exited.
#[test]
fn reverse_priority_stop_order() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.a]
priority = 10
settle_time = "100ms"
command = {a}
[programs.b]
priority = 20
settle_time = "100ms"
command = {b}
[programs.c]
priority = 30
settle_time = "100ms"
command = {c}
"#,
        sup = supervisor(""),
        a = ps(&t, "a", &[]),
        b = ps(&t, "b", &[]),
        c = ps(&t, "c", &["--term-delay", "0.5"]),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_http("/health", 200, WAIT);
    h.wait_ready(&["a", "b", "c"]);
    let code = h.stop();
    h.check(code == 0, || {
        format!("clean stop should exit 0, got {code}")
    });
    let d = &h.dir;
    let get = |n: &str, what: &str| {
        d.stamp_of(n, what)
            .unwrap_or_else(|| panic!("{n}: no `{what}` stamp"))
    };
    let (a_rx, b_rx, c_rx) = (
        get("a", "received SIGTERM"),
        get("b", "received SIGTERM"),
        get("c", "received SIGTERM"),
    );
    let (b_exit, c_exit) = (get("b", "exit"), get("c", "exit"));
    h.check(c_rx < b_rx && b_rx < a_rx, || {
        format!("stop order should be c, b, a: c {c_rx} b {b_rx} a {a_rx}")
    });
    h.check(b_rx > c_exit, || {
        format!("b was signalled before c had exited: b {b_rx} c exit {c_exit}")
    });
    h.check(a_rx > b_exit, || {
        format!("a was signalled before b had exited: a {a_rx} b exit {b_exit}")
    });
}

/// SIGINT and SIGQUIT shut down like SIGTERM; each program gets its own stop_signal
/// (names, SIG-names and numbers accepted).
#[test]
fn sigint_and_sigquit_shut_down_with_stop_signal() {
    for (sig, name) in [
        (libc::SIGINT, "SIGINT"),
        (libc::SIGQUIT, "SIGQUIT"),
        (libc::SIGTERM, "SIGTERM"),
    ] {
        let t = TestDir::new();
        let cfg = format!(
            r#"{sup}
[programs.term]
settle_time = "100ms"
command = {p1}
[programs.int]
settle_time = "100ms"
stop_signal = "INT"
command = {p2}
[programs.usr1]
settle_time = "100ms"
stop_signal = "10"
command = {p3}
"#,
            sup = supervisor(""),
            p1 = arr(&[fx("print_signals.py")]),
            p2 = arr(&[fx("print_signals.py")]),
            p3 = arr(&[fx("print_signals.py"), "--exit-on".into(), "SIGUSR1".into()]),
        );
        let mut h = Hivesup::start(t, &cfg);
        h.wait_http("/health", 200, WAIT);
        h.wait_ready(&["term", "int", "usr1"]);
        h.signal(sig);
        let code = h.wait_code(LONG);
        h.check(code == 0, || {
            format!("{name}: clean stop should exit 0, got {code}")
        });
        for want in ["term | SIGTERM", "int | SIGINT", "usr1 | SIGUSR1"] {
            h.check(h.stdout().iter().any(|l| l == want), || {
                format!("{name}: missing {want:?}")
            });
        }
    }
}

/// A program that ignores its stop signal is SIGKILLed after stop_timeout, and hivesup exits 1.
#[test]
fn sigkill_escalation_exits_1() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.stubborn]
settle_time = "100ms"
stop_timeout = "500ms"
command = {cmd}
[programs.nice]
settle_time = "100ms"
command = {nice}
"#,
        sup = supervisor(""),
        cmd = arr(&[fx("ignore_term.py"), "--pidfile".into(), t.p("pid")]),
        nice = arr(&[fx("print_signals.py")]),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_http("/health", 200, WAIT);
    h.wait_ready(&["stubborn", "nice"]);
    let pid: i32 = h.dir.read("pid").unwrap().parse().unwrap();
    let start = read_proc(pid).unwrap().starttime;
    let code = h.stop();
    h.check(code == 1, || {
        format!("something was SIGKILLed: expected exit 1, got {code}")
    });
    h.check(!alive(pid, Some(start)), || {
        "the stubborn program is still alive".into()
    });
    h.check(h.stdout().iter().any(|l| l == "nice | SIGTERM"), || {
        "the other program was not stopped".into()
    });
}

/// The stop signal goes to the program's process group: both children of a shell get it.
#[test]
fn stop_signal_goes_to_the_group() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.sh]
settle_time = "300ms"
command = "{ps} --tag one & {ps} --tag two & wait"
"#,
        sup = supervisor(""),
        ps = fx("print_signals.py"),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_stdout("sh | one ready");
    h.wait_stdout("sh | two ready");
    h.wait_http("/health", 200, WAIT);
    let code = h.stop();
    for want in ["sh | one SIGTERM", "sh | two SIGTERM"] {
        h.check(h.stdout().iter().any(|l| l == want), || {
            format!("missing {want:?}: the group did not get SIGTERM")
        });
    }
    h.check(code == 0, || {
        format!("everything stopped in time: expected 0, got {code}")
    });
}

/// SIGKILL escalation kills the whole group, grandchildren included.
#[test]
fn sigkill_escalation_kills_the_group() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.sh]
settle_time = "300ms"
stop_timeout = "500ms"
command = "{it} --pidfile {p1} & {it} --pidfile {p2} & wait"
"#,
        sup = supervisor(""),
        it = fx("ignore_term.py"),
        p1 = t.p("p1"),
        p2 = t.p("p2"),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_http("/health", 200, WAIT);
    let pids: Vec<(i32, u64)> = ["p1", "p2"]
        .iter()
        .map(|f| {
            let pid: i32 = poll("pidfile", WAIT, || h.dir.read(f)).parse().unwrap();
            (pid, read_proc(pid).unwrap().starttime)
        })
        .collect();
    let code = h.stop();
    h.check(code == 1, || {
        format!("expected 1 after SIGKILL, got {code}")
    });
    for (pid, st) in pids {
        h.check(!alive(pid, Some(st)), || {
            format!("group member {pid} survived the SIGKILL")
        });
    }
}

/// Members of the group other than its leader get their stop_timeout too: when the shell
/// (the program's main process) dies of SIGTERM at once, its child that handles SIGTERM and
/// needs 1 s to finish is not SIGKILLed early (uvicorn workers finishing requests).
#[test]
fn group_members_get_their_stop_timeout() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.sh]
settle_time = "300ms"
stop_timeout = "8s"
command = "{ps} --term-delay 1 --stamp {stamp} & wait"
"#,
        sup = supervisor("shutdown_timeout = \"9s\""),
        ps = fx("print_signals.py"),
        stamp = t.p("worker"),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_ready(&["sh"]);
    h.wait_http("/health", 200, WAIT);
    let code = h.stop();
    h.check(
        h.dir.stamp_of("worker", "received SIGTERM").is_some(),
        || "the worker did not get SIGTERM".into(),
    );
    h.check(h.dir.stamp_of("worker", "exit").is_some(), || {
        "the worker was killed before it could finish within stop_timeout".into()
    });
    h.check(code == 0, || {
        format!("everything stopped within stop_timeout: expected 0, got {code}")
    });
}

/// A descendant that called setsid() (left the group, like a postgres backend) is found and
/// killed when the program is SIGKILLed at shutdown. Runs hivesup as a child subreaper (not
/// PID 1), so nothing but hivesup itself can have killed it.
#[test]
fn setsid_escapee_killed_on_escalation() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.pm]
settle_time = "300ms"
stop_timeout = "500ms"
command = {cmd}
"#,
        sup = supervisor(""),
        cmd = arr(&[fx("escapee.py"), t.p("escapee.pid"), "--ignore-term".into()]),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_stdout("pm | ready");
    let pid: i32 = h.dir.read("escapee.pid").unwrap().parse().unwrap();
    let p = read_proc(pid).unwrap();
    let main = h.program("pm")["pid"].as_i64().unwrap() as i32;
    h.check(p.session != main && p.pgrp != main, || {
        format!("fixture: escapee did not leave the group: {p:?}")
    });
    let code = h.stop();
    h.check(!alive(pid, Some(p.starttime)), || {
        format!("setsid escapee {pid} survived the shutdown")
    });
    h.check(code == 1, || {
        format!("expected 1 after SIGKILL, got {code}")
    });
}

/// Even when the program's main process stops cleanly, a setsid escapee it left behind does not
/// outlive hivesup (shutdown_timeout: "SIGKILL to all that is left at the end").
#[test]
fn setsid_escapee_killed_on_clean_stop() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.pm]
settle_time = "300ms"
stop_timeout = "500ms"
command = {cmd}
"#,
        sup = supervisor("shutdown_timeout = \"3s\""),
        cmd = arr(&[fx("escapee.py"), t.p("escapee.pid")]),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_stdout("pm | ready");
    let pid: i32 = h.dir.read("escapee.pid").unwrap().parse().unwrap();
    let st = read_proc(pid).unwrap().starttime;
    h.signal(libc::SIGTERM);
    h.wait_exit(LONG);
    h.check(!alive(pid, Some(st)), || {
        format!("setsid escapee {pid} outlived hivesup")
    });
}

/// Before a program is started again, descendants of its previous run that left its group are
/// killed: the restarted run checks for its predecessor's escapee itself.
#[test]
fn setsid_escapee_killed_before_restart() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.pm]
settle_time = "300ms"
restart_backoff = "100ms"
command = {cmd}
"#,
        sup = supervisor(""),
        cmd = arr(&[
            fx("escapee.py"),
            t.p("escapee.pid"),
            "--exit-after-spawn".into(),
            "1".into(),
            "--count".into(),
            t.p("count"),
        ]),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_stdout("pm | predecessor none");
    let l = h.wait_for_line(
        Stream::Stdout,
        |l| l.starts_with("pm | predecessor ") && !l.ends_with("none"),
        WAIT,
        "second run",
    );
    h.check(l == "pm | predecessor gone", || {
        format!("the restarted program met its predecessor's escapee: {l:?}")
    });
    h.stop();
}

/// No restarts while shutting down: a restart = "always" program that exits on SIGTERM is not
/// started again, and hivesup exits 0.
#[test]
fn no_restart_during_shutdown() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.p]
restart = "always"
restart_backoff = "10ms"
settle_time = "100ms"
command = {cmd}
"#,
        sup = supervisor(""),
        cmd = arr(&[fx("stamp.py"), t.p("starts"), fx("print_signals.py")]),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_http("/health", 200, WAIT);
    h.wait_ready(&["p"]);
    let code = h.stop();
    h.check(code == 0, || format!("expected 0, got {code}"));
    h.check(h.dir.stamps("starts").len() == 1, || {
        "restarted during shutdown".into()
    });
}

/// During shutdown /health is 503 with status "stopping"; a higher priority that has exited
/// is `stopped` while a lower one is still `stopping`.
#[test]
fn health_while_stopping() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.low]
priority = 1
settle_time = "100ms"
stop_timeout = "20s"
command = {low}
[programs.high]
priority = 2
settle_time = "100ms"
command = {high}
"#,
        sup = supervisor(""),
        low = arr(&[fx("print_signals.py"), "--term-delay".into(), "2".into()]),
        high = arr(&[fx("print_signals.py")]),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_http("/health", 200, WAIT);
    h.wait_ready(&["low", "high"]);
    h.signal(libc::SIGTERM);
    h.wait_stdout("low | SIGTERM");
    let r = h.get("/health");
    h.check(r.status == 503, || {
        format!(
            "/health during shutdown should be 503: {} {}",
            r.status, r.body
        )
    });
    let j = r.json();
    h.check(j["status"] == "stopping", || {
        format!("status should be stopping: {j}")
    });
    h.check(j["programs"]["low"]["state"] == "stopping", || {
        format!("low should be stopping: {j}")
    });
    h.check(j["programs"]["high"]["state"] == "stopped", || {
        format!("high should be stopped: {j}")
    });
    let code = h.wait_code(LONG);
    assert_eq!(code, 0);
}

/// shutdown_timeout bounds the whole stop: a program with a long stop_timeout that ignores
/// SIGTERM is SIGKILLed when shutdown_timeout runs out (exit 1), not after its stop_timeout.
#[test]
fn shutdown_timeout_bounds_everything() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.stubborn]
settle_time = "100ms"
stop_timeout = "120s"
command = {cmd}
"#,
        sup = supervisor("shutdown_timeout = \"1s\""),
        cmd = arr(&[fx("ignore_term.py")]),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_http("/health", 200, WAIT);
    h.wait_ready(&["stubborn"]);
    h.signal(libc::SIGTERM);
    // far below the 120 s stop_timeout: the 1 s shutdown_timeout must have cut it short
    let code = h.wait_code(Duration::from_secs(20));
    h.check(code == 1, || {
        format!("expected 1 after SIGKILL, got {code}")
    });
}

/// SIGTERM while a program waits in backoff: it is not started again, hivesup exits 0 without
/// waiting out the backoff.
#[test]
fn shutdown_during_backoff() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.p]
restart_backoff = "60s"
settle_time = "100ms"
command = {cmd}
"#,
        sup = supervisor(""),
        cmd = arr(&[fx("stamp.py"), t.p("starts"), fx("exit.py"), "1".into()]),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_state("p", "backoff", WAIT);
    h.signal(libc::SIGTERM);
    // far below the 60 s backoff
    let code = h.wait_code(Duration::from_secs(20));
    h.check(code == 0, || format!("expected 0, got {code}"));
    h.check(h.dir.stamps("starts").len() == 1, || {
        "started again during shutdown".into()
    });
}

/// SIGTERM while a program is still starting (its ready probe never passes): it is stopped
/// with its stop signal, the next priority is never started, exit 0.
#[test]
fn shutdown_while_starting() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.slow]
priority = 1
command = {ps}
[programs.slow.ready]
exec = ["false"]
interval = "100ms"
timeout = "60s"
[programs.next]
priority = 2
command = {next}
"#,
        sup = supervisor(""),
        ps = arr(&[fx("print_signals.py")]),
        next = arr(&[fx("stamp.py"), t.p("next"), fx("print_signals.py")]),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_ready(&["slow"]);
    h.signal(libc::SIGTERM);
    let code = h.wait_code(LONG);
    h.check(code == 0, || format!("expected 0, got {code}"));
    h.check(h.stdout().iter().any(|l| l == "slow | SIGTERM"), || {
        "slow did not get SIGTERM".into()
    });
    h.check(h.dir.read("next").is_none(), || {
        "next was started during shutdown".into()
    });
}

/// Same after a failed start (ready timeout): the not-ready program is stopped, and its setsid
/// escapee is gone before the next attempt runs.
#[test]
fn setsid_escapee_killed_before_retry_after_ready_timeout() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.pm]
restart_backoff = "100ms"
start_retries = 2
stop_timeout = "2s"
command = {cmd}
[programs.pm.ready]
exec = ["false"]
interval = "100ms"
timeout = "700ms"
"#,
        sup = supervisor(""),
        cmd = arr(&[fx("escapee.py"), t.p("escapee.pid")]),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_stdout("pm | predecessor none");
    let l = h.wait_for_line(
        Stream::Stdout,
        |l| l.starts_with("pm | predecessor ") && !l.ends_with("none"),
        LONG,
        "the retry",
    );
    h.check(l == "pm | predecessor gone", || {
        format!("the retry met its predecessor's escapee: {l:?}")
    });
    h.wait_state("pm", "failed", LONG);
    h.stop();
}

/// A second SIGTERM (or SIGINT) during shutdown neither restarts the stop nor cuts it short:
/// the program still finishes its own 1 s shutdown and hivesup exits 0.
#[test]
fn repeated_stop_signals_during_shutdown() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.p]
settle_time = "100ms"
stop_timeout = "10s"
command = {cmd}
"#,
        sup = supervisor(""),
        cmd = arr(&[
            fx("print_signals.py"),
            "--term-delay".into(),
            "1".into(),
            "--stamp".into(),
            t.p("p")
        ]),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_ready(&["p"]);
    h.wait_http("/health", 200, WAIT);
    h.signal(libc::SIGTERM);
    h.wait_stdout("p | SIGTERM");
    h.signal(libc::SIGTERM);
    h.signal(libc::SIGINT);
    let code = h.wait_code(LONG);
    h.check(code == 0, || format!("expected 0, got {code}"));
    h.check(h.dir.stamp_of("p", "exit").is_some(), || {
        "p was killed before finishing its shutdown".into()
    });
    h.assert_no_panic();
}
