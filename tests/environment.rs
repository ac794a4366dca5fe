//! Program environments (issue 6, "Config conveniences"): `${VAR}` expansion from hivesup's
//! environment, `environment_files` (global, then the program's, then `environment`), and
//! secrets `{ file = "..." }` read at each start, never shown.
mod common;
use common::*;

use std::time::{SystemTime, UNIX_EPOCH};

/// A value nobody else prints: the secret tests look for it in everything hivesup shows.
fn nonce(tag: &str) -> String {
    let ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{tag}-{}-{ns}-s3cr3t", std::process::id())
}

/// Every line hivesup wrote, and every HTTP answer that describes programs.
fn everything_shown(h: &mut Hivesup) -> String {
    let mut all = h.stdout().join("\n");
    all.push('\n');
    all.push_str(&h.stderr().join("\n"));
    for path in [
        "/status",
        "/health",
        "/health?verbose",
        "/readyz?verbose",
        "/metrics",
    ] {
        all.push('\n');
        all.push_str(&h.get(path).body);
    }
    all
}

#[test]
fn env_files_then_environment_and_expansion_from_hivesups_environment() {
    let t = TestDir::new();
    // The config lives in a subdirectory: relative env files are relative to it, not to
    // hivesup's working directory (the test dir, which has its own decoy files).
    std::fs::create_dir(t.path().join("conf")).unwrap();
    t.write("conf/global.env", "# every program\nexport A=global\nB=global\nC='global'\nD=\"global\"\nINHERITED=from-global-file\n");
    t.write("conf/api.env", "B=api-file\nC=api-file\n");
    t.write("api.env", "B=decoy-from-cwd\n");
    let config = format!(
        r#"{sup}environment_files = ["global.env"]

[programs.api]
settle_time = "100ms"
environment_files = ["api.env"]
environment = {{ C = "table", EXPANDED = "${{HIVESUP_TEST_HOST}}:${{HIVESUP_TEST_PORT:-5432}}", DOLLARS = "$$HOME $${{X}} $HOME" }}
command = {cmd}

[programs.other]
settle_time = "100ms"
command = {other}
"#,
        sup = supervisor(""),
        cmd = arr(&[
            fx("envdump.py"),
            "A".into(),
            "B".into(),
            "C".into(),
            "D".into(),
            "EXPANDED".into(),
            "DOLLARS".into(),
            "INHERITED".into(),
        ]),
        other = arr(&[fx("envdump.py"), "B".into(), "C".into()]),
    );
    let config_path = t.write("conf/hivesup.toml", &config);
    let mut h = Hivesup::start_with(
        t,
        &config,
        Opts {
            args: Some(vec!["--config".into(), config_path]),
            env: vec![
                ("HIVESUP_TEST_HOST".into(), "db.internal".into()),
                ("INHERITED".into(), "from-hivesup".into()),
            ],
            ..Opts::default()
        },
    );
    for line in [
        "api | A=global",
        "api | B=api-file",
        "api | C=table",
        "api | D=global",
        "api | EXPANDED=db.internal:5432",
        "api | DOLLARS=$HOME ${X} $HOME",
        "api | INHERITED=from-global-file",
        "other | B=global",
        "other | C=global",
    ] {
        h.wait_stdout(line);
    }
    h.wait_ready(&["api", "other"]);
    assert_eq!(h.stop(), 0);
}

#[test]
fn check_expands_from_its_own_environment() {
    let t = TestDir::new();
    let cfg = t.write(
        "hivesup.toml",
        "[programs.api]\ncommand = [\"app\", \"--db\", \"${HIVESUP_TEST_DB_URL}\"]\n",
    );
    let (code, out, err) = run(
        std::process::Command::new(BIN)
            .args(["--config", &cfg, "check"])
            .env_remove("HIVESUP_TEST_DB_URL"),
        WAIT,
    );
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert_eq!(
        err,
        format!(
            "{cfg}:2:27: programs.api.command[2]: ${{HIVESUP_TEST_DB_URL}} is not set (give a default with ${{HIVESUP_TEST_DB_URL:-...}})\n"
        )
    );
    let (code, out, err) = run(
        std::process::Command::new(BIN)
            .args(["--config", &cfg, "check"])
            .env("HIVESUP_TEST_DB_URL", "postgres://x"),
        WAIT,
    );
    assert_eq!((code, out.as_str(), err.as_str()), (0, "ok\n", ""));
}

/// The program appends the secret it was started with to `seen` (never to its output) and
/// prints `started`; its ready probe passes only if it sees the same secret as the file
/// holds now.
fn secret_config(t: &TestDir, pw: &str) -> String {
    let same = format!("[ \"$DB_PASSWORD\" = \"$(cat {pw})\" ]");
    format!(
        r#"{sup}
[programs.api]
restart_backoff = "100ms"
restart_backoff_max = "200ms"
start_retries = 1000
environment = {{ DB_PASSWORD = {{ file = {pw} }}, PLAIN = "visible" }}
command = {cmd}

[programs.api.ready]
exec = {probe}
interval = "50ms"
"#,
        sup = supervisor(""),
        pw = q(pw),
        cmd = arr(&[
            "sh",
            "-c",
            &format!(
                "printf '%s\\n' \"$DB_PASSWORD\" >> {}; echo started; exec sleep 600",
                t.p("seen")
            ),
        ]),
        probe = arr(&["sh", "-c", &same]),
    )
}

