//! A hostile environment (issue 5, "Bad input"): an unreadable config, a config path that is
//! a directory, no /proc, a `user` or `directory` that does not exist, a missing or empty
//! `*_FILE` secret, a PGDATA owned by someone else, a full disk under initdb. Each must give
//! one clear error line and the exit code the README documents, start nothing (the
//! program's stamp file never appears, no process of the test is left) and touch no data.
//!
//! Needs root (to run hivesup as nobody, to mount a tmpfs in a private mount namespace, to
//! chown PGDATA) and the host's PostgreSQL 15 (tests/README.md).
#![allow(clippy::disallowed_methods)]
mod common;
use common::*;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

const BINDIR: &str = "/usr/lib/postgresql/15/bin";

/// A config whose one program would leave `started` behind if it ever ran: critical, never
/// restarted, exits 3, so a hivesup that starts it exits 3.
fn stamping_config(t: &TestDir, extra: &str) -> String {
    format!(
        r#"[supervisor]
health_addr = "127.0.0.1:0"
[programs.web]
command = {cmd}
restart = "never"
critical = true
{extra}
"#,
        cmd = arr(&[
            fx("stamp.py"),
            t.p("started"),
            "sh".into(),
            "-c".into(),
            "exit 3".into()
        ]),
    )
}

/// Processes whose command line mentions `dir` (the test's own files): none may be left.
fn processes_mentioning(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_err() || name == me {
            continue;
        }
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            if c.contains(&needle) {
                found.push(format!("{name}: {c}"));
            }
        }
    }
    found
}

