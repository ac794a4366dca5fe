//! `hivesup postgres init|provision` against the host's PostgreSQL 15 (with pgvector
//! built from Debian's source package by .ci/host-deps.sh), no Docker needed. Each test
//! runs its own server in a temp directory as the `postgres` system account, on a free
//! port, and stops it when done.
//!
//! Needs root (to run init as the images do and switch to `postgres`), like the images.
// Tests are not PID 1: waiting on their own children with std is fine here.
#![allow(clippy::disallowed_methods)]

use std::{
    fs,
    os::unix::{
        fs::{MetadataExt, PermissionsExt},
        process::CommandExt,
    },
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::{Pid, User},
};
use tokio_postgres::{Client, NoTls};

const BINDIR: &str = "/usr/lib/postgresql/15/bin";
const PASSWORD: &str = "s3cret 'with' \"quotes\" \\ and spaces";

struct Cluster {
    base: PathBuf,
    port: u16,
    server: Option<Child>,
    env: Vec<(String, String)>,
}

/// Removes the bootstrap's variables (and their `_FILE` forms) inherited from the test
/// runner's environment, so only what a test sets reaches `hivesup postgres`.
fn without_bootstrap_env(cmd: &mut Command) {
    for k in [
        "PGDATA",
        "POSTGRES_USER",
        "POSTGRES_DB",
        "POSTGRES_PASSWORD",
        "POSTGRES_INITDB_ARGS",
    ] {
        cmd.env_remove(k);
        cmd.env_remove(format!("{k}_FILE"));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    fn new(name: &str) -> Cluster {
        static N: AtomicU32 = AtomicU32::new(0);
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "tests/pgboot.rs needs root, as the images do"
        );
        assert!(
            Path::new(BINDIR).join("initdb").exists(),
            "host PostgreSQL 15 missing: run .ci/host-deps.sh"
        );
        let base = std::env::temp_dir().join(format!(
            "hivesup-pgboot-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(base.join("initdb.d")).unwrap();
        fs::set_permissions(&base, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(base.join("password"), format!("{PASSWORD}\n")).unwrap();
        fs::set_permissions(base.join("password"), fs::Permissions::from_mode(0o600)).unwrap();
        let env = vec![
            ("PGDATA".into(), base.join("data").display().to_string()),
            ("POSTGRES_USER".into(), "agent".into()),
            ("POSTGRES_DB".into(), "hive_agent".into()),
            (
                "POSTGRES_PASSWORD_FILE".into(),
                base.join("password").display().to_string(),
            ),
        ];
        Cluster {
            base,
            port: free_port(),
            server: None,
            env,
        }
    }

    fn pgdata(&self) -> PathBuf {
        self.base.join("data")
    }

    fn sock(&self) -> PathBuf {
        self.base.join("sock")
    }

    fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.env.push((key.into(), v.into()));
        }
    }

    fn hivesup(&self, step: &str) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hivesup"));
        cmd.args(["postgres", step, "--bindir", BINDIR, "--user", "postgres"])
            .arg("--socket-dir")
            .arg(self.sock());
        if step == "provision" {
            cmd.args([
                "--port",
                &self.port.to_string(),
                "--connect-timeout",
                "10s",
                "--initdb-dir",
            ])
            .arg(self.base.join("initdb.d"));
        }
        cmd.env_remove("PGPORT").env_remove("PGPORT_FILE");
        without_bootstrap_env(&mut cmd);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let out = cmd.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !text.contains(PASSWORD),
            "password leaked into `hivesup postgres {step}` output:\n{text}"
        );
        out
    }

    fn ok(&self, step: &str) -> String {
        let out = self.hivesup(step);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "hivesup postgres {step} failed ({}):\n{text}",
            out.status
        );
        text
    }

    fn start_server(&mut self) {
        let pg = User::from_name("postgres")
            .unwrap()
            .expect("the postgres system user");
        let log = fs::File::create(self.base.join("server.log")).unwrap();
        let child = Command::new(Path::new(BINDIR).join("postgres"))
            .arg("-D")
            .arg(self.pgdata())
            .arg("-k")
            .arg(self.sock())
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "log_statement=all",
            ])
            .current_dir("/")
            .uid(pg.uid.as_raw())
            .gid(pg.gid.as_raw())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.server = Some(child);
        let socket = self.sock().join(format!(".s.PGSQL.{}", self.port));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() {
            if let Some(status) = self.server.as_mut().unwrap().try_wait().unwrap() {
                panic!("postgres exited with {status}:\n{}", self.server_log());
            }
            assert!(
                Instant::now() < deadline,
                "postgres not listening after 30s:\n{}",
                self.server_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop_server(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(15);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn server_log(&self) -> String {
        fs::read_to_string(self.base.join("server.log")).unwrap_or_default()
    }

    /// As root through the socket: the peer map `init` adds lets root in as postgres.
    async fn admin(&self, db: &str) -> Client {
        let mut c = tokio_postgres::Config::new();
        c.host_path(self.sock())
            .port(self.port)
            .user("postgres")
            .dbname(db);
        let (client, conn) = c
            .connect(NoTls)
            .await
            .expect("connect as root -> postgres via peer map");
        tokio::spawn(conn);
        client
    }

    async fn tcp_login(
        &self,
        user: &str,
        password: &str,
        db: &str,
    ) -> Result<Client, tokio_postgres::Error> {
        let mut c = tokio_postgres::Config::new();
        c.host("127.0.0.1")
            .port(self.port)
            .user(user)
            .password(password)
            .dbname(db);
        let (client, conn) = c.connect(NoTls).await?;
        tokio::spawn(conn);
        Ok(client)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_server();
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.base);
        } else {
            eprintln!(
                "kept {} for inspection; server log:\n{}",
                self.base.display(),
                self.server_log()
            );
        }
    }
}

