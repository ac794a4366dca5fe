//! Ready and health probes (issue 2): tcp, unix, http, exec, notify and postgres (against a
//! real PostgreSQL 15 server this test starts in a tempdir). Readiness is driven by trigger
//! files the test creates, so "not ready yet" and "ready" are both observed, never guessed.
// The test waits for its own children (unshare, psql); clippy.toml's list guards src/.
#![allow(clippy::disallowed_methods)]
mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

/// Runs `cfg`, checks that `p` is `starting` and /health is 503 `starting` until the test
/// creates DIR/go, then running+ready and /health 200.
fn ready_after_trigger(t: TestDir, cfg: &str, waiting_line: &str) -> Hivesup {
    let mut h = Hivesup::start(t, cfg);
    h.wait_stdout(waiting_line);
    let r = h.get("/health");
    h.check(r.status == 503, || {
        format!(
            "/health before ready: expected 503, got {} {}",
            r.status, r.body
        )
    });
    let j = r.json();
    h.check(j["status"] == "starting", || {
        format!("status before ready should be \"starting\": {j}")
    });
    h.check(j["programs"]["p"]["state"] == "starting", || {
        format!("p should be starting: {j}")
    });
    h.check(j["programs"]["p"]["ready"] == false, || {
        format!("p should not be ready: {j}")
    });
    h.dir.touch("go");
    let r = h.wait_http("/health", 200, WAIT);
    let j = r.json();
    h.check(j["status"] == "ok", || format!("status should be ok: {j}"));
    h.check(
        j["programs"]["p"]["state"] == "running" && j["programs"]["p"]["ready"] == true,
        || format!("p should be running and ready: {j}"),
    );
    h
}

#[test]
fn tcp_probe() {
    let t = TestDir::new();
    let port = free_port();
    let cfg = format!(
        r#"{sup}
[programs.p]
command = {cmd}
[programs.p.ready]
tcp = "127.0.0.1:{port}"
interval = "50ms"
timeout = "60s"
"#,
        sup = supervisor(""),
        cmd = arr(&[
            fx("listener.py"),
            "--after-file".into(),
            t.p("go"),
            "--tcp".into(),
            format!("127.0.0.1:{port}")
        ]),
    );
    let mut h = ready_after_trigger(t, &cfg, "p | waiting");
    assert_eq!(h.stop(), 0);
}

#[test]
fn unix_probe() {
    let t = TestDir::new();
    let sock = t.p("p.sock");
    let cfg = format!(
        r#"{sup}
[programs.p]
command = {cmd}
[programs.p.ready]
unix = {sock}
interval = "50ms"
timeout = "60s"
"#,
        sup = supervisor(""),
        sock = q(&sock),
        cmd = arr(&[
            fx("listener.py"),
            "--after-file".into(),
            t.p("go"),
            "--unix".into(),
            sock.clone()
        ]),
    );
    let mut h = ready_after_trigger(t, &cfg, "p | waiting");
    assert_eq!(h.stop(), 0);
}

/// The http probe needs a 2xx: a server that is up but answers 503 is not ready.
#[test]
fn http_probe_needs_2xx() {
    let t = TestDir::new();
    let port = free_port();
    let cfg = format!(
        r#"{sup}
[programs.p]
command = {cmd}
[programs.p.ready]
http = "http://127.0.0.1:{port}/health"
interval = "50ms"
timeout = "60s"
"#,
        sup = supervisor(""),
        cmd = arr(&[fx("httpd.py"), port.to_string(), t.p("go")]),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_stdout("p | serving");
    // The server answers 503 now; make sure hivesup has probed it at least once.
    let p = h.wait_program("p", WAIT, "a probe error recorded", |p| {
        !p["last_probe_error"].is_null()
    });
    h.check(p["state"] == "starting" && p["ready"] == false, || {
        format!("503 must not count as ready: {p}")
    });
    assert_eq!(h.get("/health").status, 503);
    h.dir.touch("go");
    h.wait_http("/health", 200, WAIT);
    assert_eq!(h.stop(), 0);
}

#[test]
fn exec_probe() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.p]
command = {cmd}
[programs.p.ready]
exec = ["test", "-e", {go}]
interval = "50ms"
timeout = "60s"
"#,
        sup = supervisor(""),
        go = q(t.p("go")),
        cmd = arr(&[fx("print_signals.py")]),
    );
    let mut h = ready_after_trigger(t, &cfg, "p | ready");
    assert_eq!(h.stop(), 0);
}

