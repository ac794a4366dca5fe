//! Restarts (issue 2 "Restarts"): on-failure vs always vs never, restart counts, backoff
//! growth and cap (from the programs' own start stamps), give-up after start_retries failed
//! starts (state `failed`), critical give-up -> hivesup exits with the program's code, 128+N,
//! or 1 when that code was 0; a lower priority restarting does not restart higher ones.
mod common;
use common::*;
use std::time::Duration;

fn gaps_ms(stamps: &[u128]) -> Vec<i128> {
    stamps
        .windows(2)
        .map(|w| (w[1] as i128 - w[0] as i128) / 1_000_000)
        .collect()
}

/// on-failure restarts a program that exits 1 until start_retries failed starts in a row, then
/// `failed`; the delay between starts doubles from restart_backoff.
#[test]
fn on_failure_backoff_doubles_then_gives_up() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.p]
command = {cmd}
restart = "on-failure"
restart_backoff = "300ms"
restart_backoff_max = "30s"
start_retries = 4
settle_time = "5s"
"#,
        sup = supervisor(""),
        cmd = arr(&[fx("stamp.py"), t.p("starts"), fx("exit.py"), "1".into()]),
    );
    let mut h = Hivesup::start(t, &cfg);
    let p = h.wait_state("p", "failed", LONG);
    let starts = h.dir.stamps("starts");
    h.check(starts.len() == 4, || {
        format!(
            "start_retries = 4: expected 4 starts, got {} ({p})",
            starts.len()
        )
    });
    h.check(p["restarts"] == 3, || {
        format!("restarts should be 3 after 4 starts: {p}")
    });
    h.check(p["last_exit"]["code"] == 1, || {
        format!("last_exit should be code 1: {p}")
    });
    h.check(p["pid"].is_null(), || {
        format!("a failed program has no pid: {p}")
    });
    let g = gaps_ms(&starts);
    // lower bounds only (never restarted before its backoff); 20% slack for the fixture's
    // own start-up jitter between spawn and stamp.
    for (i, want) in [300i128, 600, 1200].iter().enumerate() {
        h.check(g[i] >= want * 8 / 10, || {
            format!(
                "gap {i} between starts is {} ms, backoff should be {want} ms (gaps {g:?})",
                g[i]
            )
        });
    }
    // 1200 ms vs 300 ms of backoff; each gap also holds two python start-ups, so compare
    // differences, not ratios
    h.check(g[2] > g[0] + 600, || {
        format!("backoff does not grow: gaps {g:?}")
    });
    // gave up: no further start
    h.holds_for(
        Duration::from_millis(1500),
        "no start after giving up",
        |h| h.dir.stamps("starts").len() == 4,
    );
    assert_eq!(h.get("/health").status, 503);
    assert_eq!(h.stop(), 0);
}

/// restart_backoff_max caps the doubling: 100ms, 200ms, then 200ms ... (uncapped the last gap
/// would be 3200 ms; the bound below leaves well over a second of slack for a loaded machine).
#[test]
fn backoff_is_capped_by_restart_backoff_max() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.p]
command = {cmd}
restart_backoff = "100ms"
restart_backoff_max = "200ms"
start_retries = 7
settle_time = "5s"
"#,
        sup = supervisor(""),
        cmd = arr(&[fx("stamp.py"), t.p("starts"), fx("exit.py"), "2".into()]),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_state("p", "failed", LONG);
    let starts = h.dir.stamps("starts");
    h.check(starts.len() == 7, || {
        format!("expected 7 starts, got {}", starts.len())
    });
    let g = gaps_ms(&starts);
    h.check(g[5] < 2000, || {
        format!("backoff not capped at 200ms: gaps {g:?}")
    });
    h.check(g[5] >= 160, || {
        format!("capped backoff should still be ~200ms: gaps {g:?}")
    });
    assert_eq!(h.stop(), 0);
}

/// Restart count and last_exit after two failed runs; then running and /health 200.
#[test]
fn restart_count_and_last_exit() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.p]
command = {cmd}
restart_backoff = "50ms"
settle_time = "300ms"
"#,
        sup = supervisor(""),
        cmd = arr(&[fx("flaky.py"), t.p("count"), "2".into(), "7".into()]),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_stdout("p | run 3");
    let r = h.wait_http("/health", 200, WAIT).json();
    let p = &r["programs"]["p"];
    h.check(p["restarts"] == 2, || format!("restarts should be 2: {r}"));
    h.check(p["last_exit"]["code"] == 7, || {
        format!("last_exit should be code 7: {r}")
    });
    h.check(p["state"] == "running", || format!("{r}"));
    assert_eq!(h.stop(), 0);
}

