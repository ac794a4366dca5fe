//! Priority gating (issue 2): a priority starts only when every lower one is ready; equal
//! priorities start together; a oneshot counts as ready when it has exited 0; a failed
//! oneshot blocks every higher priority. Order is checked with CLOCK_REALTIME stamps that the
//! programs write themselves (tests/fixtures/stamp.py, listener.py --stamp).
mod common;
use common::*;

/// The priority-200 program is not spawned before the priority-100 program's port accepts.
/// The listener stamps the time just BEFORE it calls listen(); the 200 program stamps its own
/// start. Any spawn of 200 before the port could accept has a smaller stamp.
#[test]
fn priority_200_not_spawned_before_100_port_accepts() {
    let t = TestDir::new();
    let port = free_port();
    let cfg = format!(
        r#"{sup}
[programs.db]
priority = 100
command = {db}
[programs.db.ready]
tcp = "127.0.0.1:{port}"
interval = "50ms"
timeout = "30s"

[programs.api]
priority = 200
command = {api}
settle_time = "100ms"
"#,
        sup = supervisor(""),
        db = arr(&[
            fx("stamp.py"),
            t.p("db.start"),
            fx("listener.py"),
            "--delay".into(),
            "1.0".into(),
            "--tcp".into(),
            format!("127.0.0.1:{port}"),
            "--stamp".into(),
            t.p("db.listen"),
        ]),
        api = arr(&[fx("stamp.py"), t.p("api.start"), fx("print_signals.py")]),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_stdout("api | ready");
    h.wait_http("/health", 200, WAIT);
    let db_start = h.dir.stamps("db.start");
    let db_listen = h.dir.stamps("db.listen");
    let api = h.dir.stamps("api.start");
    h.check(db_start.len() == 1 && db_listen.len() == 1 && api.len() == 1, || {
        format!("one stamp each expected: db.start {db_start:?} db.listen {db_listen:?} api.start {api:?}")
    });
    h.check(api[0] > db_listen[0], || {
        format!(
            "api spawned {} ms before db's port could accept (api {} <= db listen {})",
            (db_listen[0] as i128 - api[0] as i128) / 1_000_000,
            api[0],
            db_listen[0]
        )
    });
    assert_eq!(h.stop(), 0);
}

/// Equal priorities start together: b (settle only) is spawned while a (same priority) is
/// still not ready, i.e. before a's port opens.
#[test]
fn equal_priorities_start_together() {
    let t = TestDir::new();
    let port = free_port();
    let cfg = format!(
        r#"{sup}
[programs.a]
priority = 100
command = {a}
[programs.a.ready]
tcp = "127.0.0.1:{port}"
interval = "50ms"
timeout = "30s"

[programs.b]
priority = 100
command = {b}
settle_time = "100ms"
"#,
        sup = supervisor(""),
        a = arr(&[
            fx("listener.py"),
            "--after-file".into(),
            t.p("go"),
            "--tcp".into(),
            format!("127.0.0.1:{port}"),
            "--stamp".into(),
            t.p("a.listen"),
        ]),
        b = arr(&[fx("stamp.py"), t.p("b.start"), fx("print_signals.py")]),
    );
    let mut h = Hivesup::start(t, &cfg);
    // b must come up although a is held not-ready by the missing trigger file.
    h.wait_stdout("b | ready");
    h.wait_stdout("a | waiting");
    h.check(h.dir.stamps("a.listen").is_empty(), || {
        "a listened before the trigger".into()
    });
    let a = h.state("a");
    h.check(a == "starting", || {
        format!("a should be starting while not ready, is {a}")
    });
    h.dir.touch("go");
    h.wait_http("/health", 200, WAIT);
    assert_eq!(h.stop(), 0);
}

/// A oneshot gates the next priority: the priority-20 program starts only after the
/// priority-10 oneshot has exited 0 (its last act is to stamp the time, then exec `true`).
#[test]
fn oneshot_exit_0_gates_next_priority() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.init]
priority = 10
kind = "oneshot"
command = "sleep 0.5 && exec {stamp} {done} true"

[programs.api]
priority = 20
command = {api}
settle_time = "100ms"
"#,
        sup = supervisor(""),
        stamp = fx("stamp.py"),
        done = t.p("init.done"),
        api = arr(&[fx("stamp.py"), t.p("api.start"), fx("print_signals.py")]),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_stdout("api | ready");
    let r = h.wait_http("/health", 200, WAIT);
    let j = r.json();
    h.check(j["programs"]["init"]["state"] == "exited", || {
        format!("init should be exited: {j}")
    });
    h.check(j["programs"]["api"]["state"] == "running", || {
        format!("api should be running: {j}")
    });
    let done = h.dir.stamps("init.done");
    let api = h.dir.stamps("api.start");
    h.check(done.len() == 1 && api.len() == 1, || {
        format!("stamps: init.done {done:?} api.start {api:?}")
    });
    h.check(api[0] > done[0], || {
        format!(
            "api started before the oneshot finished: api {} <= init {}",
            api[0], done[0]
        )
    });
    assert_eq!(h.stop(), 0);
}

/// A oneshot that exits non-zero (restart = "never") is failed, and every higher priority stays
/// pending: never spawned, /health 503.
#[test]
fn failed_oneshot_blocks_higher_priorities() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.init]
priority = 10
kind = "oneshot"
restart = "never"
command = {init}

