//! HTTP endpoints (issue 2 "HTTP", contract "HTTP on health_addr"): /health JSON shape,
//! ?verbose text, /readyz, /livez, /status always 200, /metrics names, no secrets, and a health
//! port already in use -> clear error, nothing started.
mod common;
use common::*;
use std::net::TcpListener;

fn two_programs(t: &TestDir) -> String {
    format!(
        r#"{sup}
[programs.web]
settle_time = "100ms"
environment = {{ SECRET_TOKEN = "hunter2-very-secret" }}
command = {ps}
[programs.db]
command = {ps}
[programs.db.ready]
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
fn health_json_shape() {
    let t = TestDir::new();
    t.touch("go");
    let cfg = two_programs(&t);
    let mut h = Hivesup::start(t, &cfg);
    let r = h.wait_http("/health", 200, WAIT);
    h.check(
        r.header("content-type")
            .is_some_and(|c| c.contains("application/json")),
        || format!("content-type should be JSON: {:?}", r.headers),
    );
    let j = r.json();
    h.check(j["status"] == "ok", || format!("{j}"));
    let web = &j["programs"]["web"];
    for key in [
        "state",
        "pid",
        "ready",
        "healthy",
        "restarts",
        "uptime_seconds",
        "last_exit",
        "last_probe_error",
    ] {
        h.check(web.get(key).is_some(), || {
            format!("programs.web lacks {key:?}: {j}")
        });
    }
    h.check(web["state"] == "running", || format!("{j}"));
    h.check(web["ready"] == true && web["healthy"] == true, || {
        format!("{j}")
    });
    h.check(web["restarts"] == 0, || format!("{j}"));
    h.check(
        web["uptime_seconds"].as_f64().is_some_and(|u| u >= 0.0),
        || format!("uptime_seconds: {j}"),
    );
    h.check(
        web["last_exit"].is_null() && web["last_probe_error"].is_null(),
        || format!("{j}"),
    );
    // pid is a real child of hivesup, in its own process group
    let pid = web["pid"]
        .as_i64()
        .unwrap_or_else(|| h.fail(&format!("pid should be a number: {j}"))) as i32;
    let p = read_proc(pid).unwrap_or_else(|| h.fail(&format!("pid {pid} does not exist")));
    h.check(p.ppid == h.pid(), || {
        format!("pid {pid} is not hivesup's child: {p:?}")
    });
    h.check(p.pgrp == pid, || {
        format!("program {pid} is not its own process group leader: {p:?}")
    });
    // /readyz is the same
    let rz = h.get("/readyz");
    h.check(rz.status == 200, || {
        format!("/readyz: {} {}", rz.status, rz.body)
    });
    assert_eq!(h.stop(), 0);
}

#[test]
fn status_always_200_health_and_readyz_503_when_not_ready() {
    let t = TestDir::new();
    let cfg = two_programs(&t);
    let mut h = Hivesup::start(t, &cfg);
    h.wait_stdout("db | ready");
    h.wait_state("web", "running", WAIT);
    for path in ["/health", "/readyz"] {
        let r = h.get(path);
        h.check(r.status == 503, || {
            format!(
                "{path} should be 503 while db is not ready: {} {}",
                r.status, r.body
            )
        });
        let j = r.json();
        h.check(j["programs"]["db"]["state"] == "starting", || {
            format!("{j}")
        });
    }
    let s = h.get("/status");
    h.check(s.status == 200, || {
        format!("/status must always be 200: {}", s.status)
    });
    let j = s.json();
    h.check(j["status"] == "starting", || format!("{j}"));
    h.check(j["programs"]["web"]["state"] == "running", || {
        format!("{j}")
    });
    assert_eq!(h.stop(), 0);
}

#[test]
fn verbose_text() {
    let t = TestDir::new();
    let cfg = two_programs(&t);
    let mut h = Hivesup::start(t, &cfg);
    h.wait_stdout("db | ready");
    h.wait_state("web", "running", WAIT);
    let r = h.get("/health?verbose");
    h.check(r.status == 503, || format!("{} {}", r.status, r.body));
    let lines: Vec<&str> = r.body.lines().collect();
    h.check(lines.contains(&"[+]web ok"), || {
        format!("missing `[+]web ok`: {:?}", r.body)
    });
    h.check(
        lines.iter().any(|l| l.starts_with("[-]db failed: ")),
        || format!("missing `[-]db failed: reason`: {:?}", r.body),
    );
    h.check(lines.last() == Some(&"health check failed"), || {
        format!("last line should be `health check failed`: {:?}", r.body)
    });

    h.dir.touch("go");
    h.wait_http("/health", 200, WAIT);
    for path in ["/health?verbose", "/readyz?verbose"] {
        let r = h.get(path);
        let lines: Vec<&str> = r.body.lines().collect();
        h.check(r.status == 200, || format!("{path}: {}", r.status));
        h.check(
            lines.contains(&"[+]web ok") && lines.contains(&"[+]db ok"),
            || format!("{path}: {:?}", r.body),
        );
        // contract: final line `health check passed`; Kubernetes spells it after the endpoint
        // (`readyz check passed`), so /readyz may use its own name
        let ok_last = if path.starts_with("/health") {
            vec!["health check passed"]
        } else {
            vec!["health check passed", "readyz check passed"]
        };
        h.check(lines.last().is_some_and(|l| ok_last.contains(l)), || {
            format!("{path}: {:?}", r.body)
        });
    }
    let l = h.get("/livez?verbose");
    h.check(
        l.status == 200
            && l.body
                .lines()
                .last()
                .is_some_and(|x| x == "health check passed" || x == "livez check passed"),
        || format!("/livez?verbose: {l:?}"),
    );
    assert_eq!(h.stop(), 0);
}

#[test]
fn livez_200_while_loop_alive_even_when_unhealthy() {
    let t = TestDir::new();
    let cfg = two_programs(&t);
    let mut h = Hivesup::start(t, &cfg);
    h.wait_stdout("db | ready");
    let r = h.get("/livez");
    h.check(r.status == 200, || {
        format!("/livez: {} {}", r.status, r.body)
    });
    assert_eq!(h.get("/health").status, 503);
    assert_eq!(h.stop(), 0);
}

#[test]
fn metrics_names() {
    let t = TestDir::new();
    t.touch("go");
    let cfg = two_programs(&t);
    let mut h = Hivesup::start(t, &cfg);
    h.wait_http("/health", 200, WAIT);
    let r = h.get("/metrics");
    h.check(r.status == 200, || format!("/metrics: {}", r.status));
    h.check(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        || format!("{:?}", r.headers),
    );
    let value = |name: &str| -> Option<f64> {
        r.body
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    for (m, want) in [
        ("hivesup_program_up{program=\"web\"}", Some(1.0)),
        ("hivesup_program_ready{program=\"web\"}", Some(1.0)),
        ("hivesup_program_healthy{program=\"web\"}", Some(1.0)),
        ("hivesup_program_restarts_total{program=\"web\"}", Some(0.0)),
        ("hivesup_program_up{program=\"db\"}", Some(1.0)),
        ("hivesup_program_start_time_seconds{program=\"web\"}", None),
        ("hivesup_reaped_zombies_total", None),
    ] {
        let v = value(m);
        h.check(v.is_some(), || format!("/metrics lacks {m}:\n{}", r.body));
        if let Some(w) = want {
            h.check(v == Some(w), || {
                format!("{m} should be {w}, is {v:?}:\n{}", r.body)
            });
        }
    }
    let start = value("hivesup_program_start_time_seconds{program=\"web\"}").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    h.check(start > now - 3600.0 && start <= now + 1.0, || {
        format!("start time should be unix seconds: {start}")
    });
    assert_eq!(h.stop(), 0);
}

/// Environment values never show up in /health, /status or /metrics.
#[test]
fn no_environment_values_in_http() {
    let t = TestDir::new();
    t.touch("go");
    let cfg = two_programs(&t);
    let mut h = Hivesup::start(t, &cfg);
    h.wait_http("/health", 200, WAIT);
    for path in ["/health", "/status", "/metrics", "/health?verbose"] {
        let r = h.get(path);
        h.check(!r.body.contains("hunter2"), || {
            format!("{path} leaks an environment value: {}", r.body)
        });
    }
    assert_eq!(h.stop(), 0);
}

/// health port already in use: a clear single-line error naming the address, exit 1, and no
/// program was started.
#[test]
fn health_port_in_use() {
    let t = TestDir::new();
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap();
    let cfg = format!(
        r#"[supervisor]
health_addr = "{addr}"
[programs.p]
command = {cmd}
"#,
        cmd = arr(&[fx("stamp.py"), t.p("started"), fx("print_signals.py")]),
    );
    let mut h = Hivesup::start(t, &cfg);
    let code = h.wait_code(WAIT);
    h.check(code == 1, || {
        format!("health port in use: expected exit 1, got {code}")
    });
    h.assert_no_panic();
    let port = addr.port().to_string();
    h.check(h.stderr().iter().any(|l| l.contains(&port)), || {
        "the error should name the address".into()
    });
    h.check(h.dir.read("started").is_none(), || {
        "a program was started although the port was busy".into()
    });
    drop(busy);
}

/// health_addr = "" disables the server; programs still run.
#[test]
fn empty_health_addr_disables_http() {
    let t = TestDir::new();
    let cfg = format!(
        r#"[supervisor]
health_addr = ""
[programs.p]
settle_time = "100ms"
command = {ps}
"#,
        ps = arr(&[fx("print_signals.py")]),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_stdout("p | ready");
    h.signal(libc::SIGTERM);
    let code = h.wait_code(LONG);
    h.check(code == 0, || format!("expected 0, got {code}"));
    h.check(
        !h.stderr().iter().any(|l| l.contains("listening on")),
        || "listening although disabled".into(),
    );
}

/// The overall `status` is one of the documented words ("ok", "starting", "degraded",
/// "failed", "stopping"); a program given up makes it "failed".
#[test]
fn overall_status_uses_contract_words() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.broken]
restart = "never"
command = {bad}
[programs.fine]
settle_time = "100ms"
command = {ps}
"#,
        sup = supervisor(""),
        bad = arr(&[fx("exit.py"), "1".into(), "--after".into(), "0.2".into()]),
        ps = arr(&[fx("print_signals.py")]),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_state("broken", "failed", WAIT);
    h.wait_state("fine", "running", WAIT);
    for path in ["/health", "/status"] {
        let j = h.get(path).json();
        let s = j["status"].as_str().unwrap_or("<none>").to_string();
        h.check(s == "failed", || {
            format!("{path}: status {s:?}, expected \"failed\" with a failed program: {j}")
        });
    }
    assert_eq!(h.get("/health").status, 503);
    assert_eq!(h.stop(), 0);
}
