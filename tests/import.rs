//! `hivesup import supervisord.conf` (issue 6, "Migration"): the real binary on the fixtures in
//! tests/import/, each with golden output beside it.
//!
//! - `seed/`: the supervisord.conf a user of the seed plan would have written (postgres at
//!   priority 100, the uvicorn API at 200 with `%(ENV_DATABASE_URL)s`, a /health monitor at
//!   300, `[include] files = conf.d/*.conf`), and `sample/`: supervisord's own sample (what
//!   `echo_supervisord_conf` prints) with its example sections uncommented. Each converts with
//!   exit 0 to `expected.toml` on stdout and `expected.stderr`, and the result passes
//!   `hivesup check`.
//! - `bad/NAME.conf`: input that cannot be converted: exit 2, nothing on stdout, exactly
//!   `bad/NAME.expected` on stderr.
//!
//! Regenerate the goldens with `UPDATE_GOLDEN=1 cargo test --test import` and review the diff.

// The test process is not hivesup: it may wait for its own children (clippy.toml bans that in src/).
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/import")
}

/// `hivesup import FILE` run in `dir`.
fn import_in(dir: &Path, file: &str) -> Output {
    Command::new(BIN)
        .current_dir(dir)
        .args(["import", file])
        .env_remove("HIVESUP_CONFIG")
        .output()
        .expect("run hivesup import")
}

fn report(what: &str, out: &Output) -> String {
    format!(
        "{what}: status {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Compares `actual` with the golden file, or rewrites it under UPDATE_GOLDEN=1.
fn golden(path: &Path, actual: &str, context: &str) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    assert_eq!(actual, expected, "{} differs\n{context}", path.display());
}

/// `hivesup check` on a converted config, with `env` set: must print `ok`.
fn check_passes(toml: &str, env: &[(&str, &str)]) {
    let t = TestDir::new();
    let path = t.write("hivesup.toml", toml);
    let mut cmd = Command::new(BIN);
    cmd.args(["--config", &path, "check"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run hivesup check");
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim()
        ),
        (Some(0), "ok"),
        "{}\n--- config\n{toml}",
        report("hivesup check", &out)
    );
}

/// Converts `NAME/supervisord.conf`, compares with the goldens, and checks the result.
fn convert_fixture(name: &str, env: &[(&str, &str)]) -> String {
    let out = import_in(&fixtures(), &format!("{name}/supervisord.conf"));
    let ctx = report(name, &out);
    assert_eq!(out.status.code(), Some(0), "{ctx}");
    let stdout = String::from_utf8(out.stdout.clone()).expect("utf-8 stdout");
    let stderr = String::from_utf8(out.stderr.clone()).expect("utf-8 stderr");
    assert!(!stderr.contains("panicked"), "{ctx}");
    golden(&fixtures().join(name).join("expected.toml"), &stdout, &ctx);
    golden(
        &fixtures().join(name).join("expected.stderr"),
        &stderr,
        &ctx,
    );
    check_passes(&stdout, env);
    stdout
}

/// The `[programs.NAME]` headers in output order.
fn program_tables(toml: &str) -> Vec<&str> {
    toml.lines()
        .filter_map(|l| l.strip_prefix("[programs.")?.strip_suffix(']'))
        .collect()
}

/// The value line of `key` inside `[programs.NAME]`.
fn program_key<'a>(toml: &'a str, name: &str, key: &str) -> Option<&'a str> {
    let header = format!("[programs.{name}]");
    let mut lines = toml.lines().skip_while(|l| *l != header).skip(1);
    lines
        .by_ref()
        .take_while(|l| !l.starts_with('['))
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
}

#[test]
fn seed_plan_supervisord_conf_converts_and_passes_check() {
    let toml = convert_fixture("seed", &[("DATABASE_URL", "postgres://api@127.0.0.1/app")]);
    // Main file first, then conf.d/*.conf in sorted order, as supervisord reads them.
    assert_eq!(program_tables(&toml), ["postgres", "api", "health-monitor"]);
    let key = |p, k| program_key(&toml, p, k);
    assert_eq!(key("postgres", "priority"), Some("100"));
    assert_eq!(key("postgres", "user"), Some("\"postgres\""));
    assert_eq!(key("postgres", "stop_signal"), Some("\"SIGINT\""));
    assert_eq!(key("postgres", "restart"), Some("\"always\""));
    assert_eq!(key("api", "priority"), Some("200"));
    assert_eq!(key("api", "restart"), Some("\"on-failure\""));
    assert_eq!(
        key("api", "environment"),
        Some(r#"{ DATABASE_URL = "${DATABASE_URL}", PYTHONUNBUFFERED = "1", APP_NAME = "api" }"#)
    );
    assert_eq!(key("health-monitor", "priority"), Some("300"));
    // `sh -c SCRIPT` is what a shell-string command runs.
    assert!(
        key("health-monitor", "command").is_some_and(|c| c.starts_with("\"while true; do curl")),
        "{toml}"
    );
    assert!(toml.contains("# supervisord: stopasgroup = true — hivesup always signals the program's whole process group"));

    // Negative control: `${DATABASE_URL}` is really read from the environment, as
    // supervisord's %(ENV_DATABASE_URL)s was; unset, `check` names the key.
    let t = TestDir::new();
    let path = t.write("hivesup.toml", &toml);
    let out = Command::new(BIN)
        .args(["--config", &path, "check"])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        report("check without DATABASE_URL", &out)
    );
    assert!(
        stderr.contains("programs.api.environment.DATABASE_URL: ${DATABASE_URL} is not set"),
        "{stderr}"
    );
}