/// sd_notify: hivesup sets NOTIFY_SOCKET; READY=1 makes the program ready.
#[test]
fn notify_probe() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.p]
command = {cmd}
[programs.p.ready]
notify = true
timeout = "60s"
"#,
        sup = supervisor(""),
        cmd = arr(&[fx("notify.py"), "--after-file".into(), t.p("go")]),
    );
    let mut h = Hivesup::start(t, &cfg);
    let line = h.wait_stdout_contains("p | NOTIFY_SOCKET=");
    h.check(line != "p | NOTIFY_SOCKET=", || {
        "NOTIFY_SOCKET is not set for a notify program".into()
    });
    let r = h.get("/health");
    h.check(r.status == 503, || {
        format!("not notified yet, /health should be 503: {}", r.body)
    });
    assert_eq!(h.state("p"), "starting");
    h.dir.touch("go");
    h.wait_stdout("p | notified");
    h.wait_http("/health", 200, WAIT);
    assert_eq!(h.stop(), 0);
}

/// /health goes 503 -> 200 -> 503 -> 200 around a health probe that fails and recovers,
/// with the program itself untouched (same pid, no restart).
#[test]
fn health_probe_fails_and_recovers() {
    let t = TestDir::new();
    t.touch("healthy");
    let cfg = format!(
        r#"{sup}
[programs.p]
command = {cmd}
[programs.p.ready]
exec = ["test", "-e", {go}]
interval = "50ms"
timeout = "60s"
[programs.p.health]
exec = ["test", "-e", {healthy}]
interval = "100ms"
timeout = "2s"
failures = 2
"#,
        sup = supervisor(""),
        go = q(t.p("go")),
        healthy = q(t.p("healthy")),
        cmd = arr(&[fx("print_signals.py")]),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_stdout("p | ready");
    assert_eq!(h.get("/health").status, 503, "503 while starting");
    h.dir.touch("go");
    let ok = h.wait_http("/health", 200, WAIT).json();
    let pid = ok["programs"]["p"]["pid"].clone();
    h.check(ok["programs"]["p"]["healthy"] == true, || {
        format!("healthy should be true: {ok}")
    });

    h.dir.remove("healthy");
    let bad = h.wait_http("/health", 503, WAIT).json();
    let p = &bad["programs"]["p"];
    h.check(p["healthy"] == false, || {
        format!("healthy should be false: {bad}")
    });
    h.check(p["state"] == "running", || {
        format!("an unhealthy program keeps running: {bad}")
    });
    h.check(!p["last_probe_error"].is_null(), || {
        format!("last_probe_error should be set: {bad}")
    });
    h.check(bad["status"] == "degraded", || {
        format!("status should be degraded: {bad}")
    });
    // The log says so, once, naming the program and the probe's error.
    let line = h.wait_stderr_contains("unhealthy");
    h.check(
        line.contains("program=\"p\"") && line.contains("failures=2"),
        || format!("the unhealthy line must name the program and the failures: {line}"),
    );
    let v = h.get("/health?verbose");
    h.check(v.status == 503 && v.body.contains("[-]p failed"), || {
        format!("verbose: {} {:?}", v.status, v.body)
    });

    h.dir.touch("healthy");
    let ok2 = h.wait_http("/health", 200, WAIT).json();
    h.wait_stderr_contains("healthy again");
    h.check(
        ok2["programs"]["p"]["pid"] == pid && ok2["programs"]["p"]["restarts"] == 0,
        || format!("a health failure must not restart the program: before {ok} after {ok2}"),
    );
    assert_eq!(h.stop(), 0);
}

/// `failures = 3`: a single failed health probe among successes does not make the program
/// unhealthy. The probe fails exactly once (its 6th run); /status is watched until well after
/// that and must say healthy every time.
#[test]
fn single_health_failure_below_threshold_stays_healthy() {
    let t = TestDir::new();
    let counter = t.p("probes");
    let cfg = format!(
        r#"{sup}
[programs.p]
settle_time = "100ms"
command = {cmd}
[programs.p.health]
exec = ["sh", "-c", {probe}]
interval = "100ms"
timeout = "2s"
failures = 3
"#,
        sup = supervisor(""),
        cmd = arr(&[fx("print_signals.py")]),
        probe = q(format!(
            "n=$(cat {counter} 2>/dev/null || echo 0); echo $((n+1)) > {counter}; [ $n -ne 5 ]"
        )),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_http("/health", 200, WAIT);
    let runs = |h: &Hivesup| {
        h.dir
            .read("probes")
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + LONG;
    while runs(&h) < 10 {
        let p = h.program("p");
        h.check(p["healthy"] == true, || {
            format!("one failed probe (of failures = 3) made it unhealthy: {p}")
        });
        if std::time::Instant::now() > deadline {
            h.fail("the health probe did not run 10 times");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(h.get("/health").status, 200);
    assert_eq!(h.stop(), 0);
}

/// An http health probe, failing only after `failures` consecutive failures.
#[test]
fn http_health_probe() {
    let t = TestDir::new();
    let port = free_port();
    t.touch("ok");
    let cfg = format!(
        r#"{sup}
[programs.p]
command = {cmd}
[programs.p.ready]
http = "http://127.0.0.1:{port}/health"
interval = "50ms"
timeout = "60s"
[programs.p.health]
http = "http://127.0.0.1:{port}/health"
interval = "100ms"
timeout = "2s"
failures = 3
"#,
        sup = supervisor(""),
        cmd = arr(&[fx("httpd.py"), port.to_string(), t.p("ok")]),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_http("/health", 200, WAIT);
    h.dir.remove("ok");
    h.wait_http("/health", 503, WAIT);
    h.dir.touch("ok");
    h.wait_http("/health", 200, WAIT);
    assert_eq!(h.stop(), 0);
}

/// Exec probes run through hivesup's own spawner and reaper: a busy exec health probe must not
/// steal the exit statuses of the program itself (two reapers -> one side gets ECHILD and
/// hivesup never learns its program died). Every exit is seen: the program keeps being
/// restarted, and whenever /status says running, its pid is a live process.
#[test]
fn exec_probes_do_not_steal_exit_statuses() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.p]
command = {cmd}
restart_backoff = "20ms"
restart_backoff_max = "100ms"
start_retries = 1000
[programs.p.ready]
exec = ["true"]
interval = "10ms"
timeout = "30s"
[programs.p.health]
exec = ["true"]
interval = "10ms"
timeout = "5s"
failures = 1
"#,
        sup = supervisor(""),
        cmd = arr(&[fx("exit.py"), "1".into(), "--after".into(), "0.2".into()]),
    );
    let mut h = Hivesup::start(t, &cfg);
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let p = h.program("p");
        if p["restarts"].as_u64().is_some_and(|r| r >= 6) {
            break;
        }
        if p["state"] == "running" {
            if let Some(pid) = p["pid"].as_i64() {
                if !alive(pid as i32, None) {
                    // its exit may have happened a moment ago: hivesup must notice it soon
                    h.wait_program(
                        "p",
                        WAIT,
                        &format!("to notice that pid {pid} exited"),
                        |q| q["pid"] != p["pid"] || q["state"] != "running",
                    );
                }
            }
        }
        if std::time::Instant::now() > deadline {
            h.fail(&format!("exits were lost: only {} restarts", p["restarts"]));
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    assert_eq!(h.stop(), 0);
}

// ---------------------------------------------------------------------------------------------
// postgres

const PGBIN: &str = "/usr/lib/postgresql/15/bin";

/// initdb a cluster owned by the `postgres` system user in DIR/pg/data, with its socket
/// directory DIR/pg/sock. Returns (data, sock).
fn initdb(t: &TestDir) -> (String, String) {
    require_root("initdb runs as the postgres system user");
    assert!(
        std::path::Path::new(PGBIN).join("postgres").exists(),
        "PostgreSQL 15 is not installed ({PGBIN}); .ci/run installs postgresql-15"
    );
    let base = t.p("pg");
    let data = t.p("pg/data");
    let sock = t.p("pg/sock");
    std::fs::create_dir_all(&sock).unwrap();
    let (code, out, err) = run(
        Command::new("chown").args(["-R", "postgres:postgres", &base]),
        WAIT,
    );
    assert_eq!(code, 0, "chown: {out}{err}");
    let (code, out, err) = run(
        Command::new("runuser").args([
            "-u",
            "postgres",
            "--",
            &format!("{PGBIN}/initdb"),
            "-D",
            &data,
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "--no-instructions",
        ]),
        Duration::from_secs(120),
    );
    assert_eq!(code, 0, "initdb failed:\n{out}\n{err}");
    (data, sock)
}

fn pg_program(name: &str, data: &str, sock: &str, ready: &str) -> String {
    pg_program_with(name, data, sock, ready, "")
}

fn pg_program_with(name: &str, data: &str, sock: &str, ready: &str, extra: &str) -> String {
    format!(
        r#"
[programs.{name}]
{extra}
command = {cmd}
user = "postgres"
stop_signal = "SIGINT"
stop_timeout = "30s"
[programs.{name}.ready]
{ready}
interval = "100ms"
timeout = "60s"
"#,
        cmd = arr(&[
            format!("{PGBIN}/postgres"),
            "-D".into(),
            data.to_string(),
            "-k".into(),
            sock.to_string(),
            "-c".into(),
            "listen_addresses=".into(),
            "-c".into(),
            "fsync=off".into(),
        ]),
    )
}

/// The postgres probe connects to a real server and runs SELECT 1; the password in the
/// conninfo never shows up in logs or in /health.
#[test]
fn postgres_probe_real_server() {
    let t = TestDir::new();
    let (data, sock) = initdb(&t);
    let conninfo = format!("host={sock} user=postgres dbname=postgres password=sekrit-pw-1234");
    let cfg = format!(
        "{sup}\n{pg}\n[programs.pg.health]\npostgres = {ci}\ninterval = \"200ms\"\ntimeout = \"5s\"\nfailures = 2\n",
        sup = supervisor("shutdown_timeout = \"40s\""),
        pg = pg_program("pg", &data, &sock, &format!("postgres = {}", q(&conninfo))),
        ci = q(&conninfo),
    );
    let mut h = Hivesup::start(t, &cfg);
    let r = h.wait_http("/health", 200, LONG);
    let j = r.json();
    h.check(
        j["programs"]["pg"]["ready"] == true && j["programs"]["pg"]["healthy"] == true,
        || format!("{j}"),
    );
    // postgres' own log lines are captured and prefixed
    h.wait_for_line(
        Stream::Stderr,
        |l| l.starts_with("pg | "),
        WAIT,
        "postgres log lines prefixed `pg | `",
    );
    let status = h.get("/status").body;
    let code = h.stop();
    let leaked: Vec<String> = h
        .stdout()
        .into_iter()
        .chain(h.stderr())
        .chain(std::iter::once(status))
        .filter(|l| l.contains("sekrit-pw-1234"))
        .collect();
    h.check(leaked.is_empty(), || {
        format!("the password leaked: {leaked:?}")
    });
    h.check(code == 0, || {
        format!("postgres stops on SIGINT within stop_timeout: exit should be 0, got {code}")
    });
}

/// A postgres probe that cannot succeed (no such database): never ready, the error is
/// reported in last_probe_error, without the password.
#[test]
fn postgres_probe_reports_error() {
    let t = TestDir::new();
    let (data, sock) = initdb(&t);
    let conninfo = format!("host={sock} user=postgres dbname=no_such_db password=sekrit-pw-5678");
    let cfg = format!(
        "{sup}\n{pg}",
        sup = supervisor("shutdown_timeout = \"40s\""),
        pg = pg_program("pg", &data, &sock, &format!("postgres = {}", q(&conninfo))),
    );
    let mut h = Hivesup::start(t, &cfg);
    // the server does come up (its log says so), but the probe keeps failing
    h.wait_for_line(
        Stream::Stderr,
        |l| l.contains("database system is ready to accept connections"),
        LONG,
        "postgres ready log line",
    );
    let p = h.wait_program("pg", WAIT, "a probe error mentioning no_such_db", |p| {
        p["last_probe_error"]
            .as_str()
            .is_some_and(|e| e.contains("no_such_db"))
    });
    h.check(p["ready"] == false, || format!("must not be ready: {p}"));
    let e = p["last_probe_error"].as_str().unwrap();
    h.check(!e.contains("sekrit"), || {
        format!("probe error leaks the password: {e}")
    });
    h.stop();
    h.check(
        !h.stderr()
            .iter()
            .chain(h.stdout().iter())
            .any(|l| l.contains("sekrit-pw-5678")),
        || "the password leaked into the logs".into(),
    );
}

/// `ready.notify` with the real thing: Debian's postgres is built with libsystemd and sends
/// READY=1 to $NOTIFY_SOCKET once it accepts connections. It runs as the `postgres` user, so
/// the socket must be reachable for that user, not only for root.
#[test]
fn postgres_ready_by_notify() {
    let t = TestDir::new();
    let (data, sock) = initdb(&t);
    let cfg = format!(
        "{sup}\n{pg}",
        sup = supervisor("shutdown_timeout = \"40s\""),
        pg = pg_program("pg", &data, &sock, "notify = true"),
    );
    let mut h = Hivesup::start(t, &cfg);
    let j = h.wait_http("/health", 200, LONG).json();
    h.check(j["programs"]["pg"]["ready"] == true, || format!("{j}"));
    let code = h.stop();
    h.check(code == 0, || format!("expected 0, got {code}"));
}

/// The postgres case the issue names: the postmaster is SIGKILLed while a client's backend
/// lives; hivesup kills what it left behind before starting it again, and the new postmaster
/// comes up (a surviving backend would hold the old shared memory: "pre-existing shared memory
/// block is still in use").
#[test]
fn postgres_restart_after_postmaster_killed() {
    let t = TestDir::new();
    let (data, sock) = initdb(&t);
    let conninfo = format!("host={sock} user=postgres dbname=postgres");
    let cfg = format!(
        "{sup}\n{pg}",
        sup = supervisor("shutdown_timeout = \"40s\""),
        pg = pg_program_with(
            "pg",
            &data,
            &sock,
            &format!("postgres = {}", q(&conninfo)),
            "restart = \"on-failure\"\nrestart_backoff = \"100ms\"",
        ),
    );
    let mut h = Hivesup::start(t, &cfg);
    let j = h.wait_http("/health", 200, LONG).json();
    let postmaster = j["programs"]["pg"]["pid"].as_i64().unwrap() as i32;
    // a client with a live backend: psql (our child) runs a long query
    let mut psql = Command::new(format!("{PGBIN}/psql"))
        .args([
            "-h",
            &sock,
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
            "select pg_sleep(120)",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let backend = poll("a client backend", WAIT, || {
        descendants(postmaster).into_iter().find(|p| {
            p.ppid == postmaster && p.comm == "postgres" && cmdline(p.pid).contains("[local]")
        })
    });
    kill(postmaster, libc::SIGKILL);
    let j = h.wait_program("pg", LONG, "restarted and ready", |p| {
        p["restarts"] == 1 && p["ready"] == true
    });
    h.check(j["pid"].as_i64() != Some(postmaster as i64), || {
        format!("{j}")
    });
    h.check(!alive(backend.pid, Some(backend.starttime)), || {
        format!("the old backend {} survived", backend.pid)
    });
    h.wait_http("/health", 200, WAIT);
    let _ = psql.kill();
    let _ = psql.wait();
    let code = h.stop();
    h.check(code == 0, || format!("expected 0, got {code}"));
}

fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}
