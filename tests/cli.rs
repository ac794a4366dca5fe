//! CLI against a running hivesup (contract "CLI"): `health` exits 0 on 200, 1 on 503, refused
//! or timeout; its address defaults to the config's health_addr (0.0.0.0 -> 127.0.0.1);
//! `status` prints the table NAME STATE PID UPTIME RESTARTS READY HEALTHY, `--json` the JSON.
mod common;
use common::*;
use std::net::TcpListener;
use std::process::Command;

fn cfg(t: &TestDir) -> String {
    format!(
        r#"{sup}
[programs.web]
command = {ps}
[programs.web.ready]
exec = ["test", "-e", {go}]
interval = "50ms"
timeout = "60s"
"#,
        sup = supervisor(""),
        ps = arr(&[fx("print_signals.py")]),
        go = q(t.p("go")),
    )
}

#[test]
fn health_exit_codes_200_and_503() {
    let t = TestDir::new();
    let c = cfg(&t);
    let mut h = Hivesup::start(t, &c);
    let addr = h.addr().to_string();
    h.wait_stdout("web | ready");
    let (code, out, err) = hivesup(&["health", "--addr", &addr]);
    h.check(code == 1, || {
        format!("`health` on 503 should exit 1, got {code}\n{out}{err}")
    });
    h.dir.touch("go");
    h.wait_http("/health", 200, WAIT);
    let (code, out, err) = hivesup(&["health", "--addr", &addr]);
    h.check(code == 0, || {
        format!("`health` on 200 should exit 0, got {code}\n{out}{err}")
    });
    assert_eq!(h.stop(), 0);
}

/// Without --addr, `health` uses the config's health_addr, mapping 0.0.0.0 to 127.0.0.1.
#[test]
fn health_default_addr_from_config() {
    let t = TestDir::new();
    t.touch("go");
    let c = cfg(&t);
    let mut h = Hivesup::start(t, &c);
    let port = h.addr().port();
    h.wait_http("/health", 200, WAIT);
    let other = h.dir.write(
        "client.toml",
        &format!(
            "[supervisor]\nhealth_addr = \"0.0.0.0:{port}\"\n[programs.x]\ncommand = [\"true\"]\n"
        ),
    );
    let (code, out, err) = hivesup(&["--config", &other, "health"]);
    h.check(code == 0, || {
        format!("`--config F health` should reach 127.0.0.1:{port}: exit {code}\n{out}{err}")
    });
    // HIVESUP_CONFIG is the default config file
    let (code, out, err) = run(
        Command::new(BIN)
            .arg("health")
            .env("HIVESUP_CONFIG", &other),
        WAIT,
    );
    h.check(code == 0, || {
        format!("HIVESUP_CONFIG should be used: exit {code}\n{out}{err}")
    });
    assert_eq!(h.stop(), 0);
}

#[test]
fn health_exit_1_on_refused() {
    let port = free_port(); // nothing listens there now
    let (code, out, err) = hivesup(&["health", "--addr", &format!("127.0.0.1:{port}")]);
    assert_eq!(code, 1, "connection refused should exit 1\n{out}{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// A server that accepts but never answers: `health` gives up (timeout <= 3 s) with exit 1.
#[test]
fn health_exit_1_on_timeout() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    // accepted connections are held open by the backlog; nobody answers
    let (code, out, err) = hivesup(&["health", "--addr", &addr]);
    assert_eq!(code, 1, "an unanswered request should exit 1\n{out}{err}");
    drop(l);
}

#[test]
fn status_table_and_json() {
    let t = TestDir::new();
    t.touch("go");
    let c = cfg(&t);
    let mut h = Hivesup::start(t, &c);
    let addr = h.addr().to_string();
    let j = h.wait_http("/health", 200, WAIT).json();
    let pid = j["programs"]["web"]["pid"].as_i64().unwrap().to_string();
    let (code, out, err) = hivesup(&["status", "--addr", &addr]);
    h.check(code == 0, || format!("status exit {code}\n{out}{err}"));
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    h.check(
        header
            == [
                "NAME", "STATE", "PID", "UPTIME", "RESTARTS", "READY", "HEALTHY",
            ],
        || format!("status header: {header:?}\n{out}"),
    );
    let row: Vec<&str> = lines
        .find(|l| l.starts_with("web"))
        .unwrap_or("")
        .split_whitespace()
        .collect();
    h.check(
        row.len() == 7 && row[0] == "web" && row[1] == "running" && row[2] == pid && row[4] == "0",
        || format!("status row for web: {row:?}\n{out}"),
    );
    let (code, out, err) = hivesup(&["status", "--addr", &addr, "--json"]);
    h.check(code == 0, || {
        format!("status --json exit {code}\n{out}{err}")
    });
    let v: serde_json::Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| h.fail(&format!("status --json: {e}: {out}")));
    h.check(v["programs"]["web"]["state"] == "running", || {
        format!("{v}")
    });
    assert_eq!(h.stop(), 0);
}

#[test]
fn status_unreachable_exits_non_zero() {
    let port = free_port();
    let (code, out, err) = hivesup(&["status", "--addr", &format!("127.0.0.1:{port}")]);
    assert_ne!(code, 0, "status against nothing should fail\n{out}{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// `hivesup` without --config supervises $HIVESUP_CONFIG.
#[test]
fn supervise_uses_hivesup_config_env() {
    let t = TestDir::new();
    let cfg = format!(
        "{sup}\n[programs.p]\nsettle_time = \"100ms\"\ncommand = {ps}\n",
        sup = supervisor(""),
        ps = arr(&[fx("print_signals.py")]),
    );
    let path = t.write("elsewhere.toml", &cfg);
    let mut h = Hivesup::start_with(
        t,
        "",
        Opts {
            args: Some(vec![]),
            env: vec![("HIVESUP_CONFIG".into(), path)],
            ..Opts::default()
        },
    );
    h.wait_ready(&["p"]);
    h.wait_http("/health", 200, WAIT);
    assert_eq!(h.stop(), 0);
}

/// Supervise mode with an invalid config: exit 2, the error located as FILE:LINE:COL, nothing
/// started.
#[test]
fn supervise_invalid_config_exits_2() {
    let t = TestDir::new();
    let cfg = format!(
        "{sup}\n[programs.p]\ncommand = {cmd}\nrestart = \"sometimes\"\n",
        sup = supervisor(""),
        cmd = arr(&[fx("stamp.py"), t.p("started"), fx("print_signals.py")]),
    );
    let mut h = Hivesup::start(t, &cfg);
    let code = h.wait_code(WAIT);
    h.check(code == 2, || {
        format!("invalid config: expected exit 2, got {code}")
    });
    h.assert_no_panic();
    let line = h
        .config
        .lines()
        .position(|l| l.starts_with("restart"))
        .unwrap()
        + 1;
    let want = format!("{}:{line}:", h.config_path);
    h.check(
        h.stderr()
            .iter()
            .any(|l| l.contains(&want) && l.contains("sometimes")),
        || format!("expected a `{want}COL: ...` line naming \"sometimes\""),
    );
    h.check(h.dir.read("started").is_none(), || {
        "a program was started".into()
    });
}

/// A usage error (unknown option) exits 2 without a panic.
#[test]
fn usage_error_exits_2() {
    let (code, out, err) = hivesup(&["--no-such-option"]);
    assert_eq!(code, 2, "usage error should exit 2\n{out}{err}");
    assert!(!err.contains("panicked"), "{err}");
}