async fn seeds(c: &Client) -> Vec<i32> {
    c.query("SELECT n FROM seeds ORDER BY ord", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn fresh_data_dir_is_initialised_provisioned_and_second_run_changes_nothing() {
    let mut cl = Cluster::new("fresh");
    let d = cl.base.join("initdb.d");
    fs::write(
        d.join("10-schema.sql"),
        "CREATE TABLE seeds (ord serial, n int);\nINSERT INTO seeds (n) VALUES (1);\n",
    )
    .unwrap();
    fs::write(
        d.join("20-shell.sh"),
        format!("set -e\n[ \"$(id -un)\" = postgres ]\n{BINDIR}/psql -v ON_ERROR_STOP=1 -qc 'INSERT INTO seeds (n) VALUES (2)'\n"),
    )
    .unwrap();
    fs::write(d.join("30-last.sql"), "INSERT INTO seeds (n) VALUES (3);").unwrap();
    fs::write(d.join("README"), "not a script").unwrap();

    let init = cl.ok("init");
    assert!(init.contains("initialised a new data directory"), "{init}");
    let meta = fs::metadata(cl.pgdata()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    assert_eq!(
        nix::unistd::Uid::from_raw(std::os::unix::fs::MetadataExt::uid(&meta)),
        User::from_name("postgres").unwrap().unwrap().uid
    );
    assert!(cl.pgdata().join("hivesup-first-start").exists());
    let hba = fs::read_to_string(cl.pgdata().join("pg_hba.conf")).unwrap();
    assert!(
        hba.lines()
            .any(|l| l.starts_with("host") && l.ends_with("scram-sha-256")),
        "{hba}"
    );

    cl.start_server();
    let first = cl.ok("provision");
    for want in [
        "created role",
        "created database",
        "created extension",
        "first start complete",
    ] {
        assert!(first.contains(want), "missing {want:?} in:\n{first}");
    }
    assert!(
        !cl.pgdata().join("hivesup-first-start").exists(),
        "marker must go after a complete first start"
    );

    let admin = cl.admin("postgres").await;
    let owner: String = admin
        .query_one(
            "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = 'hive_agent'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, "agent");
    let row = admin
        .query_one(
            "SELECT rolcanlogin, rolsuper, rolpassword FROM pg_authid WHERE rolname = 'agent'",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0) && !row.get::<_, bool>(1));
    let verifier: String = row.get(2);
    assert!(verifier.starts_with("SCRAM-SHA-256$"), "{verifier}");

    // The application logs in over TCP with its password (scram), and only with it.
    let app = cl
        .tcp_login("agent", PASSWORD, "hive_agent")
        .await
        .expect("scram login with the right password");
    assert!(cl.tcp_login("agent", "wrong", "hive_agent").await.is_err());
    // pgvector works for the owner: the nearest neighbour by `<->`.
    app.batch_execute(
        "CREATE TABLE v (id int, e vector(3)); INSERT INTO v VALUES (1, '[1,1,1]'), (2, '[5,5,5]')",
    )
    .await
    .unwrap();
    let nearest: i32 = app
        .query_one("SELECT id FROM v ORDER BY e <-> '[4,4,4]' LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(nearest, 2);
    assert_eq!(
        seeds(&app).await,
        vec![1, 2, 3],
        "initdb.d scripts ran once, in name order"
    );

    // Second start: nothing changes, no script runs again.
    let again = cl.ok("init");
    assert!(again.contains("skipping initdb"), "{again}");
    let second = cl.ok("provision");
    for unwanted in ["created", "set role password", "running", "first start"] {
        assert!(
            !second.contains(unwanted),
            "second provision did something ({unwanted:?}):\n{second}"
        );
    }
    let after: String = admin
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'agent'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        after, verifier,
        "the password verifier must not be rewritten"
    );
    assert_eq!(seeds(&app).await, vec![1, 2, 3]);

    // A changed POSTGRES_PASSWORD is applied (and only then is anything rewritten).
    cl.set_env("POSTGRES_PASSWORD_FILE", None);
    cl.set_env("POSTGRES_PASSWORD", Some("rotated"));
    let third = cl.ok("provision");
    assert!(third.contains("set role password"), "{third}");
    cl.tcp_login("agent", "rotated", "hive_agent")
        .await
        .expect("login with the new password");

    cl.stop_server();
    let log = cl.server_log();
    assert!(
        !log.contains(PASSWORD) && !log.contains("rotated'"),
        "a password reached the server log"
    );
}

#[tokio::test]
async fn superuser_as_postgres_user_gets_its_password_through_pwfile() {
    let mut cl = Cluster::new("superuser");
    cl.set_env("POSTGRES_USER", Some("postgres"));
    cl.set_env("POSTGRES_DB", None);
    cl.set_env(
        "POSTGRES_INITDB_ARGS",
        Some("--data-checksums  --wal-segsize=32"),
    );
    cl.ok("init");
    cl.start_server();
    cl.ok("provision");
    let su = cl
        .tcp_login("postgres", PASSWORD, "postgres")
        .await
        .expect("superuser scram login with POSTGRES_PASSWORD");
    for (setting, want) in [("data_checksums", "on"), ("wal_segment_size", "32MB")] {
        let got: String = su
            .query_one(&format!("SHOW {setting}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            got, want,
            "POSTGRES_INITDB_ARGS must reach initdb ({setting})"
        );
    }
    let leftovers: Vec<_> = [std::env::temp_dir(), cl.sock()]
        .iter()
        .flat_map(|d| fs::read_dir(d).unwrap())
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("hivesup-pwfile")
        })
        .collect();
    assert!(
        leftovers.is_empty(),
        "password file left behind: {leftovers:?}"
    );
}

#[tokio::test]
async fn failing_initdb_script_fails_this_start_and_every_later_one() {
    let mut cl = Cluster::new("failing");
    let d = cl.base.join("initdb.d");
    fs::write(
        d.join("10-ok.sql"),
        "CREATE TABLE seeds (ord serial, n int);",
    )
    .unwrap();
    fs::write(d.join("20-broken.sql"), "CREATE TABLE broken (;").unwrap();
    fs::write(d.join("30-never.sql"), "INSERT INTO seeds (n) VALUES (3);").unwrap();
    cl.ok("init");
    cl.start_server();

    let out = cl.hivesup("provision");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("hivesup: "))
        .expect("an error line");
    assert!(
        line.contains("failed to run initialisation script")
            && line.contains("20-broken.sql")
            && line.contains("syntax error"),
        "{line}"
    );
    assert!(
        cl.pgdata().join("hivesup-first-start").exists(),
        "the marker must stay"
    );

    // Next start: both steps refuse, loudly, instead of looking fine.
    for step in ["provision", "init"] {
        let out = cl.hivesup(step);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(1), "{step}: {err}");
        assert!(err.contains("half-initialised"), "{step}: {err}");
    }
    let admin = cl.admin("hive_agent").await;
    let n: i64 = admin
        .query_one("SELECT count(*) FROM seeds", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "30-never.sql must not run after 20-broken.sql failed");
}