fn nonblank(s: &str) -> Vec<String> {
    s.lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// Runs hivesup supervising `config_path` (as `uid` if given) to its exit; asserts the
/// exit code, exactly one stderr line starting with `want`, and that nothing started.
fn refused(t: &TestDir, args: &[&str], uid: Option<u32>, code: i32, want: &str) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("HIVESUP_CONFIG").current_dir("/");
    if let Some(u) = uid {
        use std::os::unix::process::CommandExt;
        cmd.uid(u).gid(u);
    }
    let (got, out, err) = run(&mut cmd, WAIT);
    let lines = nonblank(&err);
    let report = format!("hivesup {args:?}: exit {got}\nstdout:\n{out}\nstderr:\n{err}");
    assert_eq!(got, code, "{report}");
    assert_eq!(lines.len(), 1, "expected one error line; {report}");
    assert!(lines[0].starts_with(want), "expected {want:?}; {report}");
    assert!(!lines[0].contains("panicked"), "{report}");
    assert!(
        t.read("started").is_none(),
        "the program ran although hivesup refused to start; {report}"
    );
    let left = processes_mentioning(t.path());
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

#[test]
fn unreadable_config_as_non_root() {
    require_root("to run hivesup as nobody");
    let t = TestDir::new();
    set_mode(t.path(), 0o777); // the control run's program writes its stamp as nobody
    let cfg = t.write("hivesup.toml", &stamping_config(&t, ""));
    set_mode(Path::new(&cfg), 0o600);
    refused(
        &t,
        &["--config", &cfg],
        Some(65534),
        2,
        &format!("hivesup: failed to read config {cfg}: Permission denied (os error 13)"),
    );
    // `check` reads it the same way
    let mut cmd = Command::new(BIN);
    cmd.args(["--config", &cfg, "check"]);
    use std::os::unix::process::CommandExt;
    cmd.uid(65534).gid(65534);
    let (code, _, err) = run(&mut cmd, WAIT);
    assert_eq!(code, 1, "{err}");
    assert_eq!(nonblank(&err).len(), 1, "{err}");
    // Negative control: readable, the same config starts the program (which exits 3).
    set_mode(Path::new(&cfg), 0o644);
    let (code, _, err) = run(
        Command::new(BIN)
            .args(["--config", &cfg])
            .env_remove("HIVESUP_CONFIG")
            .uid(65534)
            .gid(65534),
        LONG,
    );
    assert_eq!(
        code, 3,
        "the control run should start the program and exit 3:\n{err}"
    );
    assert!(t.read("started").is_some());
}

#[test]
fn config_path_is_a_directory() {
    let t = TestDir::new();
    let dir = t.p("conf.d");
    std::fs::create_dir(&dir).unwrap();
    refused(
        &t,
        &["--config", &dir],
        None,
        2,
        &format!("hivesup: failed to read config {dir}: Is a directory (os error 21)"),
    );
}

#[test]
fn user_that_does_not_exist() {
    let t = TestDir::new();
    let cfg = t.write(
        "hivesup.toml",
        &stamping_config(&t, "user = \"no-such-user-hostile\""),
    );
    refused(
        &t,
        &["--config", &cfg],
        None,
        2,
        &format!("hivesup: {cfg}: programs.web.user: "),
    );
}

#[test]
fn directory_that_does_not_exist_or_is_a_file() {
    let t = TestDir::new();
    let missing = t.p("no-such-dir");
    let cfg = t.write(
        "hivesup.toml",
        &stamping_config(&t, &format!("directory = {}", q(&missing))),
    );
    refused(
        &t,
        &["--config", &cfg],
        None,
        2,
        &format!(
            "hivesup: {cfg}: programs.web.directory: \"{missing}\": No such file or directory"
        ),
    );
    let file = t.touch("a-file");
    let cfg = t.write(
        "hivesup.toml",
        &stamping_config(&t, &format!("directory = {}", q(&file))),
    );
    refused(
        &t,
        &["--config", &cfg],
        None,
        2,
        &format!("hivesup: {cfg}: programs.web.directory: \"{file}\" is not a directory"),
    );
}

/// `sh -c SCRIPT` in a private mount namespace (mounts vanish with it).
fn in_mount_namespace(script: &str, env: &[(&str, String)]) -> (i32, String, String) {
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", script])
        .env_remove("HIVESUP_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(&mut cmd, LONG)
}

#[test]
fn no_proc_is_one_error_line_and_nothing_starts() {
    require_root("to mount over /proc in a private mount namespace");
    let t = TestDir::new();
    let cfg = t.write("hivesup.toml", &stamping_config(&t, ""));
    // Negative control: the same namespace with /proc in place starts the program.
    let (code, _, err) = in_mount_namespace(&format!("exec {BIN} --config {cfg}"), &[]);
    assert_eq!(code, 3, "control run: {err}");
    assert!(t.read("started").is_some(), "control run: {err}");
    t.remove("started");

    for (what, hide) in [
        ("an empty tmpfs on /proc", "mount -t tmpfs none /proc"),
        ("/proc unmounted", "umount -l /proc"),
    ] {
        let (code, out, err) =
            in_mount_namespace(&format!("{hide} && exec {BIN} --config {cfg}"), &[]);
        let lines = nonblank(&err);
        let report = format!("{what}: exit {code}\nstdout:\n{out}\nstderr:\n{err}");
        assert_eq!(code, 1, "{report}");
        assert_eq!(lines.len(), 1, "{report}");
        assert!(
            lines[0].starts_with("hivesup: failed to read /proc/self/stat")
                && lines[0].contains("mount -t proc proc /proc"),
            "{report}"
        );
        assert!(t.read("started").is_none(), "{report}");
    }
    assert!(processes_mentioning(t.path()).is_empty());
}

// ---------------------------------------------------------------------------------------------
// hivesup postgres init | provision

/// The postgres account's uid and gid.
fn postgres_ids() -> (u32, u32) {
    let u = nix::unistd::User::from_name("postgres")
        .unwrap()
        .expect("the postgres system user (postgresql-15)");
    (u.uid.as_raw(), u.gid.as_raw())
}

/// `hivesup postgres STEP` against the host's PostgreSQL 15, with `env` only.
fn pgboot(t: &TestDir, step: &str, env: &[(&str, String)]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(["postgres", step, "--bindir", BINDIR, "--user", "postgres"])
        .arg("--socket-dir")
        .arg(t.p("sock"));
    if step == "provision" {
        // nothing listens there: getting as far as connecting would be a failure too
        cmd.args([
            "--port",
            &free_port().to_string(),
            "--connect-timeout",
            "1s",
        ]);
    }
    cmd.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("PGDATA", t.p("data"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(&mut cmd, LONG)
}

/// Every path under `dir` with owner, mode and content: "no data touched" means equal.
fn snapshot(dir: &Path) -> BTreeMap<String, (u32, u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let content = if m.is_dir() {
            for e in std::fs::read_dir(&p).unwrap().flatten() {
                stack.push(e.path());
            }
            Vec::new()
        } else {
            std::fs::read(&p).unwrap()
        };
        out.insert(p.display().to_string(), (m.uid(), m.mode(), content));
    }
    out
}

#[test]
fn missing_or_empty_secret_files_stop_init_and_provision_before_anything() {
    let t = TestDir::new();
    let missing = t.p("no-such-secret");
    let empty = t.write("empty-secret", "\n");
    let good = t.write("password", "pw\n");
    for step in ["init", "provision"] {
        for var in [
            "POSTGRES_PASSWORD_FILE",
            "POSTGRES_USER_FILE",
            "POSTGRES_DB_FILE",
        ] {
            for (secret, why) in [
                (
                    &missing,
                    "No such file or directory (os error 2)".to_string(),
                ),
                (&empty, "the file is empty".to_string()),
            ] {
                let mut env = vec![(var, secret.clone())];
                if var != "POSTGRES_PASSWORD_FILE" {
                    env.push(("POSTGRES_PASSWORD_FILE", good.clone()));
                }
                let (code, out, err) = pgboot(&t, step, &env);
                let report = format!("{step} with {var}={secret}: exit {code}\n{out}\n{err}");
                assert_eq!(code, 1, "{report}");
                assert_eq!(
                    nonblank(&err),
                    [format!(
                        "hivesup: failed to read {var} from {secret}: {why}"
                    )],
                    "{report}"
                );
                assert!(
                    !Path::new(&t.p("data")).exists() && !Path::new(&t.p("sock")).exists(),
                    "something was created: {report}"
                );
            }
        }
    }
    assert!(processes_mentioning(t.path()).is_empty());
}

#[test]
fn pgdata_owned_by_another_user_is_refused_untouched() {
    require_root("to chown PGDATA");
    let t = TestDir::new();
    let data = Path::new(&t.p("data")).to_path_buf();
    std::fs::create_dir_all(data.join("base/1")).unwrap();
    std::fs::write(data.join("PG_VERSION"), "15\n").unwrap();
    std::fs::write(data.join("base/1/1259"), "catalog bytes").unwrap();
    set_mode(&data, 0o750);
    let stranger = 43_210;
    for p in [data.clone(), data.join("base"), data.join("base/1")] {
        std::os::unix::fs::chown(&p, Some(stranger), Some(stranger)).unwrap();
    }
    for f in ["PG_VERSION", "base/1/1259"] {
        std::os::unix::fs::chown(data.join(f), Some(stranger), Some(stranger)).unwrap();
    }
    let before = snapshot(&data);
    let pw = t.write("password", "pw\n");
    let env = [("POSTGRES_PASSWORD_FILE", pw)];

    let (code, out, err) = pgboot(&t, "init", &env);
    let (uid, gid) = postgres_ids();
    let report = format!("exit {code}\n{out}\n{err}");
    assert_eq!(code, 1, "{report}");
    assert_eq!(
        nonblank(&err),
        [format!(
            "hivesup: failed to use {d}: it is owned by uid {stranger}, not by postgres (uid {uid}) who runs postgres; give it to postgres (chown -R postgres: {d}) or point PGDATA elsewhere",
            d = data.display()
        )],
        "{report}"
    );
    assert_eq!(snapshot(&data), before, "PGDATA was changed: {report}");

    // Negative control: the same directory owned by postgres is accepted as it is.
    for p in before.keys() {
        std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
    }
    let (code, out, err) = pgboot(&t, "init", &env);
    assert_eq!(code, 0, "control run: {out}\n{err}");
    assert!(err.contains("skipping initdb"), "{err}");
}

#[test]
fn full_disk_under_initdb_is_one_line_and_leaves_pgdata_empty() {
    require_root("to mount a small tmpfs as PGDATA");
    let t = TestDir::new();
    let data = t.p("data");
    std::fs::create_dir(&data).unwrap();
    let pw = t.write("password", "pw\n");
    // initdb on a 4 MiB tmpfs; then list what it left, inside the namespace.
    let script = format!(
        "mount -t tmpfs -o size=4m none {data} || exit 99; \
         {BIN} postgres init --bindir {BINDIR} --user postgres --socket-dir {sock}; rc=$?; \
         echo LISTING; ls -A {data}; exit $rc",
        sock = t.p("sock"),
    );
    let env = [
        ("PGDATA", data.clone()),
        ("POSTGRES_PASSWORD_FILE", pw),
        ("PATH", "/usr/local/bin:/usr/bin:/bin".into()),
    ];
    let (code, out, err) = in_mount_namespace(&script, &env);
    let report = format!("exit {code}\nstdout:\n{out}\nstderr:\n{err}");
    assert_eq!(code, 1, "{report}");
    // initdb says what it says; hivesup adds exactly one line of its own.
    let ours: Vec<&str> = err.lines().filter(|l| l.starts_with("hivesup: ")).collect();
    assert_eq!(ours.len(), 1, "{report}");
    assert!(
        ours[0].contains("initdb: exit status: 1")
            && ours[0].contains(&format!("the file system of {data} has only"))
            && ours[0].contains("MiB free"),
        "{report}"
    );
    let listing = out.split("LISTING").nth(1).unwrap_or("x");
    assert!(
        listing.trim().is_empty(),
        "initdb left files in PGDATA (no marker, no half cluster expected): {listing:?}; {report}"
    );
    assert!(processes_mentioning(t.path()).is_empty());
}

#[test]
fn endless_config_and_environment_files_are_refused_not_read_to_the_end() {
    let t = TestDir::new();
    let cfg = t.write(
        "hivesup.toml",
        &stamping_config(&t, "environment_files = [\"/dev/zero\"]"),
    );
    // 512 MiB of address space: without the cap this fails with "out of memory" instead of
    // taking the machine's memory, and the assertions below catch it.
    let capped = |args: &[&str]| {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(BIN);
        cmd.args(args).env_remove("HIVESUP_CONFIG");
        // SAFETY: setrlimit is async-signal-safe and touches only the child.
        unsafe {
            cmd.pre_exec(|| {
                let rl = libc::rlimit {
                    rlim_cur: 512 << 20,
                    rlim_max: 512 << 20,
                };
                libc::setrlimit(libc::RLIMIT_AS, &rl);
                Ok(())
            });
        }
        run(&mut cmd, WAIT)
    };
    let (code, _, err) = capped(&["--config", &cfg]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        nonblank(&err),
        [format!(
            "{cfg}:{pos}: programs.web.environment_files[0]: failed to read /dev/zero: the file is larger than 1 MiB",
            pos = env_files_pos(&t)
        )]
    );
    let (code, _, err) = capped(&["--config", "/dev/zero", "check"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        nonblank(&err),
        ["hivesup: failed to read config /dev/zero: the file is larger than 1 MiB"]
    );
    assert!(t.read("started").is_none());
}

/// LINE:COL of the `environment_files` value in the stamping config.
fn env_files_pos(t: &TestDir) -> String {
    let text = t.read("hivesup.toml").unwrap();
    let (i, line) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.starts_with("environment_files"))
        .unwrap();
    format!("{}:{}", i + 1, line.find('[').unwrap() + 2)
}