#[test]
fn supervisords_own_sample_converts_and_passes_check() {
    let toml = convert_fixture("sample", &[]);
    assert_eq!(program_tables(&toml), ["theprogramname"]);
    let key = |k| program_key(&toml, "theprogramname", k);
    assert_eq!(key("command"), Some(r#"["/bin/cat"]"#));
    assert_eq!(key("stop_signal"), Some("\"SIGQUIT\""));
    assert_eq!(key("environment"), Some(r#"{ A = "1", B = "2" }"#));
    // What hivesup lacks is a comment, not silently dropped.
    for part in [
        "# supervisord: [eventlistener:theeventlistenername] — ",
        "# supervisord: [group:thegroupname] — ",
        "# supervisord: [inet_http_server] — ",
        "# health_addr = \"127.0.0.1:9001\"",
        "# supervisord: stdout_logfile = /a/path — ",
        "# supervisord: umask = 022 — ",
    ] {
        assert!(toml.contains(part), "missing {part:?} in\n{toml}");
    }
}

#[test]
fn bad_inputs_match_their_golden_errors() {
    let dir = fixtures().join("bad");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 6,
        "expected the bad-input corpus in {}",
        dir.display()
    );
    for file in files {
        let name = format!("bad/{}", file.file_name().unwrap().to_str().unwrap());
        let out = import_in(&fixtures(), &name);
        let ctx = report(&name, &out);
        assert_eq!(out.status.code(), Some(2), "{ctx}");
        assert!(out.stdout.is_empty(), "{ctx}");
        let stderr = String::from_utf8(out.stderr.clone()).expect("utf-8 stderr");
        assert!(!stderr.contains("panicked"), "{ctx}");
        // Every line is FILE:LINE: message or FILE: message, naming the file it is about.
        for line in stderr.lines() {
            assert!(line.starts_with(&name), "{line}\n{ctx}");
        }
        golden(&file.with_extension("expected"), &stderr, &ctx);
    }
}

#[test]
fn includes_resolve_against_the_including_file_not_the_working_directory() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = import_in(root, "tests/import/seed/supervisord.conf");
    let ctx = report("import from the repository root", &out);
    assert_eq!(out.status.code(), Some(0), "{ctx}");
    let toml = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        program_tables(&toml),
        ["postgres", "api", "health-monitor"],
        "{ctx}"
    );
    assert!(
        toml.contains("#   tests/import/seed/conf.d/api.conf\n"),
        "{ctx}"
    );
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let t = TestDir::new();
    let out = import_in(t.path(), "nope.conf");
    assert_eq!(out.status.code(), Some(2), "{}", report("nope.conf", &out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "nope.conf: failed to read: No such file or directory (os error 2)\n"
    );
}

/// The converted config runs: real programs, in supervisord's priority order, with the
/// environment and `%(program_name)s` it gave them.
#[test]
fn converted_config_runs_its_programs_in_priority_order() {
    let t = TestDir::new();
    t.write(
        "supervisord.conf",
        r#"[supervisord]
nodaemon=true
environment=GREETING="%(ENV_IMPORT_TEST_GREETING)s"

[program:second]
command=/bin/sh -c "echo second says $GREETING from $NAME '${NOT_FOR_HIVESUP}'; exec sleep 1000"
priority=20
environment=NAME="%(program_name)s"
startsecs=0

[program:first]
command=/bin/sh -c "echo first up; exec sleep 1000"
priority=10
startsecs=1
stopsignal=TERM
"#,
    );
    let out = import_in(t.path(), "supervisord.conf");
    assert_eq!(out.status.code(), Some(0), "{}", report("import", &out));
    let toml = String::from_utf8(out.stdout).unwrap();
    // An ephemeral health port instead of the default 8080.
    let toml = toml.replacen(
        "[supervisor]\n",
        "[supervisor]\nhealth_addr = \"127.0.0.1:0\"\n",
        1,
    );
    let mut h = Hivesup::start_with(
        t,
        &toml,
        Opts {
            env: vec![("IMPORT_TEST_GREETING".into(), "hello".into())],
            ..Opts::default()
        },
    );
    // `$GREETING` and `$NAME` reach the shell as written; `${NOT_FOR_HIVESUP}` was
    // escaped as `$${...}`, so hivesup left it to the shell too.
    let second = "second | second says hello from second ${NOT_FOR_HIVESUP}";
    h.wait_stdout("first | first up");
    h.wait_stdout(second);
    let out = h.stdout();
    let at = |l: &str| out.iter().position(|x| x == l).unwrap();
    h.check(at("first | first up") < at(second), || {
        "priority 20 started before priority 10 was ready".into()
    });
    assert_eq!(h.stop(), 0);
}

/// The supervisord.conf of this repository's own comparison image converts cleanly too.
#[test]
fn the_benchmark_images_supervisord_conf_converts_and_passes_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = import_in(root, "benches/supervisord-image/supervisord.conf");
    let ctx = report("benches/supervisord-image/supervisord.conf", &out);
    assert_eq!(out.status.code(), Some(0), "{ctx}");
    let toml = String::from_utf8(out.stdout).unwrap();
    assert_eq!(program_tables(&toml), ["postgres", "api"], "{ctx}");
    check_passes(&toml, &[]);
}
