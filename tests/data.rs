//! Data operations of the unified images (issue 7) in the real Docker engine, through the
//! commands README "Data" shows: `make agent-backup` and `make agent-restore` (with
//! CONTAINER, BACKUP_DIR, FILE, FROM, NETWORK, IMAGE pointing them at the test's own
//! containers), `docker run` on an existing volume, and the one `psql` step of a
//! same-major migration.
//!
//! - a backup taken while a writer inserts through the API, restored into a fresh
//!   container: every row acknowledged before the backup started is there, the 384-dim
//!   vectors, their hnsw and ivfflat indexes and the nearest-neighbour answers are the same;
//! - a missing, empty, non-archive, TOC-truncated and data-truncated file: refused, or
//!   failed part-way, and the running database is unchanged;
//! - backup and restore in the read-only, non-root mode, and a restore refused up front
//!   where hivesup's control socket is missing;
//! - a PostgreSQL 15 data directory made by the host's Debian 12 postgresql-15: refused in
//!   one line, untouched, then dumped from the PG15 server and restored;
//! - a PostgreSQL 17 volume initialised the way the official image does it (superuser =
//!   POSTGRES_USER), backed up both ways, then reused directly; as the Alpine variant's
//!   (uid 70) it is refused until the documented chown.
//!
//! Containers, volumes and host clusters get unique names and are removed on drop. The
//! tests take one lock: each starts two containers, and the machine has two cores.
// Tests are not PID 1: waiting on their own children (docker, make, pg_ctl) with std is fine.
#![allow(clippy::disallowed_methods)]

mod common;