[programs.api]
priority = 20
command = {api}
"#,
        sup = supervisor(""),
        init = arr(&[
            fx("exit.py"),
            "3".into(),
            "--say".into(),
            "migrating".into()
        ]),
        api = arr(&[fx("stamp.py"), t.p("api.start"), fx("print_signals.py")]),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_stdout("init | migrating");
    let init = h.wait_state("init", "failed", WAIT);
    h.check(init["last_exit"]["code"] == 3, || {
        format!("init last_exit should be code 3: {init}")
    });
    h.holds_for(
        std::time::Duration::from_millis(1000),
        "api stays pending and unspawned",
        |h| {
            let api = h.program("api");
            api["state"] == "pending"
                && api["pid"].is_null()
                && h.dir.stamps("api.start").is_empty()
        },
    );
    let r = h.get("/health");
    h.check(r.status == 503, || {
        format!(
            "/health should be 503 with a failed oneshot: {} {}",
            r.status, r.body
        )
    });
    assert_eq!(h.stop(), 0);
}

/// A daemon without `ready` is ready once it stayed up for settle_time; the next priority is
/// not spawned before that. (Lower bound only: the program's own stamp comes a little after
/// its spawn, so the gap is checked against half the settle time.)
#[test]
fn settle_time_gates_next_priority() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.a]
priority = 1
settle_time = "1500ms"
command = {a}

[programs.b]
priority = 2
settle_time = "100ms"
command = {b}
"#,
        sup = supervisor(""),
        a = arr(&[fx("stamp.py"), t.p("a.start"), fx("print_signals.py")]),
        b = arr(&[fx("stamp.py"), t.p("b.start"), fx("print_signals.py")]),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_stdout("b | ready");
    let a = h.dir.stamps("a.start");
    let b = h.dir.stamps("b.start");
    h.check(a.len() == 1 && b.len() == 1, || {
        format!("stamps a {a:?} b {b:?}")
    });
    let gap_ms = (b[0] as i128 - a[0] as i128) / 1_000_000;
    h.check(gap_ms >= 750, || {
        format!("b started {gap_ms} ms after a; settle_time is 1500ms")
    });
    assert_eq!(h.stop(), 0);
}

/// A program whose ready probe never succeeds within ready.timeout: the start failed; with
/// start_retries = 1 it is `failed`, and the next priority is never started.
#[test]
fn ready_timeout_is_failed_start_and_blocks() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.db]
priority = 1
command = {db}
start_retries = 1
[programs.db.ready]
exec = ["false"]
interval = "50ms"
timeout = "500ms"

[programs.api]
priority = 2
command = {api}
"#,
        sup = supervisor(""),
        db = arr(&[fx("print_signals.py"), "--pidfile".into(), t.p("db.pid")]),
        api = arr(&[fx("stamp.py"), t.p("api.start"), fx("print_signals.py")]),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_stdout("db | ready");
    let pid: i32 = h.dir.read("db.pid").unwrap().parse().unwrap();
    let db = h.wait_state("db", "failed", WAIT);
    h.check(!db["last_probe_error"].is_null(), || {
        format!("last_probe_error should say why: {db}")
    });
    // the not-ready program was stopped, not left running
    poll("the timed-out program to be gone", WAIT, || {
        (!alive(pid, None)).then_some(())
    });
    h.check(h.dir.stamps("api.start").is_empty(), || {
        "api was started after db failed".into()
    });
    let api = h.state("api");
    h.check(api == "pending", || {
        format!("api should stay pending, is {api}")
    });
    assert_eq!(h.get("/health").status, 503);
    assert_eq!(h.stop(), 0);
}

/// A oneshot that fails is retried (restart = on-failure, the default) and, once it exits 0,
/// releases the next priority (a migration waiting for its database).
#[test]
fn oneshot_retried_then_gates() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.migrate]
priority = 10
kind = "oneshot"
restart_backoff = "50ms"
command = {migrate}

[programs.api]
priority = 20
settle_time = "100ms"
command = {api}
"#,
        sup = supervisor(""),
        // fails twice (exit 1), the third run exits 0 after stamping
        migrate = q(format!(
            "n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; echo run $n; [ $n -ge 3 ] && exec {stamp} {done} true; exit 1",
            c = t.p("count"),
            stamp = fx("stamp.py"),
            done = t.p("migrate.done"),
        )),
        api = arr(&[fx("stamp.py"), t.p("api.start"), fx("print_signals.py")]),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_stdout("migrate | run 3");
    h.wait_stdout("api | ready");
    let j = h.wait_http("/health", 200, WAIT).json();
    h.check(
        j["programs"]["migrate"]["state"] == "exited" && j["programs"]["migrate"]["restarts"] == 2,
        || format!("{j}"),
    );
    let done = h.dir.stamps("migrate.done");
    let api = h.dir.stamps("api.start");
    h.check(
        done.len() == 1 && api.len() == 1 && api[0] > done[0],
        || format!("migrate.done {done:?} api.start {api:?}"),
    );
    h.check(
        h.count(Stream::Stdout, |l| l.starts_with("api | ")) >= 1,
        || "api never ran".into(),
    );
    assert_eq!(h.stop(), 0);
}