/// on-failure: exit 0 is not a failure, the program is `exited`, not restarted.
#[test]
fn on_failure_does_not_restart_exit_0() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.p]
command = {cmd}
restart = "on-failure"
restart_backoff = "50ms"
settle_time = "100ms"
"#,
        sup = supervisor(""),
        cmd = arr(&[
            fx("stamp.py"),
            t.p("starts"),
            fx("exit.py"),
            "0".into(),
            "--after".into(),
            "0.3".into()
        ]),
    );
    let mut h = Hivesup::start(t, &cfg);
    let p = h.wait_state("p", "exited", WAIT);
    h.check(p["last_exit"]["code"] == 0, || format!("{p}"));
    h.holds_for(Duration::from_millis(800), "exactly one start", |h| {
        h.dir.stamps("starts").len() == 1
    });
    assert_eq!(h.stop(), 0);
}

/// on-failure restarts a program killed by a signal, and reports the signal.
#[test]
fn on_failure_restarts_after_death_by_signal() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.p]
command = {cmd}
restart_backoff = "50ms"
settle_time = "300ms"
"#,
        sup = supervisor(""),
        cmd = arr(&[
            fx("stamp.py"),
            t.p("starts"),
            fx("print_signals.py"),
            "--pidfile".into(),
            t.p("pid")
        ]),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_http("/health", 200, WAIT);
    let pid: i32 = h.dir.read("pid").unwrap().parse().unwrap();
    kill(pid, libc::SIGKILL);
    let p = h.wait_program("p", WAIT, "restarted once and running", |p| {
        p["restarts"] == 1 && p["state"] == "running"
    });
    let le = &p["last_exit"];
    h.check(
        le["signal"] == 9 || le["signal"].as_str().is_some_and(|s| s.contains("KILL")),
        || format!("last_exit should record signal 9: {p}"),
    );
    h.check(le["code"].is_null(), || {
        format!("a signal death has no exit code: {p}")
    });
    assert_eq!(h.dir.stamps("starts").len(), 2);
    assert_eq!(h.stop(), 0);
}

/// always: a clean exit is restarted too.
#[test]
fn always_restarts_exit_0() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.p]
command = {cmd}
restart = "always"
restart_backoff = "50ms"
settle_time = "50ms"
"#,
        sup = supervisor(""),
        cmd = arr(&[
            fx("stamp.py"),
            t.p("starts"),
            fx("exit.py"),
            "0".into(),
            "--after".into(),
            "0.3".into()
        ]),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_program("p", LONG, "restarted at least twice", |p| {
        p["restarts"].as_u64().is_some_and(|r| r >= 2)
    });
    // the third run stamps its start a moment after hivesup counted the restart
    poll("3 start stamps", WAIT, || {
        (h.dir.stamps("starts").len() >= 3).then_some(())
    });
    assert_eq!(h.stop(), 0);
}

/// never: exit 0 -> `exited` (fine, /health 200); exit 1 -> `failed`; neither is restarted.
#[test]
fn restart_never() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.good]
command = {good}
restart = "never"
settle_time = "100ms"

[programs.bad]
command = {bad}
restart = "never"
settle_time = "100ms"
"#,
        sup = supervisor(""),
        good = arr(&[
            fx("stamp.py"),
            t.p("good"),
            fx("exit.py"),
            "0".into(),
            "--after".into(),
            "0.3".into()
        ]),
        bad = arr(&[
            fx("stamp.py"),
            t.p("bad"),
            fx("exit.py"),
            "1".into(),
            "--after".into(),
            "0.3".into()
        ]),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_state("good", "exited", WAIT);
    let b = h.wait_state("bad", "failed", WAIT);
    h.check(b["last_exit"]["code"] == 1, || format!("{b}"));
    h.holds_for(
        Duration::from_millis(800),
        "no restart with restart = never",
        |h| h.dir.stamps("good").len() == 1 && h.dir.stamps("bad").len() == 1,
    );
    assert_eq!(h.stop(), 0);
}

/// critical program given up: hivesup stops everything and exits with its last exit code.
#[test]
fn critical_give_up_exits_with_program_code() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.other]
priority = 1
command = {other}

[programs.crit]
priority = 1
command = {crit}
critical = true
restart_backoff = "50ms"
start_retries = 2
settle_time = "5s"
"#,
        sup = supervisor(""),
        other = arr(&[fx("print_signals.py"), "--pidfile".into(), t.p("other.pid")]),
        // crit fails only once `other` has its signal handlers (it writes its pidfile then),
        // so `other | SIGTERM` below is an echo, not a death by an unhandled signal
        crit = q(format!(
            "{stamp} {starts} sh -c 'while [ ! -e {pidfile} ]; do sleep 0.05; done; exit 3'",
            stamp = fx("stamp.py"),
            starts = t.p("starts"),
            pidfile = t.p("other.pid")
        )),
    );
    let mut h = Hivesup::start(t, &cfg);
    let code = h.wait_code(LONG);
    h.check(code == 3, || {
        format!("expected exit 3 (crit's exit code), got {code}")
    });
    h.check(h.dir.stamps("starts").len() == 2, || {
        "expected 2 starts (start_retries = 2)".into()
    });
    // everything else was stopped with its stop signal
    h.check(h.stdout().iter().any(|l| l == "other | SIGTERM"), || {
        "other was not stopped with SIGTERM".into()
    });
}