fn error_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("hivesup: "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn data_dir_of_another_major_version_is_one_clear_error() {
    let cl = Cluster::new("major");
    fs::create_dir_all(cl.pgdata().join("base")).unwrap();
    fs::write(cl.pgdata().join("PG_VERSION"), "14\n").unwrap();
    // Owned by another account, as a volume of the old server is: a refused directory
    // keeps its owner and mode, so the old server can still start on it to be dumped.
    std::os::unix::fs::chown(cl.pgdata(), Some(65534), Some(65534)).unwrap();
    fs::set_permissions(cl.pgdata(), fs::Permissions::from_mode(0o750)).unwrap();
    let out = cl.hivesup("init");
    assert_eq!(out.status.code(), Some(1));
    let lines = error_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("PostgreSQL 15 on") && lines[0].contains("PostgreSQL 14 data directory"),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains("make agent-backup FROM=")
            && lines[0].contains("make agent-restore FILE="),
        "the refusal names the documented upgrade commands: {}",
        lines[0]
    );
    assert!(
        cl.pgdata().join("base").exists(),
        "the data directory must be left alone"
    );
    let meta = fs::metadata(cl.pgdata()).unwrap();
    assert_eq!(
        (meta.uid(), meta.permissions().mode() & 0o7777),
        (65534, 0o750),
        "a refused data directory must keep its owner and mode"
    );
}