/// Waits until `api` is ready with a pid other than `not`; returns the pid.
fn wait_ready_pid(h: &mut Hivesup, not: Option<i64>) -> i32 {
    let p = h.wait_program("api", LONG, "ready with a new pid", |p| {
        p["ready"] == true && p["pid"].as_i64().is_some() && p["pid"].as_i64() != not
    });
    p["pid"].as_i64().unwrap() as i32
}

#[test]
fn secret_is_read_at_each_start_and_never_shown() {
    let t = TestDir::new();
    let (first, second) = (nonce("first"), nonce("second"));
    let pw = t.write("pw", &format!("{first}\n"));
    let cfg = secret_config(&t, &pw);
    let mut h = Hivesup::start(t, &cfg);
    h.wait_stdout("api | started");
    let pid = wait_ready_pid(&mut h, None);
    let seen = h.dir.read("seen").unwrap_or_default();
    h.check(seen == format!("{first}\n"), || {
        format!("first start saw {seen:?}")
    });

    // Rotate, then make the program restart: the new start reads the new value, and so do
    // its probes (the ready probe compares with the file).
    std::fs::write(&pw, &second).unwrap();
    kill(pid, libc::SIGKILL);
    h.wait_for_nth(
        Stream::Stdout,
        2,
        |l| l == "api | started",
        LONG,
        "the second start",
    );
    wait_ready_pid(&mut h, Some(pid as i64));
    let seen = h.dir.read("seen").unwrap_or_default();
    h.check(seen == format!("{first}\n{second}\n"), || {
        format!("after rotation the program saw {seen:?}")
    });

    let shown = everything_shown(&mut h);
    for secret in [&first, &second] {
        h.check(!shown.contains(secret.as_str()), || {
            format!("the secret {secret:?} appears in hivesup's output or HTTP answers")
        });
    }
    assert_eq!(h.stop(), 0);
}

#[test]
fn secret_gone_at_a_restart_is_a_failed_start_that_recovers() {
    let t = TestDir::new();
    let value = nonce("gone");
    let pw = t.write("pw", &value);
    let cfg = secret_config(&t, &pw);
    let mut h = Hivesup::start(t, &cfg);
    h.wait_stdout("api | started");
    let pid = wait_ready_pid(&mut h, None);

    std::fs::remove_file(&pw).unwrap();
    kill(pid, libc::SIGKILL);
    let want = format!(
        "programs.api.environment.DB_PASSWORD: failed to read secret file {pw}: No such file or directory (os error 2)"
    );
    let p = h.wait_program("api", LONG, "a failed start naming the secret", |p| {
        p["last_probe_error"].as_str() == Some(want.as_str()) && p["pid"].is_null()
    });
    h.check(p["state"] != "failed", || {
        format!("one failed start should back off, not give up: {p}")
    });
    h.wait_stderr_contains(&want);

    std::fs::write(&pw, format!("{value}-restored\n")).unwrap();
    h.wait_for_nth(
        Stream::Stdout,
        2,
        |l| l == "api | started",
        LONG,
        "a start once the secret is back",
    );
    wait_ready_pid(&mut h, Some(pid as i64));
    let seen = h.dir.read("seen").unwrap_or_default();
    h.check(seen == format!("{value}\n{value}-restored\n"), || {
        format!("the program saw {seen:?}")
    });
    assert_eq!(h.stop(), 0);
}

#[test]
fn unusable_secret_at_start_exits_2_and_starts_nothing() {
    let t = TestDir::new();
    let missing = t.p("missing");
    let empty = t.write("empty", "\n");
    let config = format!(
        r#"{sup}
[programs.first]
priority = 1
command = ["touch", {started}]

[programs.api]
priority = 2
environment = {{ DB_PASSWORD = {{ file = {missing} }}, TOKEN = {{ file = {empty} }} }}
command = ["true"]
"#,
        sup = supervisor(""),
        started = q(t.p("started")),
        missing = q(&missing),
        empty = q(&empty),
    );
    let mut h = Hivesup::start(t, &config);
    let code = h.wait_code(WAIT);
    let err = h.stderr();
    let cfg = h.config_path.clone();
    h.check(code == 2, || format!("expected exit 2, got {code}"));
    h.check(
        err == [
            format!(
                "hivesup: {cfg}: programs.api.environment.DB_PASSWORD: failed to read secret file {missing}: No such file or directory (os error 2)"
            ),
            format!(
                "hivesup: {cfg}: programs.api.environment.TOKEN: secret file {empty} is empty"
            ),
        ],
        || "stderr should name program, key and path of each secret".into(),
    );
    h.check(h.dir.read("started").is_none(), || {
        "a program started although a secret was missing".into()
    });
}
