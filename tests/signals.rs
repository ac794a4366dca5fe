//! Signal forwarding (issue 2): SIGHUP, SIGUSR1 and SIGUSR2 to hivesup go to the running
//! programs whose forward_signals lists them, and to no other (uvicorn dies of a SIGHUP it does
//! not handle).
mod common;
use common::*;
use std::time::Duration;

#[test]
fn forwarded_only_to_programs_that_list_them() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.a]
settle_time = "100ms"
forward_signals = ["SIGHUP", "SIGUSR1"]
command = {ps}
[programs.b]
settle_time = "100ms"
forward_signals = ["USR2"]
command = {ps}
[programs.c]
settle_time = "100ms"
command = {ps}
"#,
        sup = supervisor(""),
        ps = arr(&[fx("print_signals.py")]),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_http("/health", 200, WAIT);
    h.wait_ready(&["a", "b", "c"]);
    // one signal at a time: standard signals coalesce
    h.signal(libc::SIGHUP);
    h.wait_stdout("a | SIGHUP");
    h.signal(libc::SIGUSR1);
    h.wait_stdout("a | SIGUSR1");
    h.signal(libc::SIGUSR2);
    h.wait_stdout("b | SIGUSR2");
    let code = h.stop();
    h.check(code == 0, || format!("expected 0, got {code}"));
    // after a full shutdown every forwarded signal has long been echoed: check what each got
    let got = |p: &str| -> Vec<String> {
        h.stdout()
            .iter()
            .filter_map(|l| l.strip_prefix(&format!("{p} | ")).map(str::to_string))
            .filter(|l| l.starts_with("SIG"))
            .collect()
    };
    h.check(got("a") == ["SIGHUP", "SIGUSR1", "SIGTERM"], || {
        format!("a got {:?}", got("a"))
    });
    h.check(got("b") == ["SIGUSR2", "SIGTERM"], || {
        format!("b got {:?}", got("b"))
    });
    h.check(got("c") == ["SIGTERM"], || format!("c got {:?}", got("c")));
}

/// A program that would die of SIGHUP (plain `sleep`) survives a SIGHUP to hivesup when it
/// does not list it; hivesup survives it too.
#[test]
fn unlisted_signal_does_not_reach_program() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.listener]
settle_time = "100ms"
forward_signals = ["SIGHUP", "SIGUSR1", "SIGUSR2"]
command = {ps}
[programs.sleeper]
settle_time = "100ms"
command = ["sleep", "1000"]
"#,
        sup = supervisor(""),
        ps = arr(&[fx("print_signals.py")]),
    );
    let mut h = Hivesup::start(t, &cfg);
    let j = h.wait_http("/health", 200, WAIT).json();
    let pid = j["programs"]["sleeper"]["pid"].clone();
    h.wait_ready(&["listener"]);
    for (sig, name) in [
        (libc::SIGHUP, "SIGHUP"),
        (libc::SIGUSR1, "SIGUSR1"),
        (libc::SIGUSR2, "SIGUSR2"),
    ] {
        h.signal(sig);
        h.wait_stdout(&format!("listener | {name}"));
    }
    h.holds_for(Duration::from_millis(500), "sleeper untouched", |h| {
        let s = h.program("sleeper");
        s["pid"] == pid && s["restarts"] == 0 && s["state"] == "running"
    });
    assert_eq!(h.get("/livez").status, 200);
    assert_eq!(h.stop(), 0);
}

/// A forwarded signal is not sent to a program that is not running (pending behind a
/// not-ready priority), and does not disturb hivesup.
#[test]
fn forward_to_running_programs_only() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.gate]
priority = 1
command = {ps}
[programs.gate.ready]
exec = ["false"]
interval = "100ms"
timeout = "60s"
[programs.witness]
priority = 1
settle_time = "100ms"
forward_signals = ["SIGHUP"]
command = {ps}
[programs.later]
priority = 2
forward_signals = ["SIGHUP"]
command = {ps}
"#,
        sup = supervisor(""),
        ps = arr(&[fx("print_signals.py")]),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_stdout("gate | ready");
    h.wait_state("witness", "running", WAIT);
    h.wait_ready(&["witness"]);
    h.signal(libc::SIGHUP);
    h.wait_stdout("witness | SIGHUP");
    assert_eq!(h.state("later"), "pending");
    assert_eq!(h.get("/livez").status, 200);
    assert_eq!(h.stop(), 0);
    h.check(
        !h.stdout().iter().any(|l| l.starts_with("later | ")),
        || "later was started".into(),
    );
}
