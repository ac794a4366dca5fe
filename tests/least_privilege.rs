//! Least privilege (issue 5): who runs as whom, and where a secret may not go.
//!
//! Outside Docker: a non-root hivesup runs a program whose `user` is itself as a no-op,
//! refuses any other `user` unless `supervisor.user_switch = "if-root"`, and
//! `hivesup postgres init` refuses to act as an account it is not.
//!
//! In the Docker engine, the agent image in the four modes of README "Least privilege":
//! default (as root), `--user postgres`, `--read-only` as root with the fewest
//! capabilities (and `POSTGRES_USER=postgres`, the one case where initdb needs a password
//! file), and `--user postgres --read-only` with no capabilities. In each: every process
//! of PID 1's tree has the identity it should (hivesup root or postgres, postgres as
//! postgres, the API as api or postgres, nothing else), the API's round trip works, the
//! `POSTGRES_PASSWORD_FILE` password is nowhere in `docker inspect`, `docker logs`, the
//! health port's answers or any process's command line or environment, `hivesup ctl`
//! works for the container's user (not for the api account, and not at all under
//! `--user` without a tmpfs on /run), and `docker stop` exits 0. The default run also checks that the health port refuses every method but
//! GET/HEAD and that nothing changes; `--user` also starts again on its volume.
//!
//! Containers and volumes have unique names and are removed on drop, pass or fail; host
//! ports are ephemeral. Without a Docker engine the Docker tests fail, saying so.
//! Cold-start times go to stderr as `least-privilege: ...` lines.
// Tests are not PID 1: waiting on their own children (docker CLI, hivesup) with std is fine.
#![allow(clippy::disallowed_methods)]

mod common;

use std::{
    collections::HashMap,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    process::Command,
    sync::OnceLock,
    time::{Duration, Instant},
};

use common::engine::{docker, docker_ok, http, json_of, published_port};
use common::*;
use serde_json::{Value, json};

// ---------------------------------------------------------------- user switching, no Docker

fn envdump_config(extra_supervisor: &str, user: &str) -> String {
    format!(
        "{sup}{extra_supervisor}\n[programs.p]\nsettle_time = \"100ms\"\nstart_retries = 1\n{user}\ncommand = {cmd}\n",
        sup = supervisor(""),
        cmd = arr(&[fx("envdump.py")]),
    )
}

fn as_nobody() -> Opts {
    Opts {
        uid: Some(65534),
        ..Opts::default()
    }
}

/// A `user` naming hivesup's own account needs no switch: as non-root it is a no-op, even
/// under the default `user_switch = "required"`.
#[test]
fn own_user_is_a_no_op_for_non_root_hivesup() {
    require_root("the test drops hivesup itself to nobody");
    let cfg = envdump_config("", "user = \"nobody\"");
    let mut h = Hivesup::start_with(TestDir::new(), &cfg, as_nobody());
    h.wait_stdout("p | UID=65534 GID=65534");
    h.wait_state("p", "running", WAIT);
    assert_eq!(h.stop(), 0);
}

/// `user_switch = "if-root"` (the images' setting): a non-root hivesup runs a program whose
/// `user` it cannot become as itself and says so; without the setting the same config is
/// refused before anything starts (the control: the setting is what makes it run).
#[test]
fn if_root_runs_programs_as_hivesup_when_not_root() {
    require_root("the test drops hivesup itself to nobody");
    let user = "user = \"postgres\"";

    let refused = envdump_config("", user);
    let mut h = Hivesup::start_with(TestDir::new(), &refused, as_nobody());
    let code = h.wait_code(WAIT);
    h.check(code == 2, || format!("want exit 2 (refused), got {code}"));
    h.check(
        h.stderr()
            .iter()
            .any(|l| l.contains("programs.p.user") && l.contains("not root")),
        || "no line naming programs.p.user and why".into(),
    );
    h.check(!h.stdout().iter().any(|l| l.contains("UID=")), || {
        "the program ran although the config was refused".into()
    });

    let allowed = envdump_config("user_switch = \"if-root\"\n", user);
    let mut h = Hivesup::start_with(TestDir::new(), &allowed, as_nobody());
    h.wait_stdout("p | UID=65534 GID=65534");
    let warning = h.wait_stderr_contains("running the program as itself");
    h.check(
        warning.contains("program=p") && warning.contains("postgres") && warning.contains("65534"),
        || format!("the warning must name the program, the user and the uid: {warning}"),
    );
    h.wait_state("p", "running", WAIT);
    assert_eq!(h.stop(), 0);
}

