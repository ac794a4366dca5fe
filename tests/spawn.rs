//! How programs are spawned (issue 2): `user` (hivesup as root drops to it: setgid, setgroups,
//! setuid), environment added to hivesup's, directory, string commands via /bin/sh -c, each
//! program in its own session; a missing or non-executable command is a failed start with a
//! clear message, never a panic.
mod common;
use common::*;

fn pid_of(h: &mut Hivesup, name: &str) -> i32 {
    let p = h.wait_state(name, "running", WAIT);
    p["pid"].as_i64().unwrap_or_else(|| h.fail(&format!("no pid: {p}"))) as i32
}

/// `user = "nobody"`: real, effective, saved and fs uid/gid are nobody's; supplementary groups
/// are nobody's, not root's.
#[test]
fn user_nobody() {
    require_root("dropping to another user needs root");
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.p]
user = "nobody"
settle_time = "100ms"
command = {cmd}
"#,
        sup = supervisor(""),
        cmd = arr(&[fx("envdump.py")]),
    );
    let mut h = Hivesup::start(t, &cfg);
    let pid = pid_of(&mut h, "p");
    let uid = proc_status_field(pid, "Uid").unwrap();
    let gid = proc_status_field(pid, "Gid").unwrap();
    let groups = proc_status_field(pid, "Groups").unwrap_or_default();
    let all = |s: &str, v: &str| s.split_whitespace().all(|x| x == v);
    h.check(all(&uid, "65534"), || format!("Uid: {uid}"));
    h.check(all(&gid, "65534"), || format!("Gid: {gid}"));
    h.check(!groups.split_whitespace().any(|g| g == "0"), || format!("root's groups kept: Groups: {groups}"));
    h.wait_stdout("p | UID=65534 GID=65534");
    assert_eq!(h.stop(), 0);
}

/// `user = "uid:gid"` with numbers that have no passwd entry.
#[test]
fn user_uid_gid_numbers() {
    require_root("dropping to another user needs root");
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.p]
user = "4321:1234"
settle_time = "100ms"
command = {cmd}
"#,
        sup = supervisor(""),
        cmd = arr(&[fx("envdump.py")]),
    );
    let mut h = Hivesup::start(t, &cfg);
    let pid = pid_of(&mut h, "p");
    let uid = proc_status_field(pid, "Uid").unwrap();
    let gid = proc_status_field(pid, "Gid").unwrap();
    h.check(uid.split_whitespace().all(|x| x == "4321"), || format!("Uid: {uid}"));
    h.check(gid.split_whitespace().all(|x| x == "1234"), || format!("Gid: {gid}"));
    assert_eq!(h.stop(), 0);
}

/// An unknown user is a clear error naming it, without a panic.
#[test]
fn unknown_user_is_a_clear_error() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.p]
user = "no-such-user-hvs"
start_retries = 1
command = {cmd}
"#,
        sup = supervisor(""),
        cmd = arr(&[fx("stamp.py"), t.p("started"), fx("print_signals.py")]),
    );
    let h = Hivesup::start(t, &cfg);
    h.wait_stderr_contains("no-such-user-hvs");
    h.assert_no_panic();
    h.check(h.dir.read("started").is_none(), || "the program ran although its user does not exist".into());
}

#[test]
fn environment_directory_and_inherited_env() {
    let t = TestDir::new();
    std::fs::create_dir(t.path().join("work")).unwrap();
    let cfg = format!(
        r#"{sup}
[programs.p]
directory = {dir}
environment = {{ FOO = "bar baz", EMPTY = "" }}
settle_time = "100ms"
command = {cmd}
"#,
        sup = supervisor(""),
        dir = q(t.p("work")),
        cmd = arr(&[fx("envdump.py"), "FOO".into(), "EMPTY".into(), "HIVESUP_TEST_INHERIT".into()]),
    );
    let mut h = Hivesup::start_with(
        t,
        &cfg,
        Opts { env: vec![("HIVESUP_TEST_INHERIT".into(), "yes".into())], ..Opts::default() },
    );
    let cwd = format!("p | CWD={}", h.dir.p("work"));
    h.wait_stdout(&cwd);
    h.wait_stdout("p | FOO=bar baz");
    h.wait_stdout("p | EMPTY=");
    h.wait_stdout("p | HIVESUP_TEST_INHERIT=yes");
    assert_eq!(h.stop(), 0);
}

#[test]
fn string_command_runs_with_sh() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.p]
kind = "oneshot"
command = "x=$((40 + 2)); echo \"answer $x\" | tr a-z A-Z"
"#,
        sup = supervisor(""),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_stdout("p | ANSWER 42");
    h.wait_state("p", "exited", WAIT);
    assert_eq!(h.stop(), 0);
}

/// Each program is the leader of its own session (and so of its own process group).
#[test]
fn program_has_own_session() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.p]
settle_time = "100ms"
command = {cmd}
"#,
        sup = supervisor(""),
        cmd = arr(&[fx("print_signals.py")]),
    );
    let mut h = Hivesup::start(t, &cfg);
    let pid = pid_of(&mut h, "p");
    let p = read_proc(pid).unwrap();
    h.check(p.session == pid && p.pgrp == pid, || format!("program not in its own session: {p:?}"));
    assert_eq!(h.stop(), 0);
}

/// A command that does not exist: failed starts (start_retries of them), state `failed`, a
/// clear line naming the command, hivesup keeps serving and the other program runs on.
#[test]
fn missing_command_is_failed_start() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.ghost]
command = ["/nonexistent/hvs-ghost", "--flag"]
restart_backoff = "50ms"
start_retries = 2
[programs.ok]
settle_time = "100ms"
command = {ps}
"#,
        sup = supervisor(""),
        ps = arr(&[fx("print_signals.py")]),
    );
    let mut h = Hivesup::start(t, &cfg);
    let g = h.wait_state("ghost", "failed", LONG);
    h.check(g["pid"].is_null(), || format!("{g}"));
    h.wait_stderr_contains("/nonexistent/hvs-ghost");
    h.assert_no_panic();
    assert_eq!(h.get("/livez").status, 200);
    h.wait_state("ok", "running", WAIT);
    assert_eq!(h.get("/health").status, 503);
    assert_eq!(h.stop(), 0);
}

#[test]
fn non_executable_command_is_failed_start() {
    let t = TestDir::new();
    let script = t.write("not-exec.sh", "#!/bin/sh\necho should not run\n");
    set_mode(std::path::Path::new(&script), 0o644);
    let cfg = format!(
        r#"{sup}
[programs.noexec]
command = [{script}]
restart_backoff = "50ms"
start_retries = 2
"#,
        sup = supervisor(""),
        script = q(&script),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_state("noexec", "failed", LONG);
    h.wait_stderr_contains("not-exec.sh");
    h.assert_no_panic();
    h.check(!h.stdout().iter().any(|l| l.contains("should not run")), || "ran a non-executable file".into());
    assert_eq!(h.get("/livez").status, 200);
    assert_eq!(h.stop(), 0);
}

/// A missing working directory is a failed start too, not a panic.
#[test]
fn missing_directory_is_failed_start() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.p]
directory = {dir}
command = ["true"]
restart_backoff = "50ms"
start_retries = 1
"#,
        sup = supervisor(""),
        dir = q(t.p("no-such-dir")),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_state("p", "failed", LONG);
    h.wait_stderr_contains("no-such-dir");
    h.assert_no_panic();
    assert_eq!(h.stop(), 0);
}
