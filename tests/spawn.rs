//! How programs are spawned (issue 2): `user` (hivesup as root drops to it: setgid, setgroups,
//! setuid), environment added to hivesup's, directory, string commands via /bin/sh -c, each
//! program in its own session; a missing or non-executable command is a failed start with a
//! clear message, never a panic.
mod common;
use common::*;

fn pid_of(h: &mut Hivesup, name: &str) -> i32 {
    let p = h.wait_state(name, "running", WAIT);
    p["pid"]
        .as_i64()
        .unwrap_or_else(|| h.fail(&format!("no pid: {p}"))) as i32
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
    h.check(!groups.split_whitespace().any(|g| g == "0"), || {
        format!("root's groups kept: Groups: {groups}")
    });
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
    h.check(uid.split_whitespace().all(|x| x == "4321"), || {
        format!("Uid: {uid}")
    });
    h.check(gid.split_whitespace().all(|x| x == "1234"), || {
        format!("Gid: {gid}")
    });
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
    h.check(h.dir.read("started").is_none(), || {
        "the program ran although its user does not exist".into()
    });
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
        cmd = arr(&[
            fx("envdump.py"),
            "FOO".into(),
            "EMPTY".into(),
            "HIVESUP_TEST_INHERIT".into()
        ]),
    );
    let mut h = Hivesup::start_with(
        t,
        &cfg,
        Opts {
            env: vec![("HIVESUP_TEST_INHERIT".into(), "yes".into())],
            ..Opts::default()
        },
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

/// A command found through PATH runs with argv[0] as written (multi-call binaries such as
/// busybox choose their applet by it), even though hivesup now resolves the path itself
/// before fork instead of letting execvp try every PATH entry in the child.
#[test]
fn path_command_keeps_argv0() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.p]
kind = "oneshot"
environment = {{ PATH = "/nonexistent-hivesup:/usr/bin:/bin" }}
command = ["sh", "-c", "tr '\\0' ' ' < /proc/$$$$/cmdline; echo; readlink /proc/$$$$/exe"]
"#,
        sup = supervisor(""),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_stdout_contains("p | sh -c tr");
    let exe = h.wait_stdout_contains("p | /");
    h.check(
        exe.ends_with("sh") || exe.ends_with("dash") || exe.ends_with("bash"),
        || format!("exe: {exe}"),
    );
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
    h.check(p.session == pid && p.pgrp == pid, || {
        format!("program not in its own session: {p:?}")
    });
    assert_eq!(h.stop(), 0);
}

/// A command that does not exist at startup: either hivesup refuses the config up front
/// (exit 1 or 2, one clear line naming the command, nothing started) or the program's starts
/// fail (state `failed`, a line naming the command) while the rest runs on. Never a panic,
/// never half-started.
fn bad_command_at_startup(cmd_path: &str) {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.bad]
command = [{cmd}, "--flag"]
restart_backoff = "50ms"
start_retries = 2
[programs.ok]
settle_time = "100ms"
command = {ok}
"#,
        sup = supervisor(""),
        cmd = q(cmd_path),
        ok = arr(&[fx("stamp.py"), t.p("ok.started"), fx("print_signals.py")]),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_stderr_contains(cmd_path);
    h.assert_no_panic();
    // refused (exits) or running (serves): whichever comes first
    poll("hivesup to exit or to listen", WAIT, || {
        (h.exited().is_some() || h.stderr().iter().any(|l| l.contains("listening on ")))
            .then_some(())
    });
    if let Some(st) = h.exited() {
        let code = st.code().unwrap_or(-1);
        // refused up front
        h.check(code == 1 || code == 2, || {
            format!("refused with exit {code}, expected 1 or 2")
        });
        h.check(h.dir.read("ok.started").is_none(), || {
            "refused the config but started a program".into()
        });
        let errs: Vec<String> = h
            .stderr()
            .into_iter()
            .filter(|l| l.contains(cmd_path))
            .collect();
        h.check(errs.len() == 1, || {
            format!("one clear line expected: {errs:?}")
        });
        return;
    }
    let g = h.wait_state("bad", "failed", LONG);
    h.check(g["pid"].is_null(), || format!("{g}"));
    assert_eq!(h.get("/livez").status, 200);
    h.wait_state("ok", "running", WAIT);
    assert_eq!(h.get("/health").status, 503);
    assert_eq!(h.stop(), 0);
}