/// A reload applies `if-root` the same way: an added program with a `user` runs as
/// hivesup, and the unchanged one is left alone (its cleared `user` compares equal).
#[test]
fn if_root_applies_on_reload() {
    require_root("the test drops hivesup itself to nobody");
    // nobody must be able to create the control socket that `ctl` uses.
    let t = TestDir::new();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let socket = format!(
        "control_socket = {}\nuser_switch = \"if-root\"\n",
        q(t.p("ctl.sock"))
    );
    let cfg = envdump_config(&socket, "user = \"postgres\"");
    let mut h = Hivesup::start_with(t, &cfg, as_nobody());
    h.wait_state("p", "running", WAIT);
    let pid = h.program("p")["pid"].clone();
    let added = format!(
        "{cfg}\n[programs.q]\nsettle_time = \"100ms\"\nuser = \"postgres\"\ncommand = {}\n",
        arr(&[fx("envdump.py")])
    );
    std::fs::write(&h.config_path, added).unwrap();
    let (code, out, err) = h.ctl(&["reload"]);
    h.check(
        code == 0 && out.contains("added q") && !out.contains("changed"),
        || format!("reload: {code}\n{out}\n{err}"),
    );
    h.wait_stdout("q | UID=65534 GID=65534");
    h.wait_state("q", "running", WAIT);
    let now = h.program("p")["pid"].clone();
    h.check(now == pid, || format!("p was restarted: {pid} -> {now}"));
    assert_eq!(h.stop(), 0);
}

/// `if-root` changes nothing for a root hivesup: the program still runs as its user.
#[test]
fn if_root_still_switches_users_as_root() {
    require_root("the test switches to nobody");
    let cfg = envdump_config("user_switch = \"if-root\"\n", "user = \"nobody\"");
    let mut h = Hivesup::start(TestDir::new(), &cfg);
    h.wait_stdout("p | UID=65534 GID=65534");
    h.check(!h.stderr().iter().any(|l| l.contains("as itself")), || {
        "a root hivesup warned about running programs as itself".into()
    });
    assert_eq!(h.stop(), 0);
}

/// `if-root` does not hide a user that does not exist: that is still a start error.
#[test]
fn if_root_keeps_unknown_users_an_error() {
    require_root("the test drops hivesup itself to nobody");
    let cfg = envdump_config(
        "user_switch = \"if-root\"\n",
        "user = \"no-such-user-hivesup\"",
    );
    let mut h = Hivesup::start_with(TestDir::new(), &cfg, as_nobody());
    let code = h.wait_code(WAIT);
    h.check(code == 2, || format!("want exit 2, got {code}"));
    h.check(
        h.stderr()
            .iter()
            .any(|l| l.contains("programs.p.user") && l.contains("no-such-user-hivesup")),
        || "no line naming the unknown user".into(),
    );
}