/// critical program killed by signal N when given up: exit 128+N.
#[test]
fn critical_give_up_signal_exits_128_plus_n() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.crit]
command = {crit}
critical = true
restart_backoff = "50ms"
start_retries = 2
settle_time = "5s"
"#,
        sup = supervisor(""),
        crit = arr(&[fx("exit.py"), "--signal".into(), "10".into()]),
    );
    let mut h = Hivesup::start(t, &cfg);
    let code = h.wait_code(LONG);
    h.check(code == 138, || {
        format!("killed by SIGUSR1 (10): expected 138, got {code}")
    });
}

/// critical program whose last exit code was 0 when given up: exit 1.
#[test]
fn critical_give_up_code_0_exits_1() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.crit]
command = {crit}
critical = true
restart = "always"
restart_backoff = "50ms"
start_retries = 2
settle_time = "10s"
"#,
        sup = supervisor(""),
        crit = arr(&[fx("exit.py"), "0".into()]),
    );
    let mut h = Hivesup::start(t, &cfg);
    let code = h.wait_code(LONG);
    h.check(code == 1, || {
        format!("given up with last code 0: expected 1, got {code}")
    });
}

/// critical + restart = never: the first failure gives up.
#[test]
fn critical_restart_never_exits_at_first_failure() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.crit]
command = {crit}
critical = true
restart = "never"
settle_time = "100ms"
"#,
        sup = supervisor(""),
        crit = arr(&[
            fx("stamp.py"),
            t.p("starts"),
            fx("exit.py"),
            "7".into(),
            "--after".into(),
            "0.5".into()
        ]),
    );
    let mut h = Hivesup::start(t, &cfg);
    let code = h.wait_code(LONG);
    h.check(code == 7, || format!("expected 7, got {code}"));
    assert_eq!(h.dir.stamps("starts").len(), 1);
}

/// When a lower priority program restarts, programs above it are not restarted, but /health
/// is 503 until it is ready again.
#[test]
fn lower_priority_restart_keeps_higher_running() {
    let t = TestDir::new();
    let port = free_port();
    let cfg = format!(
        r#"{sup}
[programs.db]
priority = 100
command = {db}
restart_backoff = "1s"
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
            fx("listener.py"),
            "--tcp".into(),
            format!("127.0.0.1:{port}")
        ]),
        api = arr(&[fx("stamp.py"), t.p("api.starts"), fx("print_signals.py")]),
    );
    let mut h = Hivesup::start(t, &cfg);
    let before = h.wait_http("/health", 200, WAIT).json();
    let db_pid = before["programs"]["db"]["pid"].as_i64().unwrap() as i32;
    let api_pid = before["programs"]["api"]["pid"].clone();
    kill(db_pid, libc::SIGKILL);
    let r = h.wait_http("/health", 503, WAIT).json();
    h.check(r["programs"]["db"]["state"] != "running", || {
        format!("db should not be running during its restart: {r}")
    });
    let after = h.wait_http("/health", 200, WAIT).json();
    h.check(after["programs"]["db"]["restarts"] == 1, || {
        format!("db should have restarted once: {after}")
    });
    h.check(
        after["programs"]["api"]["pid"] == api_pid && after["programs"]["api"]["restarts"] == 0,
        || format!("api must not be restarted: before {before} after {after}"),
    );
    h.check(h.dir.stamps("api.starts").len() == 1, || {
        "api was started twice".into()
    });
    assert_eq!(h.stop(), 0);
}

/// A program that stays up backoff_reset long gets its failure count and its backoff reset:
/// with start_retries = 2, crashes after long runs never give up, and the delay before each
/// restart stays at restart_backoff instead of doubling (without the reset the third gap would
/// be ~2 s longer than the first; the bound leaves 1 s of slack).
#[test]
fn backoff_reset_after_staying_up() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.p]
command = {cmd}
restart_backoff = "500ms"
backoff_reset = "500ms"
start_retries = 2
settle_time = "100ms"
"#,
        sup = supervisor(""),
        cmd = arr(&[
            fx("stamp.py"),
            t.p("starts"),
            fx("exit.py"),
            "1".into(),
            "--after".into(),
            "1.0".into()
        ]),
    );
    let mut h = Hivesup::start(t, &cfg);
    let p = h.wait_program("p", LONG, "4 starts", |p| {
        p["restarts"].as_u64().is_some_and(|r| r >= 3)
    });
    h.check(p["state"] != "failed", || {
        format!("runs that stayed up past backoff_reset must not give up: {p}")
    });
    let starts = poll("4 start stamps", WAIT, || {
        let s = h.dir.stamps("starts");
        (s.len() >= 4).then_some(s)
    });
    let g = gaps_ms(&starts);
    h.check(g[2] < g[0] + 1000, || {
        format!("backoff was not reset after staying up: gaps between starts {g:?} ms")
    });
    assert_eq!(h.stop(), 0);
}