#[test]
fn non_empty_dir_without_pg_version_is_refused() {
    let cl = Cluster::new("foreign");
    fs::create_dir_all(cl.pgdata()).unwrap();
    fs::write(cl.pgdata().join("notes.txt"), "mine").unwrap();
    let out = cl.hivesup("init");
    assert_eq!(out.status.code(), Some(1));
    assert!(error_lines(&out)[0].contains("not a PostgreSQL data directory"));
    assert!(cl.pgdata().join("notes.txt").exists());
}

#[test]
fn missing_or_empty_password_file_is_one_line_naming_variable_and_path() {
    let mut cl = Cluster::new("secret");
    let missing = cl.base.join("no-such-secret");
    cl.set_env("POSTGRES_PASSWORD_FILE", Some(missing.to_str().unwrap()));
    let out = cl.hivesup("init");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        error_lines(&out),
        vec![format!(
            "hivesup: failed to read POSTGRES_PASSWORD_FILE from {}: No such file or directory (os error 2)",
            missing.display()
        )]
    );
    assert!(
        !cl.pgdata().exists(),
        "nothing may be created before the environment is valid"
    );

    cl.set_env("POSTGRES_PASSWORD_FILE", None);
    let out = cl.hivesup("init");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        error_lines(&out),
        vec![
            "hivesup: failed to resolve POSTGRES_PASSWORD: it is not set (set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE)"
        ]
    );
    assert!(
        !cl.pgdata().join("PG_VERSION").exists(),
        "no initdb without a password"
    );

    let empty = cl.base.join("empty-secret");
    fs::write(&empty, "\n").unwrap();
    cl.set_env("POSTGRES_PASSWORD_FILE", Some(empty.to_str().unwrap()));
    let out = cl.hivesup("init");
    assert_eq!(
        error_lines(&out),
        vec![format!(
            "hivesup: failed to read POSTGRES_PASSWORD_FILE from {}: the file is empty",
            empty.display()
        )]
    );
}