/// `hivesup postgres init` as a non-root user other than `--user`: one clear line, and
/// nothing created (initdb as the wrong account would name the superuser after it).
#[test]
fn postgres_init_refuses_to_act_as_another_account() {
    require_root("the test drops the bootstrap to nobody");
    let t = TestDir::new();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let pgdata = t.p("data");
    let (code, out, err) = run(
        Command::new(BIN)
            .args([
                "postgres", "init", "--user", "postgres", "--pgdata", &pgdata,
            ])
            .env_remove("POSTGRES_PASSWORD_FILE")
            .env("POSTGRES_PASSWORD", "x")
            .uid(65534)
            .gid(65534),
        WAIT,
    );
    assert_ne!(code, 0, "{out}{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("failed")).collect();
    assert_eq!(lines.len(), 1, "want one error line:\n{err}");
    assert!(
        lines[0].contains("failed to act as user postgres")
            && lines[0].contains("uid 65534")
            && lines[0].contains("run as root, or as postgres"),
        "{}",
        lines[0]
    );
    assert!(
        !std::path::Path::new(&pgdata).exists(),
        "init created {pgdata} before refusing"
    );
}

// ---------------------------------------------------------------- docker plumbing

const TAG: &str = "hive-agent:least-privilege";
const API_PORT: u16 = 38886;
const HEALTH_PORT: u16 = 38887;
const POSTGRES_UID: u32 = 999;
const API_UID: u32 = 10001;
const SECRET_PATH: &str = "/run/secrets/db_password";

/// Builds the agent image once per test run under this file's own tag (the base image
/// first, made locally when the engine cannot pull). Fails, never skips, without an engine.
fn build_image() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let result = BUILT.get_or_init(|| {
        let (ok, _, err) = docker(&["version"]);
        if !ok {
            return Err(format!("no Docker engine answers `docker version`: {err}"));
        }
        let root = env!("CARGO_MANIFEST_DIR");
        let base = Command::new("bash")
            .arg(format!("{root}/images/base-image.sh"))
            .output()
            .unwrap();
        if !base.status.success() {
            return Err(format!(
                "images/base-image.sh failed:\n{}",
                String::from_utf8_lossy(&base.stderr)
            ));
        }
        let dockerfile = format!("{root}/Dockerfile.agent");
        let (ok, out, err) = docker(&["build", "-q", "-f", &dockerfile, "-t", TAG, root]);
        if !ok {
            return Err(format!("docker build failed:\n{out}\n{err}"));
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// One way of running the image.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Default,
    NonRoot,
    ReadOnly,
    NonRootReadOnly,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Default => "default",
            Mode::NonRoot => "user",
            Mode::ReadOnly => "ro",
            Mode::NonRootReadOnly => "user-ro",
        }
    }

    /// The `docker run` flags the README documents for this mode, word for word.
    fn flags(self) -> &'static str {
        match self {
            Mode::Default => "",
            Mode::NonRoot => "--user postgres",
            Mode::ReadOnly => {
                "--read-only --tmpfs /run:mode=0755 \
                 --cap-drop ALL --cap-add CHOWN --cap-add DAC_OVERRIDE --cap-add FOWNER \
                 --cap-add SETGID --cap-add SETUID --cap-add KILL \
                 --security-opt no-new-privileges"
            }
            Mode::NonRootReadOnly => {
                "--user postgres --read-only --tmpfs /run:uid=999,gid=999,mode=0755 \
                 --cap-drop ALL --security-opt no-new-privileges"
            }
        }
    }

    /// Extra environment. Read-only as root also takes the official image's default role,
    /// `postgres`: only then does initdb get the superuser's password through a file,
    /// which must find a writable place (the socket directory on /run's tmpfs).
    fn env(self) -> &'static [&'static str] {
        match self {
            Mode::ReadOnly => &["POSTGRES_USER=postgres"],
            _ => &[],
        }
    }

    fn non_root(self) -> bool {
        matches!(self, Mode::NonRoot | Mode::NonRootReadOnly)
    }
}

/// A container, its data volume and its secret file, all removed on drop.
struct Container {
    name: String,
    volume: String,
    secret_dir: TestDir,
    password: String,
    mode: Mode,
}

