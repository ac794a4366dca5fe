//! The control socket and `hivesup ctl` (issue 6): every verb against a running hivesup
//! with real programs, operator-stopped programs on /health, serialised concurrent starts,
//! reload (added, removed, changed, invalid), SIGHUP reload, and the errors: no such
//! program, no socket, nothing listening, permission denied for a non-root caller.
#![allow(clippy::disallowed_methods)]
mod common;
use common::*;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::process::Command;
use std::time::Duration;

fn sleeper(name: &str, priority: u32, extra: &str) -> String {
    format!(
        "[programs.{name}]\ncommand = {cmd}\npriority = {priority}\nsettle_time = \"100ms\"\nrestart = \"always\"\n{extra}\n",
        cmd = arr(&[fx("print_signals.py"), "--tag".into(), name.into()]),
    )
}

fn two_programs() -> String {
    format!(
        "{}{}{}",
        supervisor(""),
        sleeper("db", 100, ""),
        sleeper("api", 200, "")
    )
}

fn pid_of(h: &mut Hivesup, name: &str) -> i64 {
    h.program(name)["pid"]
        .as_i64()
        .unwrap_or_else(|| h.fail(&format!("{name} has no pid")))
}

#[test]
fn status_lists_programs_as_table_and_json() {
    let mut h = Hivesup::start(TestDir::new(), &two_programs());
    h.wait_http("/health", 200, WAIT);
    let (code, out, err) = h.ctl(&["status"]);
    h.check(code == 0, || format!("ctl status: {code}\n{out}\n{err}"));
    h.check(out.lines().next().unwrap_or("").starts_with("NAME"), || {
        format!("a table with a header: {out}")
    });
    h.check(
        out.lines()
            .any(|l| l.starts_with("api") && l.contains("running")),
        || format!("api running: {out}"),
    );
    let (code, out, _) = h.ctl(&["--json", "status", "db"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let programs = &v["done"]["status"]["programs"];
    h.check(code == 0 && programs["db"]["state"] == "running", || {
        out.to_string()
    });
    h.check(programs.get("api").is_none(), || {
        format!("status db shows only db: {out}")
    });
    let (code, _, err) = h.ctl(&["status", "nope"]);
    h.check(
        code == 1 && err.contains("no program \"nope\" (programs: api, db)"),
        || format!("unknown program: {code} {err}"),
    );
}

#[test]
fn stop_holds_a_program_and_health_counts_it_as_intended() {
    let mut h = Hivesup::start(TestDir::new(), &two_programs());
    h.wait_http("/health", 200, WAIT);
    let pid = pid_of(&mut h, "api");
    let (code, out, err) = h.ctl(&["stop", "api"]);
    h.check(code == 0 && out.contains("api stopped"), || {
        format!("ctl stop: {code}\n{out}\n{err}")
    });
    // ctl stop returned only once the process was gone.
    h.check(!alive(pid as i32, None), || {
        format!("api's process {pid} is still alive after ctl stop returned")
    });
    h.wait_stdout_contains("api SIGTERM");
    // restart = "always" does not bring it back: poll a while for a wrong restart.
    h.holds_for(Duration::from_millis(1500), "api stays stopped", |h| {
        h.program("api")["pid"].is_null()
    });
    let p = h.program("api");
    h.check(
        p["state"] == "stopped" && p["held"] == true && p["ok"] == true,
        || format!("held and ok: {p}"),
    );
    let r = h.get("/health?verbose");
    h.check(
        r.status == 200 && r.body.contains("[+]api ok (stopped by operator)"),
        || {
            format!(
                "/health counts a held program as intended: {} {}",
                r.status, r.body
            )
        },
    );
    let (code, out, _) = h.ctl(&["status"]);
    h.check(code == 0 && out.contains("stopped (held)"), || out.clone());
    let (code, out, _) = h.ctl(&["stop", "api"]);
    h.check(code == 0 && out.contains("already stopped"), || out.clone());

    let (code, out, err) = h.ctl(&["start", "api"]);
    h.check(code == 0 && out.contains("api is running"), || {
        format!("ctl start: {code}\n{out}\n{err}")
    });
    let p = h.program("api");
    h.check(p["state"] == "running" && p["held"] == false, || {
        p.to_string()
    });
    h.check(p["pid"].as_i64() != Some(pid), || p.to_string());
}

/// `ctl start` returns once the program is ready: here a listener that opens its port
/// 700 ms after it starts, with a tcp ready probe. When ctl returns, the port accepts.
#[test]
fn start_waits_for_readiness() {
    let t = TestDir::new();
    let port = free_port();
    let cfg = format!(
        r#"{sup}
[programs.web]
command = {cmd}
[programs.web.ready]
tcp = "127.0.0.1:{port}"
interval = "50ms"
"#,
        sup = supervisor(""),
        cmd = arr(&[
            fx("listener.py"),
            "--tcp".into(),
            format!("127.0.0.1:{port}"),
            "--delay".into(),
            "0.7".into()
        ]),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_http("/health", 200, WAIT);
    let (code, _, err) = h.ctl(&["stop", "web"]);
    h.check(code == 0, || err.clone());
    let (code, out, err) = h.ctl(&["start", "web"]);
    h.check(code == 0, || format!("{out}\n{err}"));
    h.check(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        || format!("ctl start returned ({out}) before web accepted connections"),
    );
    // --no-wait returns at once, before the port is open.
    let (code, _, _) = h.ctl(&["stop", "web"]);
    h.check(code == 0, String::new);
    let (code, out, _) = h.ctl(&["start", "--no-wait", "web"]);
    h.check(code == 0 && out.contains("web started"), || out.clone());
    h.wait_state("web", "running", WAIT);
}

#[test]
fn start_of_a_failing_program_reports_the_failure() {
    let t = TestDir::new();
    let cfg = format!(
        "{sup}\n[programs.bad]\ncommand = {cmd}\nrestart = \"never\"\nsettle_time = \"2s\"\n",
        sup = supervisor(""),
        cmd = arr(&[fx("exit.py"), "--after".into(), "0.1".into(), "3".into()]),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_state("bad", "failed", WAIT);
    let (code, _, err) = h.ctl(&["start", "bad"]);
    h.check(
        code == 1 && err.contains("bad failed to start") && err.contains("exit code 3"),
        || format!("{code}: {err}"),
    );
}

#[test]
fn restart_gives_a_new_process_and_counts() {
    let mut h = Hivesup::start(TestDir::new(), &two_programs());
    h.wait_http("/health", 200, WAIT);
    let before = h.program("db");
    let (code, out, err) = h.ctl(&["restart", "db"]);
    h.check(code == 0 && out.contains("db is running"), || {
        format!("{out}\n{err}")
    });
    let after = h.program("db");
    h.check(
        after["pid"] != before["pid"]
            && after["restarts"] == before["restarts"].as_u64().unwrap() + 1,
        || format!("before {before}\nafter {after}"),
    );
    // A restart by the operator is not a failure: the API was left alone.
    h.check(
        h.stdout().iter().all(|l| !l.ends_with("api SIGTERM")),
        || "api was signalled".into(),
    );
}

#[test]
fn signal_reaches_the_program() {
    let mut h = Hivesup::start(TestDir::new(), &two_programs());
    h.wait_http("/health", 200, WAIT);
    let (code, out, err) = h.ctl(&["signal", "USR1", "api"]);
    h.check(code == 0 && out.contains("sent SIGUSR1 to api"), || {
        format!("{out}\n{err}")
    });
    h.wait_stdout_contains("api SIGUSR1");
    let (code, _, err) = h.ctl(&["signal", "SIGBOGUS", "api"]);
    h.check(code == 1 && err.contains("SIGBOGUS"), || err.clone());
    let (code, _, _) = h.ctl(&["stop", "api"]);
    h.check(code == 0, String::new);
    let (code, _, err) = h.ctl(&["signal", "HUP", "api"]);
    h.check(code == 1 && err.contains("api is not running"), || {
        err.clone()
    });
}

#[test]
fn logs_tail_and_follow() {
    let t = TestDir::new();
    let cfg = format!(
        "{sup}\n[programs.chatty]\ncommand = {cmd}\nsettle_time = \"100ms\"\n",
        sup = supervisor(""),
        cmd = arr(&[fx("flood.py"), "50".into(), "--stay".into()]),
    );
    let h = Hivesup::start(t, &cfg);
    h.wait_stdout_contains("flood done 50");
    let (code, out, err) = h.ctl(&["logs", "-n", "3", "chatty"]);
    let lines: Vec<&str> = out.lines().collect();
    h.check(code == 0 && lines.len() == 3, || format!("{out}\n{err}"));
    h.check(
        lines[0].starts_with("flood 48 ") && lines[2] == "flood done 50",
        || format!("the last 3 lines: {lines:?}"),
    );
    let (_, out, _) = h.ctl(&["--json", "logs", "-n", "1", "chatty"]);
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    h.check(
        first["log"]["line"] == "flood done 50" && first["log"]["stream"] == "stdout",
        || out.clone(),
    );

    // -f: the next lines arrive as the program writes them (a restart writes 50 more).
    let socket = h.dir.p("ctl.sock");
    let mut follower = std::process::Command::new(BIN)
        .args([
            "ctl", "--socket", &socket, "logs", "-f", "-n", "0", "chatty",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // The follower is subscribed once it is connected; restart until its lines show up.
    let (code, _, _) = h.ctl(&["restart", "chatty"]);
    h.check(code == 0, String::new);
    let mut got = Vec::new();
    while let Ok(line) = rx.recv_timeout(WAIT) {
        got.push(line);
        if got.last().is_some_and(|l| l == "flood done 50") {
            break;
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();
    h.check(got.last().is_some_and(|l| l == "flood done 50"), || {
        format!("followed lines: {got:?}")
    });
    let (code, _, err) = h.ctl(&["logs", "nope"]);
    h.check(code == 1 && err.contains("no program \"nope\""), || {
        err.clone()
    });
}

/// Two `ctl start` at once on a stopped program start it once.
#[test]
fn concurrent_starts_start_once() {
    let t = TestDir::new();
    let cfg = format!(
        "{sup}\n[programs.p]\ncommand = {cmd}\nsettle_time = \"300ms\"\n",
        sup = supervisor(""),
        cmd = arr(&[fx("stamp.py"), t.p("starts"), fx("print_signals.py")]),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_state("p", "running", WAIT);
    let (code, _, _) = h.ctl(&["stop", "p"]);
    h.check(code == 0, String::new);
    let socket = h.dir.p("ctl.sock");
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let s = socket.clone();
            std::thread::spawn(move || {
                run(
                    Command::new(BIN).args(["ctl", "--socket", &s, "start", "p"]),
                    LONG,
                )
            })
        })
        .collect();
    for r in runs {
        let (code, out, err) = r.join().unwrap();
        h.check(code == 0, || format!("{out}\n{err}"));
    }
    let starts = h.dir.stamps("starts");
    h.check(starts.len() == 2, || {
        format!(
            "one start at boot + one for four concurrent ctl starts, got {}",
            starts.len()
        )
    });
}

#[test]
fn reload_adds_removes_and_restarts_only_changed_programs() {
    let t = TestDir::new();
    let cfg = format!(
        "{}{}{}{}",
        supervisor(""),
        sleeper("keep", 100, ""),
        sleeper("change", 100, ""),
        sleeper("drop", 200, "")
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_http("/health", 200, WAIT);
    let keep = pid_of(&mut h, "keep");
    let change = pid_of(&mut h, "change");
    let drop_pid = pid_of(&mut h, "drop");

    // An invalid file changes nothing and says why, with FILE:LINE:COL.
    let path = h.config_path.clone();
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!("{good}\n[programs.oops]\ncomand = [\"x\"]\n"),
    )
    .unwrap();
    let (code, _, err) = h.ctl(&["reload"]);
    h.check(
        code == 1
            && err.contains("reload refused, nothing changed")
            && err.contains(&format!("{path}:"))
            && err.contains("unknown key \"comand\""),
        || format!("{code}: {err}"),
    );
    let now = pid_of(&mut h, "change");
    h.check(now == change, || "an invalid reload restarted".into());

    let new = format!(
        "{}{}{}{}",
        good.split("[programs.").next().unwrap(),
        sleeper("keep", 100, ""),
        sleeper("change", 100, "stop_timeout = \"3s\""),
        sleeper("add", 300, "")
    );
    std::fs::write(&path, new).unwrap();
    let (code, out, err) = h.ctl(&["reload"]);
    h.check(
        code == 0 && out.contains("added add; changed change; removed drop"),
        || format!("{code}: {out}\n{err}"),
    );
    h.wait_state("add", "running", WAIT);
    let p = h.wait_program("change", WAIT, "restarted", |p| {
        p["state"] == "running" && p["pid"].as_i64() != Some(change)
    });
    h.check(p["restarts"] == 1, || p.to_string());
    let now = pid_of(&mut h, "keep");
    h.check(now == keep, || "keep was restarted".into());
    poll("drop's process gone", WAIT, || {
        (!alive(drop_pid as i32, None)).then_some(())
    });
    let listed = h.status()["programs"].get("drop").is_some();
    h.check(!listed, || "a removed program is no longer listed".into());
    h.wait_http("/health", 200, WAIT);
}

#[test]
fn sighup_reloads_when_asked_to() {
    let t = TestDir::new();
    let cfg = format!(
        "{}{}",
        supervisor("reload_on_sighup = true"),
        sleeper("a", 100, "forward_signals = [\"SIGHUP\"]")
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_state("a", "running", WAIT);
    let path = h.config_path.clone();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}{}", sleeper("b", 100, ""))).unwrap();
    h.signal(libc::SIGHUP);
    h.wait_stderr_contains("SIGHUP: reloaded: added b");
    h.wait_state("b", "running", WAIT);
    // Reloading replaces forwarding: a never saw the SIGHUP.
    h.check(h.stdout().iter().all(|l| !l.ends_with("a SIGHUP")), || {
        "SIGHUP was forwarded although reload_on_sighup = true".into()
    });
}

#[test]
fn shutdown_stops_everything_and_exits_0() {
    let mut h = Hivesup::start(TestDir::new(), &two_programs());
    h.wait_http("/health", 200, WAIT);
    let (code, out, _) = h.ctl(&["shutdown"]);
    h.check(code == 0 && out.contains("stopping all programs"), || {
        out.clone()
    });
    let code = h.wait_code(WAIT);
    h.check(code == 0, || format!("exit {code}"));
    h.check(!std::path::Path::new(&h.dir.p("ctl.sock")).exists(), || {
        "the socket file is removed at exit".into()
    });
}

#[test]
fn socket_is_private_and_refuses_other_users() {
    require_root("runs ctl as uid 65534");
    let mut h = Hivesup::start(TestDir::new(), &two_programs());
    h.wait_http("/health", 200, WAIT);
    let socket = h.dir.p("ctl.sock");
    let meta = std::fs::metadata(&socket).unwrap();
    h.check(
        meta.file_type().is_socket() && meta.permissions().mode() & 0o777 == 0o600,
        || format!("mode {:o}", meta.permissions().mode()),
    );
    let mut cmd = Command::new(BIN);
    {
        use std::os::unix::process::CommandExt;
        cmd.args(["ctl", "--socket", &socket, "stop", "api"])
            .uid(65534)
            .gid(65534);
    }
    let (code, _, err) = run(&mut cmd, WAIT);
    h.check(
        code == 3 && err.contains("permission denied") && err.contains("mode 600"),
        || format!("{code}: {err}"),
    );
    let state = h.state("api");
    h.check(state == "running", || format!("api was stopped: {state}"));
}

#[test]
fn unreachable_hivesup_is_explained() {
    let t = TestDir::new();
    let missing = t.p("nothing.sock");
    let (code, _, err) = hivesup(&["ctl", "--socket", &missing, "status"]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains(&format!(
            "no control socket at {missing}: is hivesup running?"
        )),
        "{err}"
    );
    // A socket file nobody listens on (hivesup was SIGKILLed).
    let stale = t.p("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let (code, _, err) = hivesup(&["ctl", "--socket", &stale, "status"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("nothing answers on"), "{err}");
    // The config says where the socket is, or that there is none.
    let cfg = t.write(
        "h.toml",
        "[supervisor]\ncontrol_socket = \"\"\n[programs.a]\ncommand = [\"true\"]\n",
    );
    let (code, _, err) = hivesup(&["-c", &cfg, "ctl", "status"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("control is disabled"), "{err}");
}

#[test]
fn a_stale_socket_is_replaced_and_a_live_one_is_not() {
    let t = TestDir::new();
    let stale = t.p("ctl.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let mut h = Hivesup::start(t, &two_programs());
    h.wait_http("/health", 200, WAIT);
    let (code, _, err) = h.ctl(&["status"]);
    h.check(code == 0, || format!("stale socket not replaced: {err}"));

    // A second hivesup with the same explicit socket refuses to start.
    let other = TestDir::new();
    let cfg = format!(
        "[supervisor]\nhealth_addr = \"\"\ncontrol_socket = {}\n{}",
        q(h.dir.p("ctl.sock")),
        sleeper("x", 100, "")
    );
    let mut second = Hivesup::start(other, &cfg);
    let code = second.wait_code(WAIT);
    second.check(code == 1, || format!("exit {code}"));
    second.check(
        second
            .stderr()
            .iter()
            .any(|l| l.contains("is in use by another running hivesup")),
        || "the reason".into(),
    );
    let (code, _, _) = h.ctl(&["status"]);
    h.check(code == 0, || "the first hivesup lost its socket".into());
}

/// Env files are re-read on reload: a changed value restarts the program that uses it,
/// and only that one.
#[test]
fn reload_rereads_environment_files() {
    let t = TestDir::new();
    t.write("app.env", "GREETING=one\n");
    let dump = |name: &str, files: &str| {
        format!(
            "[programs.{name}]\ncommand = {cmd}\nsettle_time = \"100ms\"\n{files}\n",
            cmd = arr(&[fx("envdump.py"), "GREETING".into()]),
        )
    };
    let cfg = format!(
        "{}{}{}",
        supervisor(""),
        dump("uses", "environment_files = [\"app.env\"]"),
        dump("other", "")
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_http("/health", 200, WAIT);
    h.wait_stdout_contains("uses | GREETING=one");
    let other = pid_of(&mut h, "other");
    h.dir.write("app.env", "GREETING=two\n");
    let (code, out, err) = h.ctl(&["reload"]);
    h.check(code == 0 && out.contains("changed uses"), || {
        format!("{out}\n{err}")
    });
    h.wait_stdout_contains("uses | GREETING=two");
    let now = pid_of(&mut h, "other");
    h.check(now == other, || "other was restarted".into());
}