use std::{
    collections::BTreeSet,
    io::Write,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{
        Arc, Mutex, MutexGuard, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use common::engine::{api as http, published_port};
use common::{TestDir, poll};
use serde_json::{Value, json};

const IMAGE: &str = "hive-agent:data-test";
const API_PORT: u16 = 38886;
const HEALTH_PORT: u16 = 38887;
const PASSWORD: &str = "data-test-pw-7c1e";
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const PG15: &str = "/usr/lib/postgresql/15/bin";

// ---------------------------------------------------------------- plumbing

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run(cmd: &mut Command, stdin: Option<&str>) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if let Some(input) = stdin {
        let mut w = child.stdin.take().unwrap();
        let input = input.to_owned();
        // A writer thread: the child may fill its stdout before reading all of stdin.
        std::thread::spawn(move || {
            let _ = w.write_all(input.as_bytes());
        });
    }
    child.wait_with_output().unwrap()
}

fn docker(args: &[&str]) -> Output {
    run(Command::new("docker").args(args), None)
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {} failed:\n{}",
        args.join(" "),
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `make -C ROOT TARGET VAR=...`, exactly as README "Data" shows it, plus the variables
/// that point it at this test's containers. Returns (exit code, stdout + stderr).
fn make(target: &str, vars: &[(&str, &str)], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new("make");
    cmd.args(["-s", "-C", ROOT, target]);
    for (k, v) in vars {
        cmd.arg(format!("{k}={v}"));
    }
    cmd.envs(env.iter().copied());
    let out = run(&mut cmd, None);
    let code = out.status.code().unwrap_or(-1);
    let t = text(&out);
    eprintln!("--- make {target} {vars:?} -> {code}\n{t}");
    (code, t)
}

fn make_ok(target: &str, vars: &[(&str, &str)], env: &[(&str, &str)]) -> String {
    let (code, out) = make(target, vars, env);
    assert_eq!(code, 0, "make {target} failed:\n{out}");
    out
}

/// One test at a time (see the module doc); a failed test must not block the others.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// These tests are about the real engine: without one they fail, saying so.
fn engine() {
    let out = docker(&["version"]);
    assert!(
        out.status.success(),
        "no Docker engine answers `docker version`: {}",
        text(&out)
    );
}

/// Builds this worktree's agent image once per run under a tag of its own (the base
/// image first, made locally when the engine cannot pull; cached layers are reused).
fn build_image() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let result = BUILT.get_or_init(|| {
        let base = run(
            Command::new("bash").arg(format!("{ROOT}/images/base-image.sh")),
            None,
        );
        if !base.status.success() {
            return Err(format!("images/base-image.sh failed:\n{}", text(&base)));
        }
        let out = docker(&[
            "build",
            "-q",
            "-f",
            &format!("{ROOT}/Dockerfile.agent"),
            "-t",
            IMAGE,
            ROOT,
        ]);
        if !out.status.success() {
            return Err(format!("docker build failed:\n{}", text(&out)));
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

fn setup() -> MutexGuard<'static, ()> {
    let guard = serial();
    engine();
    build_image();
    guard
}

fn unique(what: &str) -> String {
    use std::sync::atomic::AtomicU32;
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "hivesup-data-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A named volume, removed on drop (after the containers using it: declare it first).
struct Volume(String);

impl Volume {
    fn new(what: &str) -> Volume {
        let v = Volume(unique(what));
        docker_ok(&["volume", "create", &v.0]);
        v
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = docker(&["volume", "rm", "-f", &self.0]);
    }
}

/// A container of the agent image on `mount` (a volume name or a host path), with
/// ephemeral host ports for the API and hivesup. Removed on drop.
struct Container {
    name: String,
    api: OnceLock<u16>,
}

impl Container {
    fn run(what: &str, mount: &str) -> Container {
        Container::run_with(what, mount, &[])
    }

    /// `extra`: more `docker run` flags (`--user`, `--read-only` ...).
    fn run_with(what: &str, mount: &str, extra: &[&str]) -> Container {
        let c = Container {
            name: unique(what),
            api: OnceLock::new(),
        };
        let volume = format!("{mount}:/var/lib/postgresql/data");
        let api = format!("127.0.0.1::{API_PORT}");
        let health = format!("127.0.0.1::{HEALTH_PORT}");
        let password = format!("POSTGRES_PASSWORD={PASSWORD}");
        let mut args = vec!["run", "-d", "--name", &c.name, "-v", &volume];
        args.extend_from_slice(&["-p", &api, "-p", &health, "-e", &password]);
        args.extend_from_slice(extra);
        args.push(IMAGE);
        docker_ok(&args);
        c
    }

    fn logs(&self) -> String {
        text(&docker(&["logs", &self.name]))
    }

    fn fail(&self, what: &str) -> ! {
        panic!("{what}\n--- docker logs {} ---\n{}", self.name, self.logs());
    }

    fn state(&self, format: &str) -> String {
        String::from_utf8_lossy(&docker(&["inspect", "-f", format, &self.name]).stdout)
            .trim()
            .to_owned()
    }

    fn wait_healthy(&self) {
        let end = Instant::now() + Duration::from_secs(180);
        loop {
            match self
                .state("{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}")
                .as_str()
            {
                "running healthy" => return,
                s if s.starts_with("exited") || s.starts_with("dead") => {
                    self.fail(&format!("container {s}"))
                }
                s if Instant::now() > end => self.fail(&format!("not healthy after 180 s: {s}")),
                _ => std::thread::sleep(Duration::from_millis(250)),
            }
        }
    }

    fn wait_exited(&self) -> i32 {
        let end = Instant::now() + Duration::from_secs(120);
        loop {
            let s = self.state("{{.State.Status}} {{.State.ExitCode}}");
            if let Some(code) = s.strip_prefix("exited ") {
                return code.parse().unwrap();
            }
            if Instant::now() > end {
                self.fail(&format!("still {s} after 120 s"));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn port(&self, container_port: u16) -> u16 {
        published_port(&self.name, container_port)
    }

    fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let port = *self.api.get_or_init(|| self.port(API_PORT));
        http(port, method, path, body)
    }

    fn health(&self) -> u16 {
        http(self.port(HEALTH_PORT), "GET", "/health", None).0
    }

    /// psql as the superuser (peer auth as the postgres account), SQL on stdin.
    fn psql(&self, db: &str, sql: &str) -> String {
        psql_in(&self.name, &["-u", "postgres"], "postgres", db, sql)
    }

    fn databases(&self) -> Vec<String> {
        self.psql(
            "postgres",
            "SELECT datname FROM pg_database ORDER BY datname",
        )
        .lines()
        .map(str::to_owned)
        .collect()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", "-v", &self.name]);
    }
}

/// `docker exec -i [exec_args] C psql -U user -d db` with ON_ERROR_STOP, unaligned.
fn psql_in(container: &str, exec_args: &[&str], user: &str, db: &str, sql: &str) -> String {
    let mut args = vec!["exec", "-i"];
    args.extend_from_slice(exec_args);
    args.extend_from_slice(&[
        container,
        "psql",
        "-X",
        "-q",
        "-At",
        "-v",
        "ON_ERROR_STOP=1",
        "-U",
        user,
        "-d",
        db,
    ]);
    let out = run(Command::new("docker").args(&args), Some(sql));
    assert!(
        out.status.success(),
        "psql in {container} failed:\n{sql}\n{}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

// ---------------------------------------------------------------- the data and its fingerprint

/// 1000 documents with 384-dim vectors, an hnsw and an ivfflat index, and the API's
/// `items` table with a few rows. Run as (or SET ROLE to) the application role.
const FIXTURE: &str = "
SELECT setseed(0.42);
CREATE TABLE docs (id bigint PRIMARY KEY, body text NOT NULL, embedding vector(384) NOT NULL);
INSERT INTO docs
SELECT i, 'doc ' || i, (SELECT array_agg(random()::real) FROM generate_series(1, 384) WHERE i > 0)::vector
  FROM generate_series(1, 1000) i;
CREATE INDEX docs_hnsw ON docs USING hnsw (embedding vector_l2_ops);
CREATE INDEX docs_ivf ON docs USING ivfflat (embedding vector_l2_ops) WITH (lists = 10);
COMMENT ON TABLE docs IS 'kept by backups';
CREATE TABLE IF NOT EXISTS items (id bigserial PRIMARY KEY, label text NOT NULL, embedding vector(3) NOT NULL);
INSERT INTO items (label, embedding) VALUES ('origin', '[0,0,0]'), ('near', '[1,1,1]'), ('far', '[9,9,9]');
";

/// Everything a restore must carry over, as comparable lines: rows and vectors (md5),
/// the column type, indexes, owners, the extension, and the 10 nearest neighbours of three
/// documents three ways: exact (sequential scan), through hnsw only and through ivfflat
/// only. With 1000 rows, `hnsw.ef_search = 1000` and `ivfflat.probes = lists` make both
/// index scans exhaustive, so their answers are exact too and comparable across builds
/// of the index (hnsw levels and ivfflat centres are random).
fn fingerprint(sql: &dyn Fn(&str) -> String) -> Vec<String> {
    let mut lines: Vec<String> = sql("
SELECT 'rows', count(*) FROM docs;
SELECT 'docs', md5(string_agg(id || ':' || body || ':' || embedding::text, ',' ORDER BY id)) FROM docs;
SELECT 'distinct', count(DISTINCT embedding::text) FROM docs;
SELECT 'type', format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'docs'::regclass AND attname = 'embedding';
SELECT 'index', c.relname, am.amname, i.indisvalid, pg_get_indexdef(i.indexrelid)
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
 WHERE i.indrelid = 'docs'::regclass ORDER BY c.relname;
SELECT 'comment', obj_description('docs'::regclass);
SELECT 'owners', string_agg(DISTINCT pg_get_userbyid(relowner), ',') FROM pg_class WHERE relnamespace = 'public'::regnamespace;
SELECT 'extension', extname FROM pg_extension WHERE extname = 'vector';
SELECT 'items', count(*), md5(string_agg(id || ':' || label || ':' || embedding::text, ',' ORDER BY id)) FROM items;
BEGIN;
SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off;
SELECT 'knn', q, string_agg(id::text, ',' ORDER BY d, id)
  FROM unnest(ARRAY[7, 500, 993]) q,
       LATERAL (SELECT id, embedding <-> (SELECT embedding FROM docs WHERE id = q) d FROM docs ORDER BY d LIMIT 10) n
 GROUP BY q ORDER BY q;
ROLLBACK;
")
    .lines()
    .map(str::to_owned)
    .collect();
    for (index, other) in [("docs_hnsw", "docs_ivf"), ("docs_ivf", "docs_hnsw")] {
        let out = sql(&format!(
            "BEGIN;
DROP INDEX {other};
SET LOCAL enable_seqscan = off; SET LOCAL hnsw.ef_search = 1000; SET LOCAL ivfflat.probes = 10;
EXPLAIN (COSTS OFF) SELECT id FROM docs ORDER BY embedding <-> (SELECT embedding FROM docs WHERE id = 7) LIMIT 10;
SELECT 'knn', q, string_agg(id::text, ',' ORDER BY d, id)
  FROM unnest(ARRAY[7, 500, 993]) q,
       LATERAL (SELECT id, embedding <-> (SELECT embedding FROM docs WHERE id = q) d FROM docs ORDER BY d LIMIT 10) n
 GROUP BY q ORDER BY q;
ROLLBACK;"
        ));
        assert!(
            out.contains(&format!("Index Scan using {index} on docs")),
            "the kNN query must use {index}:\n{out}"
        );
        // The index answer is the exact answer.
        for l in out.lines().filter(|l| l.starts_with("knn|")) {
            assert!(
                lines.iter().any(|e| e == l),
                "{index} answers {l}, the exact answers are {:?}",
                lines
                    .iter()
                    .filter(|e| e.starts_with("knn|"))
                    .collect::<Vec<_>>()
            );
        }
        lines.push(format!("{index} used and exact"));
    }
    let expect = |prefix: &str| {
        assert!(
            lines.iter().any(|l| l.starts_with(prefix)),
            "no {prefix} in {lines:?}"
        )
    };
    expect("rows|1000");
    expect("distinct|1000");
    expect("type|vector(384)");
    expect("extension|vector");
    lines
}

fn agent_sql(c: &Container) -> impl Fn(&str) -> String + '_ {
    |sql: &str| c.psql("hive_agent", sql)
}

fn backups(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// The one `NAME-TIMESTAMP.dump` (and its `.roles.sql`) `make agent-backup` wrote.
fn the_backup(dir: &Path, name: &str) -> PathBuf {
    let files = backups(dir);
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        files.len(),
        2,
        "one dump and one roles file, nothing partial: {names:?}"
    );
    let dump = files
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "dump"))
        .unwrap_or_else(|| panic!("no .dump in {names:?}"))
        .clone();
    let stem = dump.file_stem().unwrap().to_string_lossy().into_owned();
    assert!(
        stem.starts_with(&format!("{name}-")) && stem.ends_with('Z'),
        "{stem}: want {name}-TIMESTAMP"
    );
    let roles = dir.join(format!("{stem}.roles.sql"));
    let roles_text = std::fs::read_to_string(&roles).expect("NAME-TIMESTAMP.roles.sql");
    assert!(
        roles_text.contains("CREATE ROLE agent"),
        "{roles:?}:\n{roles_text}"
    );
    for f in [&dump, &roles] {
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f:?} holds data and password hashes");
    }
    assert_eq!(&std::fs::read(&dump).unwrap()[..5], b"PGDMP");
    dump
}

// ---------------------------------------------------------------- backup and restore

/// Backup while the API takes writes, restore into a fresh container.
#[test]
fn backup_under_writes_restores_every_acknowledged_row_in_a_fresh_container() {
    let _g = setup();
    let dir = TestDir::new();
    let src_vol = Volume::new("src");
    let src = Container::run("src", &src_vol.0);
    src.wait_healthy();
    src.psql("hive_agent", &format!("SET ROLE agent;\n{FIXTURE}"));
    let before = fingerprint(&agent_sql(&src));

    // The writer: rows through the API, each id recorded once the API acknowledged it.
    let acked = Arc::new(Mutex::new(Vec::<i64>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let port = src.port(API_PORT);
    let writer = {
        let (acked, stop) = (acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let (status, body) = http(
                    port,
                    "POST",
                    "/api/v1/vectors",
                    Some(json!({"label": format!("w{n}"), "embedding": [n as f64, 0.5, -1.0]})),
                );
                assert_eq!(status, 201, "the API must keep taking writes: {body}");
                acked.lock().unwrap().push(body["id"].as_i64().unwrap());
            }
        })
    };
    poll("20 acknowledged writes", Duration::from_secs(60), || {
        (acked.lock().unwrap().len() >= 20).then_some(())
    });
    let acked_before: Vec<i64> = acked.lock().unwrap().clone();
    let out = make_ok(
        "agent-backup",
        &[
            ("CONTAINER", &src.name),
            ("BACKUP_DIR", dir.path().to_str().unwrap()),
        ],
        &[],
    );
    let during = acked.lock().unwrap().len() - acked_before.len();
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("the writer failed");
    assert!(during > 0, "no write was acknowledged during the backup");
    assert!(
        out.contains("wrote ") && out.contains("iB") && out.contains(" s"),
        "the backup prints its size and duration:\n{out}"
    );
    let dump = the_backup(dir.path(), &src.name);

    let dst_vol = Volume::new("dst");
    let dst = Container::run("dst", &dst_vol.0);
    dst.wait_healthy();
    let out = make_ok(
        "agent-restore",
        &[("CONTAINER", &dst.name), ("FILE", dump.to_str().unwrap())],
        &[],
    );
    assert!(out.contains("restore done"), "{out}");
    // The API was stopped through hivesup (and exited cleanly), not killed, and started again.
    let logs = dst.logs();
    for line in [
        "ctl stop program=api",
        r#"stopped program="api" exit=exit code 0"#,
        "ctl start program=api",
    ] {
        assert!(logs.contains(line), "no {line:?} in the log:\n{logs}");
    }
    assert_eq!(dst.state("{{.State.Health.Status}}"), "healthy");
    assert_eq!(dst.health(), 200);
    let (status, body) = dst.api("GET", "/api/v1/health", None);
    assert_eq!(status, 200, "{body}");

    // Every acknowledged-before-backup row, with its vector, and nothing that src never had.
    let rows = |c: &Container| -> BTreeSet<String> {
        c.psql(
            "hive_agent",
            "SELECT id || '|' || label || '|' || embedding::text FROM items",
        )
        .lines()
        .map(str::to_owned)
        .collect()
    };
    let restored = rows(&dst);
    let source = rows(&src);
    assert!(
        restored.is_subset(&source),
        "rows the source never had: {:?}",
        restored.difference(&source).collect::<Vec<_>>()
    );
    let ids: BTreeSet<i64> = restored
        .iter()
        .map(|r| r.split('|').next().unwrap().parse().unwrap())
        .collect();
    let missing: Vec<_> = acked_before.iter().filter(|i| !ids.contains(i)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged before the backup but not restored: {missing:?}"
    );
    let (status, body) = dst.api("GET", "/api/v1/vectors", None);
    assert_eq!(
        (status, body["count"].as_u64()),
        (200, Some(ids.len() as u64))
    );

    // Vectors, indexes, owners, extension, nearest neighbours: docs was not written to.
    let after = fingerprint(&agent_sql(&dst));
    let without_items = |f: &[String]| -> Vec<String> {
        f.iter()
            .filter(|l| !l.starts_with("items|"))
            .cloned()
            .collect()
    };
    assert_eq!(without_items(&after), without_items(&before));
    assert!(after.contains(&"owners|agent".to_owned()), "{after:?}");
    assert_eq!(
        dst.databases(),
        ["hive_agent", "postgres", "template0", "template1"],
        "no scratch or old database left behind"
    );
    // The API keeps working on the restored database: its sequence was restored too.
    let (status, body) = dst.api(
        "POST",
        "/api/v1/vectors",
        Some(json!({"label": "after", "embedding": [1.0, 2.0, 3.0]})),
    );
    assert_eq!(status, 201, "{body}");
    assert!(body["id"].as_i64().unwrap() > *ids.last().unwrap());
}

/// Refusals leave everything alone, and so does a restore that fails part-way; then the
/// good backup restores over data written since (the positive control).
#[test]
fn bad_backup_files_are_refused_and_a_failed_restore_changes_nothing() {
    let _g = setup();
    let dir = TestDir::new();
    let bad = TestDir::new();
    let vol = Volume::new("refuse");
    let c = Container::run("refuse", &vol.0);
    c.wait_healthy();
    c.psql("hive_agent", &format!("SET ROLE agent;\n{FIXTURE}"));
    make_ok(
        "agent-backup",
        &[
            ("CONTAINER", &c.name),
            ("BACKUP_DIR", dir.path().to_str().unwrap()),
        ],
        &[],
    );
    let dump = the_backup(dir.path(), &c.name);
    let good = std::fs::read(&dump).unwrap();
    // Written after the backup: a restore that happened would remove it.
    c.psql(
        "hive_agent",
        "SET ROLE agent; INSERT INTO items (label, embedding) VALUES ('since', '[5,5,5]')",
    );
    let baseline = fingerprint(&agent_sql(&c));

    std::fs::write(bad.path().join("empty.dump"), "").unwrap();
    std::fs::write(bad.path().join("plain.sql"), "CREATE TABLE x (n int);\n").unwrap();
    std::fs::write(bad.path().join("toc-cut.dump"), &good[..100]).unwrap();
    std::fs::write(
        bad.path().join("data-cut.dump"),
        &good[..good.len() * 6 / 10],
    )
    .unwrap();
    // The data-truncated archive is readable up to its data: pg_restore -l accepts it, so
    // its restore really starts and fails part-way.
    let cut = std::fs::read(bad.path().join("data-cut.dump")).unwrap();
    let mut child = Command::new("docker")
        .args(["exec", "-i", "-u", "postgres", &c.name, "pg_restore", "-l"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut w = child.stdin.take().unwrap();
    std::thread::spawn(move || {
        let _ = w.write_all(&cut);
    });
    let listed = child.wait_with_output().unwrap();
    assert!(
        listed.status.success()
            && String::from_utf8_lossy(&listed.stdout).contains("TABLE DATA public docs"),
        "precondition: pg_restore -l must accept the data-truncated archive:\n{}",
        text(&listed)
    );

    let missing = bad.path().join("no-such.dump");
    let cases: [(&Path, &str); 5] = [
        (&missing, "does not exist"),
        (&bad.path().join("empty.dump"), "is empty"),
        (
            &bad.path().join("plain.sql"),
            "not a pg_dump custom-format archive",
        ),
        (
            &bad.path().join("toc-cut.dump"),
            "not a readable pg_dump archive",
        ),
        (&bad.path().join("data-cut.dump"), "failed part-way"),
    ];
    for (file, why) in cases {
        let (code, out) = make(
            "agent-restore",
            &[("CONTAINER", &c.name), ("FILE", file.to_str().unwrap())],
            &[],
        );
        assert_ne!(code, 0, "{file:?} was not refused:\n{out}");
        assert!(out.contains(why), "{file:?}: want {why:?} in:\n{out}");
        if why == "failed part-way" {
            assert!(
                out.contains("restoring") && out.contains("database hive_agent is unchanged"),
                "{out}"
            );
        } else {
            assert!(out.contains("refusing to restore"), "{out}");
        }
        assert_eq!(
            fingerprint(&agent_sql(&c)),
            baseline,
            "{file:?} changed the running database"
        );
        assert_eq!(
            c.databases(),
            ["hive_agent", "postgres", "template0", "template1"],
            "{file:?} left a database behind"
        );
        assert_eq!(c.health(), 200, "{file:?}: the container must stay healthy");
        assert!(
            !c.logs().contains("ctl stop program=api"),
            "{file:?}: the API must keep running when nothing was restored"
        );
    }
    assert_eq!(c.state("{{.RestartCount}} {{.State.Status}}"), "0 running");

    // Positive control: the good file restores, and the row written since is gone.
    make_ok(
        "agent-restore",
        &[("CONTAINER", &c.name), ("FILE", dump.to_str().unwrap())],
        &[],
    );
    let restored = fingerprint(&agent_sql(&c));
    assert_ne!(restored, baseline);
    assert_eq!(
        c.psql(
            "hive_agent",
            "SELECT count(*) FROM items WHERE label = 'since'"
        ),
        "0"
    );
    assert_eq!(c.health(), 200);
}

/// The strictest mode of README "Least privilege" (read-only, non-root, no capability):
/// backup and restore work. Without the control socket (`--user postgres` and no `/run`
/// tmpfs) the restore is refused before it changes anything.
#[test]
fn backup_and_restore_work_read_only_and_non_root_and_need_the_control_socket() {
    let _g = setup();
    let dir = TestDir::new();
    let vol = Volume::new("ro");
    let c = Container::run_with(
        "ro",
        &vol.0,
        &[
            "--user",
            "postgres",
            "--read-only",
            "--tmpfs",
            "/run:uid=999,gid=999,mode=0755",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
        ],
    );
    c.wait_healthy();
    c.psql("hive_agent", &format!("SET ROLE agent;\n{FIXTURE}"));
    let before = fingerprint(&agent_sql(&c));
    make_ok(
        "agent-backup",
        &[
            ("CONTAINER", &c.name),
            ("BACKUP_DIR", dir.path().to_str().unwrap()),
        ],
        &[],
    );
    let dump = the_backup(dir.path(), &c.name);
    c.psql(
        "hive_agent",
        "SET ROLE agent; INSERT INTO items (label, embedding) VALUES ('since', '[5,5,5]')",
    );
    make_ok(
        "agent-restore",
        &[("CONTAINER", &c.name), ("FILE", dump.to_str().unwrap())],
        &[],
    );
    assert_eq!(fingerprint(&agent_sql(&c)), before);
    assert_eq!(c.health(), 200);

    let vol = Volume::new("noctl");
    let n = Container::run_with("noctl", &vol.0, &["--user", "postgres"]);
    n.wait_healthy();
    let baseline = n.databases();
    let (code, out) = make(
        "agent-restore",
        &[("CONTAINER", &n.name), ("FILE", dump.to_str().unwrap())],
        &[],
    );
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("refusing to restore: cannot stop and start api without hivesup ctl")
            && !out.contains("restoring"),
        "{out}"
    );
    assert_eq!(n.databases(), baseline);
    assert_eq!(n.health(), 200);
}

// ---------------------------------------------------------------- migration and upgrade

/// A PostgreSQL 15 cluster of the host's Debian 12 packages, run as the host's postgres
/// account, shaped like the official image's: the bootstrap superuser is `agent`
/// (POSTGRES_USER), TCP logins use scram-sha-256. Stopped and removed on drop.
struct HostPg15 {
    dir: TestDir,
    port: u16,
}

impl HostPg15 {
    fn new() -> HostPg15 {
        assert!(
            Path::new(PG15).join("initdb").exists(),
            "host PostgreSQL 15 missing: run .ci/host-deps.sh"
        );
        let dir = TestDir::new();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = HostPg15 { dir, port };
        std::fs::create_dir(pg.data()).unwrap();
        std::fs::create_dir(pg.sock()).unwrap();
        std::fs::create_dir(pg.dir.path().join("log")).unwrap();
        pg.dir.write("pw", &format!("{PASSWORD}\n"));
        for p in [
            pg.data(),
            pg.sock(),
            pg.dir.path().join("log"),
            pg.dir.path().join("pw"),
        ] {
            assert!(
                Command::new("chown")
                    .args(["postgres:postgres"])
                    .arg(&p)
                    .status()
                    .unwrap()
                    .success()
            );
        }
        pg.as_postgres(&[
            &format!("{PG15}/initdb"),
            "-D",
            pg.data().to_str().unwrap(),
            "--username=agent",
            &format!("--pwfile={}", pg.dir.p("pw")),
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
        ]);
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn sock(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    fn as_postgres(&self, argv: &[&str]) -> String {
        let out = run(
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .args(argv)
                .current_dir("/"),
            None,
        );
        assert!(
            out.status.success(),
            "{argv:?} failed:\n{}\n--- server log ---\n{}",
            text(&out),
            self.dir.read("log/server.log").unwrap_or_default()
        );
        text(&out)
    }

    fn start(&self) {
        self.as_postgres(&[
            &format!("{PG15}/pg_ctl"),
            "-D",
            self.data().to_str().unwrap(),
            "-w",
            "-t",
            "60",
            "-l",
            &self.dir.p("log/server.log"),
            "-o",
            &format!(
                "-c listen_addresses=127.0.0.1 -p {} -k {}",
                self.port,
                self.sock().display()
            ),
            "start",
        ]);
    }

    fn stop(&self) {
        self.as_postgres(&[
            &format!("{PG15}/pg_ctl"),
            "-D",
            self.data().to_str().unwrap(),
            "-w",
            "-m",
            "fast",
            "stop",
        ]);
    }

    fn psql(&self, db: &str, sql: &str) -> String {
        let out = run(
            Command::new("runuser")
                .args(["-u", "postgres", "--", &format!("{PG15}/psql")])
                .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-U", "agent"])
                .arg("-h")
                .arg(self.sock())
                .args(["-p", &self.port.to_string(), "-d", db])
                .current_dir("/"),
            Some(sql),
        );
        assert!(
            out.status.success(),
            "psql (PG15) failed:\n{sql}\n{}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for HostPg15 {
    fn drop(&mut self) {
        let _ = run(
            Command::new("runuser")
                .args(["-u", "postgres", "--", &format!("{PG15}/pg_ctl")])
                .arg("-D")
                .arg(self.data())
                .args(["-m", "immediate", "stop"])
                .current_dir("/"),
            None,
        );
    }
}

/// The wrong-major refusal, then the documented upgrade by dump and restore.
#[test]
fn pg15_data_dir_is_refused_untouched_then_migrated_by_dump_and_restore() {
    let _g = setup();
    let pg = HostPg15::new();
    pg.start();
    pg.psql("postgres", "CREATE DATABASE hive_agent");
    pg.psql(
        "hive_agent",
        &format!("CREATE EXTENSION vector;\n{FIXTURE}"),
    );
    let source = fingerprint(&|sql: &str| pg.psql("hive_agent", sql));
    pg.stop();
    let meta = |p: &Path| {
        let m = std::fs::metadata(p).unwrap();
        (m.uid(), m.gid(), m.permissions().mode() & 0o7777)
    };
    let before = meta(&pg.data());

    // Mounted into the PostgreSQL 17 image: one line naming both versions and the
    // upgrade commands, exit 1, postgres never started, the directory left as it was.
    let refused = Container::run("pg15", pg.data().to_str().unwrap());
    let code = refused.wait_exited();
    let logs = refused.logs();
    assert_eq!(code, 1, "{logs}");
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("PostgreSQL 15 data directory"))
        .collect();
    assert_eq!(lines.len(), 1, "want one refusal line:\n{logs}");
    for part in [
        "failed to start PostgreSQL 17",
        "serve it with PostgreSQL 15",
        "make agent-backup FROM=",
        "make agent-restore FILE=",
    ] {
        assert!(lines[0].contains(part), "{part:?} missing: {}", lines[0]);
    }
    assert!(
        !logs.lines().any(|l| l.starts_with("postgres |")),
        "the server must never start on it:\n{logs}"
    );
    assert_eq!(refused.state("{{.RestartCount}}"), "0");
    assert_eq!(
        meta(&pg.data()),
        before,
        "the refused directory was changed"
    );
    drop(refused);

    // The documented path: serve it with PostgreSQL 15, back it up with that server's
    // own pg_dump (`make agent-backup FROM=... PG_BINDIR=...`; the image's pg_dump 17.11
    // copies 15.20's internal pg_attver column options into the dump, README "Data"),
    // restore into a new container.
    pg.start();
    let dir = TestDir::new();
    let url = format!("postgresql://agent@127.0.0.1:{}/hive_agent", pg.port);
    make_ok(
        "agent-backup",
        &[
            ("FROM", &url),
            ("PG_BINDIR", PG15),
            ("BACKUP_DIR", dir.path().to_str().unwrap()),
        ],
        &[("PGPASSWORD", PASSWORD)],
    );
    pg.stop();
    let dump = the_backup(dir.path(), "hive-agent");
    let vol = Volume::new("from15");
    let dst = Container::run("from15", &vol.0);
    dst.wait_healthy();
    make_ok(
        "agent-restore",
        &[("CONTAINER", &dst.name), ("FILE", dump.to_str().unwrap())],
        &[],
    );
    assert_eq!(fingerprint(&agent_sql(&dst)), source);
    assert!(source.contains(&"owners|agent".to_owned()));
    assert_eq!(dst.health(), 200);
    let (status, body) = dst.api(
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
    assert_eq!(labels, ["far", "near"], "{body}");
}

/// A PostgreSQL 17 volume of the split setup, reused as is. Initialised the way the
/// official postgres image does it (the image's own initdb stands in for it: no registry
/// here): POSTGRES_USER `agent` is the bootstrap superuser, local trust, scram over TCP.
/// Its files are then given to uid 70, as the Alpine variant has them, and back.
#[test]
fn pg17_volume_of_the_split_setup_is_reused_directly() {
    let _g = setup();
    let vol = Volume::new("split17");
    let old = unique("old-db");
    struct Rm(String);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = docker(&["rm", "-f", &self.0]);
        }
    }
    let _rm = Rm(old.clone());
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &old,
        "--user",
        "postgres",
        "-e",
        &format!("POSTGRES_PASSWORD={PASSWORD}"),
        "-v",
        &format!("{}:/var/lib/postgresql/data", vol.0),
        "--entrypoint",
        "bash",
        IMAGE,
        "-c",
        r#"set -e
bin=/usr/lib/postgresql/17/bin
"$bin/initdb" -D "$PGDATA" --username=agent --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") >/dev/null
printf 'host all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
exec "$bin/postgres" -D "$PGDATA" -c listen_addresses='*'"#,
    ]);
    poll("the old server ready", Duration::from_secs(60), || {
        docker(&["exec", &old, "/usr/lib/postgresql/17/bin/pg_isready", "-q"])
            .status
            .success()
            .then_some(())
    });
    psql_in(&old, &[], "agent", "postgres", "CREATE DATABASE hive_agent");
    psql_in(
        &old,
        &[],
        "agent",
        "hive_agent",
        &format!("CREATE EXTENSION vector;\n{FIXTURE}"),
    );
    let source = fingerprint(&|sql: &str| psql_in(&old, &[], "agent", "hive_agent", sql));

    // Backups of the old server work both ways README "Data" shows for a different major
    // version: its own pg_dump through `docker exec` (its superuser is POSTGRES_USER), and
    // the image's pg_dump over the network.
    let dir = TestDir::new();
    make_ok(
        "agent-backup",
        &[
            ("CONTAINER", &old),
            ("BACKUP_DIR", dir.path().to_str().unwrap()),
        ],
        &[],
    );
    the_backup(dir.path(), &old);
    let ip = docker_ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", &old]);
    let dir = TestDir::new();
    make_ok(
        "agent-backup",
        &[
            ("FROM", &format!("postgresql://agent@{ip}:5432/hive_agent")),
            ("IMAGE", IMAGE),
            ("BACKUP_DIR", dir.path().to_str().unwrap()),
        ],
        &[("PGPASSWORD", PASSWORD)],
    );
    the_backup(dir.path(), "hive-agent");

    // README "Data", "From the split setup", same major version: the one psql step...
    let out = docker(&[
        "exec",
        &old,
        "psql",
        "-U",
        "agent",
        "-d",
        "postgres",
        "-c",
        "CREATE ROLE postgres SUPERUSER LOGIN",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    docker_ok(&["stop", &old]);
    // ...the Alpine variant's ownership (its postgres is uid 70): refused in one line
    // naming the chown, nothing started, then the documented chown...
    let chown = |owner: &str| {
        docker_ok(&[
            "run",
            "--rm",
            "--user",
            "root",
            "--entrypoint",
            "chown",
            "-v",
            &format!("{}:/var/lib/postgresql/data", vol.0),
            IMAGE,
            "-R",
            owner,
            "/var/lib/postgresql/data",
        ])
    };
    chown("70:70");
    let refused = Container::run("alpine17", &vol.0);
    assert_eq!(refused.wait_exited(), 1, "{}", refused.logs());
    let logs = refused.logs();
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("owned by uid 70"))
        .collect();
    assert_eq!(lines.len(), 1, "want one refusal line:\n{logs}");
    assert!(lines[0].contains("chown -R postgres:"), "{}", lines[0]);
    assert!(!logs.lines().any(|l| l.starts_with("postgres |")), "{logs}");
    drop(refused);
    chown("postgres:postgres");
    // ...and the new container on the old volume.
    let c = Container::run("reuse17", &vol.0);
    c.wait_healthy();
    let logs = c.logs();
    assert!(logs.contains("skipping initdb"), "{logs}");
    assert_eq!(fingerprint(&agent_sql(&c)), source);
    let (status, body) = c.api("GET", "/api/v1/vectors", None);
    assert_eq!((status, body["count"].as_u64()), (200, Some(3)), "{body}");
    let (status, body) = c.api(
        "POST",
        "/api/v1/vectors",
        Some(json!({"label": "new", "embedding": [2.0, 2.0, 2.0]})),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(c.health(), 200);
}