impl Container {
    /// Starts the image in `mode` on a fresh volume, with the password as a secret file
    /// readable by every account in the container (as `make agent` writes it).
    fn start(mode: Mode) -> (Container, Instant) {
        build_image();
        let name = format!("hivesup-lp-{}-{}", mode.name(), std::process::id());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let c = Container {
            volume: format!("{name}-data"),
            name,
            secret_dir: TestDir::new(),
            password: format!("lp-{}-{nanos:x}-secret", mode.name()),
            mode,
        };
        c.cleanup();
        let secret = c
            .secret_dir
            .write("db_password", &format!("{}\n", c.password));
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(c.secret_dir.path(), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        docker_ok(&["volume", "create", &c.volume]);
        let mut args: Vec<String> = ["run", "-d", "--name", &c.name]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(mode.flags().split_whitespace().map(str::to_owned));
        args.extend([
            "-v".into(),
            format!("{}:/var/lib/postgresql/data", c.volume),
            "-v".into(),
            format!("{secret}:{SECRET_PATH}:ro"),
            "-e".into(),
            format!("POSTGRES_PASSWORD_FILE={SECRET_PATH}"),
        ]);
        for e in mode.env() {
            args.extend(["-e".to_owned(), e.to_string()]);
        }
        args.extend([
            "-p".into(),
            format!("127.0.0.1::{API_PORT}"),
            "-p".into(),
            format!("127.0.0.1::{HEALTH_PORT}"),
            TAG.into(),
        ]);
        let t = Instant::now();
        docker_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        (c, t)
    }

    fn state(&self, field: &str) -> String {
        docker(&["inspect", "-f", field, &self.name]).1
    }

    fn logs(&self) -> String {
        let out = Command::new("docker")
            .args(["logs", &self.name])
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "[{:?}] {what}\n--- docker logs {} ---\n{}",
            self.mode,
            self.name,
            self.logs()
        );
    }

    fn check(&self, cond: bool, what: impl FnOnce() -> String) {
        if !cond {
            self.fail(&what());
        }
    }

    /// Waits for Docker's own health check (`hivesup health`) to say healthy.
    fn wait_healthy(&self, started: Instant) -> Duration {
        let deadline = Duration::from_secs(240);
        loop {
            match self
                .state("{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}")
                .as_str()
            {
                "running healthy" => return started.elapsed(),
                s if s.starts_with("exited") || s.starts_with("dead") => {
                    self.fail(&format!("container {s}"))
                }
                s if started.elapsed() > deadline => {
                    self.fail(&format!("not healthy after {deadline:?}: {s}"))
                }
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    fn port(&self, container_port: u16) -> u16 {
        published_port(&self.name, container_port)
    }

    fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
        http(self.port(API_PORT), method, path, body)
    }

    fn health_port(&self, method: &str, path: &str) -> (u16, String) {
        http(self.port(HEALTH_PORT), method, path, None)
    }

    /// A shell command in the container as root (`docker exec` would otherwise take the
    /// container's `--user`, which cannot read other accounts' /proc entries).
    fn exec_root(&self, script: &str) -> String {
        docker_ok(&["exec", "-u", "0", &self.name, "sh", "-c", script])
    }

    fn cleanup(&self) {
        let _ = docker(&["rm", "-f", "-v", &self.name]);
        let _ = docker(&["volume", "rm", "-f", &self.volume]);
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.cleanup();
    }
}

// ---------------------------------------------------------------- who runs as whom

/// One process as /proc shows it.
#[derive(Debug, Clone)]
struct Proc {
    pid: u32,
    ppid: u32,
    /// real, effective, saved, filesystem
    uids: Vec<u32>,
    gids: Vec<u32>,
    groups: Vec<u32>,
    cmdline: String,
}

/// Every process of the container, read from /proc by a root shell.
fn processes(c: &Container) -> Vec<Proc> {
    let out = c.exec_root(
        r#"for d in /proc/[0-9]*; do
             s=$(cat "$d/status" 2>/dev/null) || continue
             f() { printf '%s\n' "$s" | sed -n "s/^$1:[[:space:]]*//p" | tr -s ' \t' ' '; }
             printf '%s|%s|%s|%s|%s|%s\n' "${d#/proc/}" "$(f PPid)" "$(f Uid)" "$(f Gid)" \
               "$(f Groups)" "$(tr '\0\n' '  ' <"$d/cmdline" 2>/dev/null)"
           done"#,
    );
    let nums = |s: &str| -> Vec<u32> { s.split_whitespace().map(|n| n.parse().unwrap()).collect() };
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.splitn(6, '|').collect();
            (f.len() == 6).then(|| Proc {
                pid: f[0].parse().unwrap(),
                ppid: f[1].parse().unwrap_or(0),
                uids: nums(f[2]),
                gids: nums(f[3]),
                groups: nums(f[4]),
                cmdline: f[5].trim().to_owned(),
            })
        })
        .collect()
}