#[test]
fn missing_command_at_startup() {
    bad_command_at_startup("/nonexistent/hvs-ghost");
}

#[test]
fn non_executable_command_at_startup() {
    let keep = TestDir::new();
    let script = keep.write("not-exec.sh", "#!/bin/sh\necho should not run\n");
    set_mode(std::path::Path::new(&script), 0o644);
    bad_command_at_startup(&script);
}

/// A program that cannot be spawned any more when it is restarted (its executable vanished,
/// or lost its x bit, after startup): each attempt is a failed start, then `failed`; a clear
/// line names the command; hivesup keeps serving, no panic.
fn unspawnable_on_restart(break_it: impl FnOnce(&str)) {
    let t = TestDir::new();
    let script = t.write(
        "prog.sh",
        &format!(
            "#!/bin/sh\necho ran\nwhile [ ! -e {go} ]; do sleep 0.05; done\nexit 1\n",
            go = t.p("go")
        ),
    );
    set_mode(std::path::Path::new(&script), 0o755);
    let cfg = format!(
        r#"{sup}
[programs.p]
command = [{script}]
restart_backoff = "50ms"
start_retries = 2
settle_time = "100ms"
"#,
        sup = supervisor(""),
        script = q(&script),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_stdout("p | ran");
    break_it(&script);
    h.dir.touch("go");
    let p = h.wait_state("p", "failed", LONG);
    h.check(p["pid"].is_null(), || format!("{p}"));
    h.check(h.count(Stream::Stdout, |l| l == "p | ran") == 1, || {
        "the broken command ran again".into()
    });
    h.wait_stderr_contains("prog.sh");
    h.assert_no_panic();
    assert_eq!(h.get("/livez").status, 200);
    assert_eq!(h.stop(), 0);
}

#[test]
fn command_vanished_before_restart_is_failed_start() {
    unspawnable_on_restart(|p| std::fs::remove_file(p).unwrap());
}

#[test]
fn command_not_executable_before_restart_is_failed_start() {
    unspawnable_on_restart(|p| set_mode(std::path::Path::new(p), 0o644));
}

/// A working directory that vanishes before a restart is a failed start, not a panic. (One
/// missing at startup stops hivesup before anything starts: tests/hostile_env.rs.)
#[test]
fn missing_directory_is_failed_start() {
    let t = TestDir::new();
    let work = t.p("work");
    std::fs::create_dir(&work).unwrap();
    let cfg = format!(
        r#"{sup}
[programs.p]
directory = {dir}
command = "echo ran; while [ ! -e {go} ]; do sleep 0.05; done; exit 1"
restart_backoff = "50ms"
start_retries = 2
settle_time = "100ms"
"#,
        sup = supervisor(""),
        dir = q(&work),
        go = t.p("go"),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_stdout("p | ran");
    std::fs::remove_dir(&work).unwrap();
    h.dir.touch("go");
    h.wait_state("p", "failed", LONG);
    h.wait_stderr_contains("work");
    h.check(h.count(Stream::Stdout, |l| l == "p | ran") == 1, || {
        "the program ran again without its directory".into()
    });
    h.assert_no_panic();
    assert_eq!(h.stop(), 0);
}

/// hivesup running as non-root runs programs as itself ...
#[test]
fn non_root_hivesup_runs_programs_as_itself() {
    require_root("the test drops hivesup itself to nobody");
    let t = TestDir::new();
    let cfg = format!(
        "{sup}\n[programs.p]\nsettle_time = \"100ms\"\ncommand = {cmd}\n",
        sup = supervisor(""),
        cmd = arr(&[fx("envdump.py")]),
    );
    let mut h = Hivesup::start_with(
        t,
        &cfg,
        Opts {
            uid: Some(65534),
            ..Opts::default()
        },
    );
    h.wait_stdout("p | UID=65534 GID=65534");
    h.wait_state("p", "running", WAIT);
    assert_eq!(h.stop(), 0);
}

/// ... and says clearly why it cannot switch to another user (no panic, the program is not run
/// as hivesup's own user instead).
#[test]
fn non_root_hivesup_cannot_switch_user_says_why() {
    require_root("the test drops hivesup itself to nobody");
    let t = TestDir::new();
    let cfg = format!(
        "{sup}\n[programs.p]\nuser = \"postgres\"\nstart_retries = 1\ncommand = {cmd}\n",
        sup = supervisor(""),
        cmd = arr(&[fx("envdump.py")]),
    );
    let mut h = Hivesup::start_with(
        t,
        &cfg,
        Opts {
            uid: Some(65534),
            ..Opts::default()
        },
    );
    let line = h.wait_for_line(
        Stream::Stderr,
        |l| l.contains("postgres") && (l.contains("root") || l.to_lowercase().contains("permi")),
        WAIT,
        "a line saying hivesup cannot switch to user postgres (not root / permission)",
    );
    let _ = line;
    h.assert_no_panic();
    // refused up front (exits 1 or 2) or a failed start (keeps serving): whichever it is
    poll("hivesup to exit or to listen", WAIT, || {
        (h.exited().is_some() || h.stderr().iter().any(|l| l.contains("listening on ")))
            .then_some(())
    });
    match h.exited() {
        Some(st) => h.check(matches!(st.code(), Some(1 | 2)), || {
            format!("refused with {st}, expected exit 1 or 2")
        }),
        None => {
            h.wait_state("p", "failed", WAIT);
            h.stop();
        }
    }
    h.check(
        !h.stdout().iter().any(|l| l.starts_with("p | UID=")),
        || "the program ran anyway".into(),
    );
}

/// `user = NAME` sets that user's supplementary groups (initgroups), as `id -G NAME` lists
/// them (postgres is in ssl-cert on Debian, which it needs for its TLS key).
#[test]
fn user_name_sets_supplementary_groups() {
    require_root("dropping to another user needs root");
    let (code, want, err) = run(
        std::process::Command::new("id").args(["-G", "postgres"]),
        WAIT,
    );
    assert_eq!(
        code, 0,
        "id -G postgres: {err} (the postgres user comes with postgresql-15)"
    );
    let mut want: Vec<u32> = want
        .split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect();
    want.sort();
    let t = TestDir::new();
    let cfg = format!(
        "{sup}\n[programs.p]\nuser = \"postgres\"\nsettle_time = \"100ms\"\ncommand = {cmd}\n",
        sup = supervisor(""),
        cmd = arr(&[fx("envdump.py")]),
    );
    let mut h = Hivesup::start(t, &cfg);
    let pid = pid_of(&mut h, "p");
    let groups = proc_status_field(pid, "Groups").unwrap_or_default();
    let mut got: Vec<u32> = groups
        .split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect();
    got.sort();
    h.check(got == want, || {
        format!("Groups: {got:?}, `id -G postgres`: {want:?}")
    });
    let uid = proc_status_field(pid, "Uid").unwrap();
    let want_uid = want_uid();
    h.check(uid.split_whitespace().all(|x| x == want_uid), || {
        format!("Uid: {uid}, postgres is {want_uid}")
    });
    assert_eq!(h.stop(), 0);
}

fn want_uid() -> String {
    let (_, out, _) = run(
        std::process::Command::new("id").args(["-u", "postgres"]),
        WAIT,
    );
    out.trim().to_string()
}
