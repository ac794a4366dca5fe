//! The two all-in-one images in the real Docker engine (issue 3): build, cold and warm
//! start to `healthy`, the API's pgvector round trip through the published port,
//! `docker restart` and `docker stop`, `kill -9` of the postmaster and of the API,
//! zombies, and a wrong POSTGRES_PASSWORD_FILE.
//!
//! Every wait polls `docker inspect` or HTTP against a deadline. Containers and volumes
//! get unique names and are removed on drop, pass or fail. Without a Docker engine they
//! fail with that reason.
//! Measured sizes and times go to stderr and to `$CARGO_TARGET_TMPDIR/images-report.txt`.
// Tests are not PID 1: waiting on their own children (docker CLI) with std is fine.
#![allow(clippy::disallowed_methods)]

use std::{
    io::Write,
    process::Command,
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

mod common;

use common::engine::{api as http, docker, docker_ok, published_port};
use serde_json::{Value, json};

const PASSWORD: &str = "test-pw-0f3a";

#[derive(Clone, Copy)]
struct Image {
    name: &'static str,
    dockerfile: &'static str,
    api_port: u16,
    health_port: u16,
    role: &'static str,
    db: &'static str,
}

const AGENT: Image = Image {
    name: "agent",
    dockerfile: "Dockerfile.agent",
    api_port: 38886,
    health_port: 38887,
    role: "agent",
    db: "hive_agent",
};
const GENIE: Image = Image {
    name: "genie",
    dockerfile: "Dockerfile.genie",
    api_port: 48886,
    health_port: 48887,
    role: "hive",
    db: "hive_genie",
};

impl Image {
    fn tag(&self) -> String {
        format!("hive-{}:test", self.name)
    }
}

// ---------------------------------------------------------------- docker plumbing

fn report(line: String) {
    eprintln!("images-report: {line}");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("images-report.txt");
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    writeln!(f, "{line}").unwrap();
}

/// These tests are about the real engine: without one they fail, saying so (a skipped
/// test that counts as passing would hide exactly what users depend on). A developer
/// without an engine runs the bootstrap against host PostgreSQL: `cargo test --test pgboot`.
fn engine() -> bool {
    let (ok, _, err) = docker(&["version"]);
    assert!(ok, "no Docker engine answers `docker version`: {err}");
    true
}

/// Builds both images once per test run (the base image first, made locally when the
/// engine cannot pull). The second build reuses the first one's layers.
fn build_images() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let result = BUILT.get_or_init(|| {
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
        for image in [AGENT, GENIE] {
            let t = Instant::now();
            let (ok, out, err) = docker(&[
                "build",
                "-q",
                "-f",
                &format!("{root}/{}", image.dockerfile),
                "-t",
                &image.tag(),
                root,
            ]);
            if !ok {
                return Err(format!(
                    "docker build {} failed:\n{out}\n{err}",
                    image.dockerfile
                ));
            }
            let size: u64 = docker_ok(&["image", "inspect", "-f", "{{.Size}}", &image.tag()])
                .parse()
                .unwrap();
            report(format!(
                "{}: built in {:.0?}, size {:.0} MB",
                image.dockerfile,
                t.elapsed(),
                size as f64 / 1e6
            ));
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// A container and its data volume, both removed on drop.
struct Container {
    name: String,
    volume: String,
    image: Image,
}

impl Container {
    fn new(image: Image, test: &str) -> Container {
        let name = format!("hivesup-test-{}-{test}-{}", image.name, std::process::id());
        let c = Container {
            volume: format!("{name}-data"),
            name,
            image,
        };
        c.cleanup();
        docker_ok(&["volume", "create", &c.volume]);
        c
    }

    /// `docker run -d` with the volume and random host ports for the API and hivesup.
    fn run(&self, env: &[&str]) -> Instant {
        let _ = docker(&["rm", "-f", &self.name]);
        let mut args = vec![
            "run".to_owned(),
            "-d".into(),
            "--name".into(),
            self.name.clone(),
            "-v".into(),
            format!("{}:/var/lib/postgresql/data", self.volume),
            "-p".into(),
            format!("127.0.0.1::{}", self.image.api_port),
            "-p".into(),
            format!("127.0.0.1::{}", self.image.health_port),
        ];
        for e in env {
            args.push("-e".into());
            args.push((*e).to_owned());
        }
        args.push(self.image.tag());
        let t = Instant::now();
        docker_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        t
    }

    fn run_default(&self) -> Instant {
        self.run(&[&format!("POSTGRES_PASSWORD={PASSWORD}")])
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
        panic!("{what}\n--- docker logs {} ---\n{}", self.name, self.logs());
    }

    fn wait_healthy(&self, deadline: Duration) {
        let end = Instant::now() + deadline;
        loop {
            match self
                .state("{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}")
                .as_str()
            {
                "running healthy" => return,
                s if s.starts_with("exited") || s.starts_with("dead") => {
                    self.fail(&format!("container {s}"))
                }
                s if Instant::now() > end => {
                    self.fail(&format!("not healthy after {deadline:?}: {s}"))
                }
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    fn wait_exited(&self, deadline: Duration) -> i32 {
        let end = Instant::now() + deadline;
        loop {
            let s = self.state("{{.State.Status}} {{.State.ExitCode}}");
            if let Some(code) = s.strip_prefix("exited ") {
                return code.parse().unwrap();
            }
            if Instant::now() > end {
                self.fail(&format!("still {s} after {deadline:?}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn port(&self, container_port: u16) -> u16 {
        published_port(&self.name, container_port)
    }

    fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        http(self.port(self.image.api_port), method, path, body)
    }

    fn health(&self) -> (u16, Value) {
        http(self.port(self.image.health_port), "GET", "/health", None)
    }

    fn exec(&self, script: &str) -> String {
        docker_ok(&["exec", &self.name, "sh", "-c", script])
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

fn wait_for(what: &str, deadline: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    eprintln!("timed out after {deadline:?} waiting for {what}");
    false
}

fn count(c: &Container) -> i64 {
    let (status, body) = c.api("GET", "/api/v1/vectors", None);
    assert_eq!(status, 200, "{body}");
    body["count"].as_i64().unwrap()
}

fn store(c: &Container, label: &str, embedding: [f64; 3]) {
    let (status, body) = c.api(
        "POST",
        "/api/v1/vectors",
        Some(json!({"label": label, "embedding": embedding})),
    );
    assert_eq!(status, 201, "{body}");
}

// ---------------------------------------------------------------- the scenarios

/// Cold start, round trip, restart, clean stop, warm start on the same volume.
fn lifecycle(image: Image) {
    if !engine() {
        return;
    }
    build_images();
    let c = Container::new(image, "life");

    let t0 = c.run_default();
    c.wait_healthy(Duration::from_secs(180));
    let cold = t0.elapsed();

    let (status, body) = c.api("GET", "/api/v1/health", None);
    assert_eq!(status, 200, "{body}");
    assert!(body["vector"].is_string(), "{body}");
    check_layout(&c);
    store(&c, "origin", [0.0, 0.0, 0.0]);
    store(&c, "near", [1.0, 1.0, 1.0]);
    store(&c, "far", [9.0, 9.0, 9.0]);
    let (status, body) = c.api(
        "POST",
        "/api/v1/vectors/search",
        Some(json!({"embedding": [8.0, 8.5, 9.0], "k": 2})),
    );
    assert_eq!(status, 200, "{body}");
    let labels: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["far", "near"], "nearest neighbours by <->: {body}");

    docker_ok(&["restart", "-t", "10", &c.name]);
    c.wait_healthy(Duration::from_secs(120));
    assert_eq!(count(&c), 3, "docker restart must keep every row");

    let t = Instant::now();
    docker_ok(&["stop", "-t", "10", &c.name]);
    let stop = t.elapsed();
    let code = c.wait_exited(Duration::from_secs(5));
    let logs = c.logs();
    assert_eq!(code, 0, "docker stop must end with exit code 0\n{logs}");
    assert!(
        stop < Duration::from_secs(10),
        "docker stop took {stop:?}, beyond the 10 s grace period"
    );
    assert!(
        logs.contains("database system is shut down"),
        "no clean postgres shutdown in:\n{logs}"
    );

    // Warm: a new container on the initialised volume.
    docker_ok(&["rm", &c.name]);
    let t0 = c.run_default();
    c.wait_healthy(Duration::from_secs(120));
    let warm = t0.elapsed();
    let logs = c.logs();
    assert!(logs.contains("skipping initdb"), "{logs}");
    assert!(
        !logs.contains("automatic recovery in progress") && !logs.contains("was interrupted"),
        "postgres had to recover: the previous stop was not clean\n{logs}"
    );
    assert_eq!(count(&c), 3);
    report(format!(
        "{}: cold start to healthy {cold:.1?}, warm {warm:.1?}, docker stop {stop:.1?}",
        image.tag()
    ));
}

/// The database and role of this image, nobody running as root but hivesup, and the
/// database listening on loopback only.
fn check_layout(c: &Container) {
    let sql = format!(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{}'",
        c.image.db
    );
    let owner = docker_ok(&["exec", "-u", "postgres", &c.name, "psql", "-XAtc", &sql]);
    assert_eq!(
        owner, c.image.role,
        "database {} must be owned by role {}",
        c.image.db, c.image.role
    );
    let (_, h) = c.health();
    for (program, user_id) in [("postgres", "999"), ("api", "10001")] {
        let pid = h["programs"][program]["pid"].as_i64().unwrap();
        let uid = c.exec(&format!("awk '/^Uid:/ {{print $2}}' /proc/{pid}/status"));
        assert_eq!(uid, user_id, "{program} must not run as root");
    }
    // 5432 = 0x1538; 0100007F is 127.0.0.1 in /proc/net/tcp's byte order.
    let listeners =
        c.exec("cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk '$4 == \"0A\" && $2 ~ /:1538$/ {print $2}'");
    assert!(
        !listeners.is_empty(),
        "postgres is not listening on TCP at all"
    );
    for l in listeners.lines() {
        assert!(
            l == "0100007F:1538" || l == "00000000000000000000000001000000:1538",
            "postgres listens beyond loopback: {l}"
        );
    }
}

/// `kill -9` of the postmaster, then of the API, then of the API's workers.
fn crashes(image: Image) {
    if !engine() {
        return;
    }
    build_images();
    let c = Container::new(image, "crash");
    c.run_default();
    c.wait_healthy(Duration::from_secs(180));
    for i in 0..5 {
        store(&c, &format!("row{i}"), [i as f64, 0.0, 0.0]);
    }

    for program in ["postgres", "api"] {
        let (status, before) = c.health();
        assert_eq!(status, 200, "{before}");
        let pid = before["programs"][program]["pid"]
            .as_i64()
            .unwrap_or_else(|| panic!("no pid for {program}: {before}"));
        let restarts = before["programs"][program]["restarts"]
            .as_i64()
            .unwrap_or(0);
        c.exec(&format!("kill -9 {pid}"));
        let saw_503 = wait_for(
            &format!("/health 503 after kill -9 {program}"),
            Duration::from_secs(10),
            || c.health().0 == 503,
        );
        if !saw_503 {
            c.fail(&format!(
                "/health never answered 503 after kill -9 of {program} (pid {pid})"
            ));
        }
        let back = wait_for(
            &format!("/health 200 after {program} restart"),
            Duration::from_secs(60),
            || c.health().0 == 200,
        );
        if !back {
            c.fail(&format!(
                "/health did not return to 200 after kill -9 of {program}: {}",
                c.health().1
            ));
        }
        let (_, after) = c.health();
        assert!(
            after["programs"][program]["restarts"].as_i64().unwrap_or(0) > restarts,
            "{after}"
        );
        c.wait_healthy(Duration::from_secs(60));
        assert_eq!(
            count(&c),
            5,
            "a committed row was lost after kill -9 of {program}"
        );
    }

    orphan_zombie_is_reaped(&c);

    // Kill the API's worker processes: uvicorn restarts them; nothing may stay a zombie.
    let (_, h) = c.health();
    let api = h["programs"]["api"]["pid"].as_i64().unwrap();
    let workers = c.exec(&format!("cat /proc/{api}/task/*/children"));
    assert!(
        !workers.trim().is_empty(),
        "uvicorn has no worker processes"
    );
    c.exec(&format!(
        "kill -9 {}",
        workers.split_whitespace().collect::<Vec<_>>().join(" ")
    ));
    let no_zombies = wait_for("no zombie processes", Duration::from_secs(15), || {
        zombies(&c).is_empty()
    });
    if !no_zombies {
        c.fail(&format!("zombies left: {:?}", zombies(&c)));
    }
    assert!(wait_for(
        "API healthy again",
        Duration::from_secs(30),
        || c.api("GET", "/api/v1/health", None).0 == 200
    ));
    assert_eq!(count(&c), 5);
}

/// An orphaned zombie inside the container goes to hivesup (PID 1), which must reap it.
/// The first half is the negative control: while its parent does not wait, the zombie
/// is there and `zombies()` sees it.
fn orphan_zombie_is_reaped(c: &Container) {
    docker_ok(&["exec", "-d", &c.name, "sh", "-c", "sleep 0 & exec sleep 3"]);
    if !wait_for(
        "a zombie under a non-waiting parent",
        Duration::from_secs(5),
        || !zombies(c).is_empty(),
    ) {
        c.fail("the zombie detector saw no zombie: this test could not fail");
    }
    if !wait_for(
        "the orphaned zombie reaped by PID 1",
        Duration::from_secs(15),
        || zombies(c).is_empty(),
    ) {
        c.fail(&format!(
            "zombies left after their parent exited: {:?}",
            zombies(c)
        ));
    }
}

/// `pid (comm) state ...` lines of /proc/*/stat in state Z.
fn zombies(c: &Container) -> Vec<String> {
    let stats = c.exec("cat /proc/[0-9]*/stat 2>/dev/null || true");
    stats
        .lines()
        .filter(|l| {
            l.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'))
        })
        .map(str::to_owned)
        .collect()
}

fn wrong_password_file(image: Image) {
    if !engine() {
        return;
    }
    build_images();
    let c = Container::new(image, "secret");
    c.run(&["POSTGRES_PASSWORD_FILE=/run/secrets/does-not-exist"]);
    let code = c.wait_exited(Duration::from_secs(60));
    let logs = c.logs();
    assert_ne!(code, 0, "{logs}");
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("/run/secrets/does-not-exist"))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "want one clear error line naming the path:\n{logs}"
    );
    assert!(
        lines[0].contains("failed to read POSTGRES_PASSWORD_FILE"),
        "{}",
        lines[0]
    );
    assert!(
        !logs.contains("initdb"),
        "nothing may be initialised with a broken secret:\n{logs}"
    );
}

#[test]
fn agent_lifecycle() {
    lifecycle(AGENT);
}
#[test]
fn genie_lifecycle() {
    lifecycle(GENIE);
}
#[test]
fn agent_recovers_from_kill_9() {
    crashes(AGENT);
}
#[test]
fn genie_recovers_from_kill_9() {
    crashes(GENIE);
}
#[test]
fn agent_wrong_password_file_is_one_clear_line() {
    wrong_password_file(AGENT);
}
#[test]
fn genie_wrong_password_file_is_one_clear_line() {
    wrong_password_file(GENIE);
}

// ---------------------------------------------------------------- static checks (no engine)

fn run_tool(program: &str, args: &[&str]) {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(program)
        .args(args)
        .current_dir(root)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}): .ci/host-deps.sh installs it (pip)")
        });
    assert!(
        out.status.success(),
        "{program} {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dockerfiles_pass_hadolint() {
    run_tool("hadolint", &["Dockerfile.agent", "Dockerfile.genie"]);
}

#[test]
fn kubernetes_manifests_match_the_schemas() {
    run_tool(
        "kubernetes-validate",
        &[
            "--strict",
            "deploy/kubernetes/agent.yaml",
            "deploy/kubernetes/genie.yaml",
        ],
    );
}

/// The two Dockerfiles must stay identical up to their last stage: that is what lets
/// one image's build reuse every layer of the other's.
#[test]
fn dockerfiles_share_everything_but_the_last_stage() {
    let root = env!("CARGO_MANIFEST_DIR");
    let stages = |f: &str| {
        let text = std::fs::read_to_string(format!("{root}/{f}")).unwrap();
        let body: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_owned)
            .collect();
        let last = body.iter().rposition(|l| l.starts_with("FROM ")).unwrap();
        body[..last].join("\n")
    };
    assert_eq!(stages("Dockerfile.agent"), stages("Dockerfile.genie"));
}