/// What a process is, by its command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Role {
    Hivesup,
    Postgres,
    Api,
    Other,
}

fn role(p: &Proc) -> Role {
    let c = &p.cmdline;
    if p.pid == 1 {
        Role::Hivesup
    } else if c.starts_with("/usr/lib/postgresql/") || c.starts_with("postgres: ") {
        Role::Postgres
    } else if c.starts_with("python3") || c.starts_with("/usr/bin/python3") {
        // uvicorn's master and workers, and multiprocessing's helpers
        Role::Api
    } else {
        Role::Other
    }
}

/// Everything wrong with the processes of PID 1's tree (`docker exec` processes, ours and
/// the health check's, hang off PID 0 and are left out): each of them must run with all
/// four uids and gids of `want(role)` and no supplementary group 0.
fn violations(procs: &[Proc], want: impl Fn(Role) -> Option<u32>) -> Vec<String> {
    let by_pid: HashMap<u32, &Proc> = procs.iter().map(|p| (p.pid, p)).collect();
    let in_tree = |p: &Proc| {
        let mut cur = p;
        for _ in 0..64 {
            if cur.pid == 1 {
                return true;
            }
            match by_pid.get(&cur.ppid) {
                Some(parent) => cur = parent,
                None => return false,
            }
        }
        false
    };
    let mut bad = Vec::new();
    for p in procs.iter().filter(|p| in_tree(p)) {
        let r = role(p);
        let Some(uid) = want(r) else {
            bad.push(format!("unexpected process {r:?}: {p:?}"));
            continue;
        };
        // A uid with its own group: postgres 999:999, api 10001:10001, root 0:0.
        if p.uids.iter().any(|&u| u != uid) || p.gids.iter().any(|&g| g != uid) {
            bad.push(format!("{r:?} must run as {uid}:{uid}: {p:?}"));
        }
        if uid != 0 && p.groups.contains(&0) {
            bad.push(format!("{r:?} keeps supplementary group 0: {p:?}"));
        }
    }
    bad
}

fn count_roles(procs: &[Proc]) -> HashMap<Role, usize> {
    let mut n = HashMap::new();
    for p in procs {
        *n.entry(role(p)).or_insert(0) += 1;
    }
    n
}

/// The checker itself can fail: fed a postgres running as root, an API with root's
/// group, and a stray shell, it reports all three (the negative control for the
/// container tests, which can only show the good case).
#[test]
fn process_checker_reports_what_it_must() {
    let p = |pid, ppid, uid, groups: &[u32], cmd: &str| Proc {
        pid,
        ppid,
        uids: vec![uid; 4],
        gids: vec![uid; 4],
        groups: groups.to_vec(),
        cmdline: cmd.into(),
    };
    let procs = [
        p(1, 0, 0, &[0], "hivesup"),
        p(
            10,
            1,
            0,
            &[999],
            "/usr/lib/postgresql/17/bin/postgres -D /data",
        ),
        p(11, 10, 999, &[999], "postgres: checkpointer "),
        p(20, 1, 10001, &[10001, 0], "python3 -m uvicorn app:app"),
        p(30, 1, 0, &[0], "sh -c sleep 100"),
        p(40, 0, 0, &[0], "sh -c for d in /proc/[0-9]*"),
    ];
    let bad = violations(&procs, default_users);
    assert_eq!(bad.len(), 3, "{bad:#?}");
    assert!(bad[0].contains("Postgres must run as 999:999"), "{bad:#?}");
    assert!(bad[1].contains("supplementary group 0"), "{bad:#?}");
    assert!(bad[2].contains("unexpected process Other"), "{bad:#?}");
}