/// conf/agent.toml itself, pointed at the host's PostgreSQL 15 and this test's temp
/// directory, run by `hivesup` (supervise mode): init, postgres, provision come up in
/// priority order and /health turns 200; SIGTERM stops everything cleanly; a second run
/// on the same data directory skips initdb. The API program is left out (the host has
/// no FastAPI); tests/images.rs covers it.
#[test]
fn agent_conf_brings_up_postgres_on_the_host() {
    let cl = Cluster::new("conf");
    let bin = env!("CARGO_BIN_EXE_hivesup");
    let root = env!("CARGO_MANIFEST_DIR");
    let (pgdata, sock) = (
        cl.pgdata().display().to_string(),
        cl.sock().display().to_string(),
    );

    let pgconf = fs::read_to_string(format!("{root}/images/postgres/postgresql.conf"))
        .unwrap()
        .replace("'/var/run/postgresql'", &format!("'{sock}'"))
        .replace("include_dir = '/etc/postgresql/conf.d'", "")
        .replace("port = 5432", &format!("port = {}", cl.port));
    let pgconf_path = cl.base.join("postgresql.conf");
    fs::write(&pgconf_path, pgconf).unwrap();

    let conf = fs::read_to_string(format!("{root}/conf/agent.toml")).unwrap();
    let conf = conf[..conf.find("[programs.api]").expect("conf/agent.toml has an api program")]
        .replace("0.0.0.0:38887", "127.0.0.1:0")
        .replace(
            r#"["hivesup", "postgres", "init"]"#,
            &format!(r#"["{bin}", "postgres", "init", "--bindir", "{BINDIR}", "--socket-dir", "{sock}"]"#),
        )
        .replace(
            r#"["hivesup", "postgres", "provision"]"#,
            &format!(r#"["{bin}", "postgres", "provision", "--bindir", "{BINDIR}", "--socket-dir", "{sock}", "--initdb-dir", "{}"]"#, cl.base.join("initdb.d").display()),
        )
        .replace("/usr/lib/postgresql/17/bin", BINDIR)
        .replace("/etc/postgresql/postgresql.conf", &pgconf_path.display().to_string())
        .replace("/var/lib/postgresql/data", &pgdata)
        .replace("host=/var/run/postgresql", &format!("host={sock} port={}", cl.port));
    assert!(
        !conf.contains("/var/run/postgresql") && conf.contains(BINDIR),
        "substitution failed:\n{conf}"
    );
    let conf_path = cl.base.join("hivesup.toml");
    fs::write(&conf_path, &conf).unwrap();
    fs::write(
        cl.base.join("initdb.d/10-seed.sql"),
        "CREATE TABLE seeds (ord serial, n int); INSERT INTO seeds (n) VALUES (7);",
    )
    .unwrap();

    for round in ["first", "second"] {
        let mut sup = Supervised::start(bin, &conf_path, &cl);
        let addr = sup
            .wait_for_line("listening on ", Duration::from_secs(10))
            .trim()
            .to_owned();
        let addr = addr.rsplit("listening on ").next().unwrap().to_owned();
        let deadline = Instant::now() + Duration::from_secs(90);
        while http_status(&addr, "/health") != Some(200) {
            if Instant::now() > deadline || sup.exited().is_some() {
                sup.fail(&format!("{round} run: /health not 200 within 90s"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let app = cl
                .tcp_login("agent", PASSWORD, "hive_agent")
                .await
                .expect("the role exists with its password");
            assert_eq!(seeds(&app).await, vec![7]);
            let ext: i64 = app
                .query_one(
                    "SELECT count(*) FROM pg_extension WHERE extname = 'vector'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(ext, 1);
        });
        let code = sup.stop(Duration::from_secs(20));
        let out = sup.output();
        assert_eq!(
            code,
            Some(0),
            "{round} run: hivesup must exit 0 after SIGTERM\n{out}"
        );
        assert!(
            out.contains("database system is shut down"),
            "{round} run: no clean shutdown\n{out}"
        );
        if round == "second" {
            assert!(
                out.contains("skipping initdb") && !out.contains("automatic recovery"),
                "{out}"
            );
        }
        assert!(
            !out.contains(PASSWORD),
            "password leaked into hivesup's output"
        );
    }
}

/// `hivesup --config FILE` with its output collected by reader threads.
struct Supervised {
    child: Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Supervised {
    fn start(bin: &str, conf: &Path, cl: &Cluster) -> Supervised {
        let mut cmd = Command::new(bin);
        cmd.arg("--config")
            .arg(conf)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("PGPORT", cl.port.to_string());
        without_bootstrap_env(&mut cmd);
        cmd.envs(cl.env.iter().map(|(k, v)| (k, v)));
        let mut child = cmd.spawn().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let out: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().unwrap());
        for stream in [out, err] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stream)
                    .lines()
                    .map_while(Result::ok)
                {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Supervised { child, lines }
    }

    fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    fn wait_for_line(&mut self, needle: &str, deadline: Duration) -> String {
        let end = Instant::now() + deadline;
        loop {
            if let Some(l) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return l.clone();
            }
            if Instant::now() > end || self.exited().is_some() {
                self.fail(&format!("no line containing {needle:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self, deadline: Duration) -> Option<i32> {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let end = Instant::now() + deadline;
        loop {
            if let Some(status) = self.exited() {
                // Let the reader threads drain the pipes.
                std::thread::sleep(Duration::from_millis(100));
                return status.code();
            }
            if Instant::now() > end {
                self.fail("hivesup did not exit after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn fail(&mut self, what: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!("{what}\n--- hivesup output ---\n{}", self.output());
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
            let end = Instant::now() + Duration::from_secs(15);
            while self.exited().is_none() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn http_status(addr: &str, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_whitespace().nth(1)?.parse().ok()
}