/// As root: hivesup root, postgres as postgres, the API as api, nothing else.
fn default_users(r: Role) -> Option<u32> {
    match r {
        Role::Hivesup => Some(0),
        Role::Postgres => Some(POSTGRES_UID),
        Role::Api => Some(API_UID),
        Role::Other => None,
    }
}

/// Under `--user postgres`: everything, hivesup included, as postgres.
fn non_root_users(r: Role) -> Option<u32> {
    (r != Role::Other).then_some(POSTGRES_UID)
}

fn check_users(c: &Container) {
    let procs = processes(c);
    let want = if c.mode.non_root() {
        non_root_users
    } else {
        default_users
    };
    let bad = violations(&procs, want);
    c.check(bad.is_empty(), || {
        format!("processes with the wrong identity:\n{}", bad.join("\n"))
    });
    let n = count_roles(&procs);
    // postmaster, checkpointer, background writer, walwriter, autovacuum, logical launcher;
    // uvicorn's master and its two workers.
    c.check(
        n.get(&Role::Postgres).copied().unwrap_or(0) >= 4
            && n.get(&Role::Api).copied().unwrap_or(0) >= 3,
        || format!("too few postgres or API processes seen ({n:?}): {procs:#?}"),
    );
}

// ---------------------------------------------------------------- API and health port

fn round_trip(c: &Container) {
    let (status, body) = c.api("GET", "/api/v1/health", None);
    c.check(status == 200, || format!("API health: {status} {body}"));
    for (label, e) in [("a", [0.0, 0.0, 0.0]), ("b", [5.0, 5.0, 5.0])] {
        let (status, body) = c.api(
            "POST",
            "/api/v1/vectors",
            Some(json!({"label": label, "embedding": e})),
        );
        c.check(status == 201, || format!("store {label}: {status} {body}"));
    }
    let (status, body) = c.api(
        "POST",
        "/api/v1/vectors/search",
        Some(json!({"embedding": [4.0, 5.0, 6.0], "k": 1})),
    );
    let v = json_of(&body);
    c.check(status == 200 && v["results"][0]["label"] == "b", || {
        format!("search: {status} {body}")
    });
}

/// pid and restart count of every program: what a state-changing request would change.
fn program_identities(c: &Container) -> Vec<(String, Value, Value, Value)> {
    let (status, body) = c.health_port("GET", "/status");
    let v = json_of(&body);
    c.check(status == 200 && v["programs"].is_object(), || {
        format!("/status: {status} {body}")
    });
    let mut out: Vec<_> = v["programs"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, p)| {
            (
                name.clone(),
                p["state"].clone(),
                p["pid"].clone(),
                p["restarts"].clone(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The health port serves GET (and HEAD) of its read-only endpoints and nothing else:
/// every other method on every path, known or guessed, is 404 or 405, and no program's
/// state, pid or restart count changes.
fn health_port_is_read_only(c: &Container) {
    let before = program_identities(c);
    let endpoints = ["/health", "/readyz", "/livez", "/status", "/metrics"];
    for path in endpoints {
        let (status, _) = c.health_port("GET", path);
        c.check(status == 200, || format!("GET {path}: {status}"));
        let (status, _) = c.health_port("HEAD", path);
        c.check(status == 200, || format!("HEAD {path}: {status}"));
    }
    let guessed = [
        "/",
        "/programs/api",
        "/programs/api/restart",
        "/programs/postgres/stop",
        "/stop",
        "/restart",
        "/shutdown",
        "/reload",
        "/signal",
        "/api/v1/vectors",
    ];
    for path in endpoints.iter().chain(guessed.iter()) {
        for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"] {
            let (status, body) = c.health_port(method, path);
            c.check(status == 404 || status == 405, || {
                format!("{method} {path} on the health port: {status} {body}")
            });
        }
    }
    let after = program_identities(c);
    c.check(before == after, || {
        format!("the health port changed something:\nbefore {before:?}\nafter  {after:?}")
    });
}

// ---------------------------------------------------------------- secrets

/// The password of `POSTGRES_PASSWORD_FILE` is nowhere it could leak. Each place is also
/// checked for something it must contain, so an empty or unreadable answer cannot pass.
fn secret_stays_secret(c: &Container) {
    let pw = c.password.as_str();
    let found = |what: &str, text: &str, must: &str| {
        c.check(!text.contains(pw), || format!("the password is in {what}"));
        c.check(text.contains(must), || {
            format!("{what} lacks {must:?}, so it was not read: {text:.2000}")
        });
    };

    found(
        "docker inspect",
        &docker_ok(&["inspect", &c.name]),
        &format!("POSTGRES_PASSWORD_FILE={SECRET_PATH}"),
    );
    found("docker logs", &c.logs(), "provisioned");
    for path in [
        "/health",
        "/health?verbose",
        "/readyz?verbose",
        "/status",
        "/metrics",
    ] {
        let (status, body) = c.health_port("GET", path);
        c.check(status == 200, || format!("GET {path}: {status}"));
        found(path, &body, "postgres");
    }

    // Every process's command line and environment, read by root. The password would
    // match itself in a grep's own command line, so the text comes back whole.
    let dump = c.exec_root(
        r#"for d in /proc/[0-9]*; do
             printf '\n== %s cmdline\n' "${d#/proc/}"; tr '\0' '\n' <"$d/cmdline"
             printf '\n== %s environ\n' "${d#/proc/}"; tr '\0' '\n' <"$d/environ"
           done 2>/dev/null; true"#,
    );
    let (mut cmdlines, mut environs) = (String::new(), String::new());
    for section in dump.split("\n== ").skip(1) {
        let (head, body) = section.split_once('\n').unwrap_or((section, ""));
        if head.ends_with("cmdline") {
            cmdlines.push_str(body);
        } else {
            environs.push_str(body);
        }
        cmdlines.push('\n');
    }
    found("/proc/*/cmdline", &cmdlines, "uvicorn");
    found(
        "/proc/*/environ",
        &environs,
        &format!("POSTGRES_PASSWORD_FILE={SECRET_PATH}"),
    );
    // The API reads the file itself (images/api/app.py): it has the path, not the value,
    // and no DATABASE_URL was set to carry it.
    c.check(!environs.contains("DATABASE_URL"), || {
        "some process has a DATABASE_URL".into()
    });
}

// ---------------------------------------------------------------- the modes

fn report(c: &Container, healthy: Duration) {
    eprintln!(
        "least-privilege: {} ({}): fresh volume to healthy in {healthy:.1?}",
        c.mode.name(),
        if c.mode.flags().is_empty() {
            "no flags".to_owned()
        } else {
            c.mode
                .flags()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        }
    );
}

/// `docker stop`: exit 0 after postgres' shutdown checkpoint, whoever hivesup runs as
/// (without CAP_KILL a root hivesup could not signal postgres and Docker would SIGKILL).
fn stops_cleanly(c: &Container) {
    let t = Instant::now();
    docker_ok(&["stop", "-t", "10", &c.name]);
    eprintln!(
        "least-privilege: {}: docker stop in {:.1?}",
        c.mode.name(),
        t.elapsed()
    );
    let code = c.state("{{.State.Status}} {{.State.ExitCode}}");
    c.check(code == "exited 0", || format!("after docker stop: {code}"));
    c.check(c.logs().contains("database system is shut down"), || {
        "no clean postgres shutdown".into()
    });
}

fn count(c: &Container) -> i64 {
    let (status, body) = c.api("GET", "/api/v1/vectors", None);
    let n = json_of(&body)["count"].as_i64();
    c.check(status == 200 && n.is_some(), || {
        format!("count: {status} {body}")
    });
    n.unwrap()
}

/// `hivesup ctl` works for the container's own user (root, or postgres under `--user`)
/// wherever /run is writable for hivesup, and never for the API's account. Under
/// `--user postgres` without a tmpfs on /run there is no control socket, and the log says
/// why.
fn control(c: &Container) {
    let (ok, out, err) = docker(&["exec", &c.name, "hivesup", "ctl", "status"]);
    if c.mode == Mode::NonRoot {
        c.check(!ok, || {
            format!("ctl answered without a control socket: {out}")
        });
        c.check(c.logs().contains("control socket disabled"), || {
            "no log line saying the control socket is disabled".into()
        });
        return;
    }
    c.check(
        ok && out.contains("api") && out.contains("postgres"),
        || format!("hivesup ctl status as the container's user:\n{out}\n{err}"),
    );
    if !c.mode.non_root() {
        let (ok, out, err) = docker(&["exec", "-u", "api", &c.name, "hivesup", "ctl", "status"]);
        c.check(!ok && err.contains("permission denied"), || {
            format!("the api account reached the control socket:\n{out}\n{err}")
        });
    }
}

/// Everything the modes share: identities, the API, no leaked secret, control, a clean
/// stop (the caller's).
fn exercise(mode: Mode) -> Container {
    let (c, t) = Container::start(mode);
    let healthy = c.wait_healthy(t);
    report(&c, healthy);
    check_users(&c);
    round_trip(&c);
    secret_stays_secret(&c);
    control(&c);
    if mode != Mode::Default && mode != Mode::NonRoot {
        // The negative control for the read-only modes: the root filesystem really is.
        let probe = c.exec_root("touch /etc/hivesup/x 2>&1 || true");
        c.check(probe.contains("Read-only file system"), || {
            format!("the root filesystem is writable: {probe}")
        });
    }
    c
}

#[test]
fn default_run_drops_privileges_and_keeps_secrets() {
    let c = exercise(Mode::Default);
    health_port_is_read_only(&c);
    stops_cleanly(&c);
}

/// hivesup itself non-root: init, initdb, postgres and the API all run as postgres, on a
/// fresh volume and again on the initialised one.
#[test]
fn docker_run_user_postgres_runs_everything_as_postgres() {
    let c = exercise(Mode::NonRoot);
    let logs = c.logs();
    c.check(logs.contains("initialised a new data directory"), || {
        "init did not run initdb as postgres".into()
    });
    c.check(
        logs.lines()
            .any(|l| l.contains("running the program as itself") && l.contains("program=api")),
        || "no warning that the API runs as hivesup's user".into(),
    );
    stops_cleanly(&c);
    let t = Instant::now();
    docker_ok(&["start", &c.name]);
    let warm = c.wait_healthy(t);
    eprintln!("least-privilege: user: initialised volume to healthy in {warm:.1?}");
    c.check(c.logs().contains("skipping initdb"), || {
        "no warm start".into()
    });
    check_users(&c);
    c.check(count(&c) == 2, || "rows lost across the restart".into());
    stops_cleanly(&c);
}

#[test]
fn read_only_root_with_fewest_capabilities() {
    let c = exercise(Mode::ReadOnly);
    stops_cleanly(&c);
}

#[test]
fn read_only_as_postgres_with_no_capabilities() {
    let c = exercise(Mode::NonRootReadOnly);
    stops_cleanly(&c);
}
