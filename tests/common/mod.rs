//! Test harness: runs the real `hivesup` binary with real child processes.
//!
//! - [`TestDir`]: a private temp directory (removed on drop) for configs, stamps and sockets.
//! - [`Hivesup`]: one running hivesup (optionally PID 1 of a fresh PID namespace via
//!   `unshare --pid --fork --mount-proc --kill-child`). Its stdout and stderr are read line by line
//!   on threads; tests wait for lines, for `listening on ADDR`, for exit, always with a deadline.
//!   On timeout (or any [`Hivesup::fail`]) everything is killed and the test panics with the
//!   command, the config, the exit status, stdout and stderr.
//! - Drop kills every descendant of hivesup (it is their subreaper or their PID 1, so they are
//!   all in its /proc subtree), then hivesup's own process group.
//!
//! Rules the tests follow (STYLE.md "Testing process and signal behaviour"): wait for events,
//! poll only where no event exists, every wait has a deadline, never skip.
#![allow(dead_code)]
// The test process waits for its own children (hivesup, unshare, `hivesup health`): there is
// no reaper here to race. clippy.toml's list guards src/.
#![allow(clippy::disallowed_methods)]

pub mod engine;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Default deadline for anything that should happen "soon". Generous: tests run in parallel on a
/// loaded 2-core machine, while the expected path is fast.
pub const WAIT: Duration = Duration::from_secs(10);
/// Deadline for scenarios that include backoff or real servers.
pub const LONG: Duration = Duration::from_secs(30);

pub const BIN: &str = env!("CARGO_BIN_EXE_hivesup");

/// Absolute path of a fixture program in tests/fixtures.
pub fn fx(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    assert!(p.exists(), "missing fixture {}", p.display());
    p.to_string_lossy().into_owned()
}

/// A TOML basic string for `s` (paths, conninfo ...).
pub fn q(s: impl AsRef<str>) -> String {
    let s = s.as_ref();
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TOML array of strings.
pub fn arr<S: AsRef<str>>(items: &[S]) -> String {
    let v: Vec<String> = items.iter().map(q).collect();
    format!("[{}]", v.join(", "))
}

/// The usual `[supervisor]` section: ephemeral health port, plus `extra` lines.
pub fn supervisor(extra: &str) -> String {
    format!("[supervisor]\nhealth_addr = \"127.0.0.1:0\"\n{extra}\n")
}

/// Gives a config without `control_socket` one inside the test's directory, so tests
/// never touch the host's /run/hivesup.sock nor each other's sockets. Lines keep their
/// numbers up to the `[supervisor]` header (or all of them, when the table is appended).
pub fn with_control_socket(config: &str, socket: &str) -> String {
    if config.is_empty() || config.contains("control_socket") {
        return config.to_string();
    }
    let line = format!("control_socket = {}", q(socket));
    match config.find("[supervisor]\n") {
        Some(i) => {
            let at = i + "[supervisor]\n".len();
            format!("{}{line}\n{}", &config[..at], &config[at..])
        }
        None if config.contains("[supervisor]") => config.to_string(),
        None => format!("{config}\n[supervisor]\n{line}\n"),
    }
}

/// A free TCP port on 127.0.0.1 (bind to 0, read, close). For fixtures that need a fixed port
/// in the config (tcp/http probes).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------------
// temp dir

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A private directory under /tmp, mode 0755 so unprivileged program users (nobody, postgres)
/// can reach paths inside it. Removed on drop.
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    pub fn new() -> TestDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let path =
            std::env::temp_dir().join(format!("hivesup-test-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir(&path).unwrap();
        set_mode(&path, 0o755);
        TestDir { path }
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// `dir/name` as a String.
    pub fn p(&self, name: &str) -> String {
        self.path.join(name).to_string_lossy().into_owned()
    }
    pub fn write(&self, name: &str, content: &str) -> String {
        let p = self.p(name);
        std::fs::write(&p, content).unwrap();
        p
    }
    pub fn touch(&self, name: &str) -> String {
        self.write(name, "")
    }
    pub fn remove(&self, name: &str) {
        let _ = std::fs::remove_file(self.path.join(name));
    }
    pub fn read(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.path.join(name)).ok()
    }
    /// Lines of a stamp file as nanoseconds since the epoch (fixtures write `time.time_ns()`).
    /// Lines of the form `WORD... NS` give the last field.
    pub fn stamps(&self, name: &str) -> Vec<u128> {
        self.read(name)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                l.split_whitespace()
                    .last()
                    .unwrap()
                    .parse::<u128>()
                    .unwrap()
            })
            .collect()
    }
    /// The stamp on the line that starts with `prefix` (e.g. "received SIGTERM", "exit").
    pub fn stamp_of(&self, name: &str, prefix: &str) -> Option<u128> {
        self.read(name)?
            .lines()
            .find(|l| l.starts_with(prefix))
            .map(|l| l.split_whitespace().last().unwrap().parse().unwrap())
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

pub fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

// ---------------------------------------------------------------------------------------------
// /proc

#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: i32,
    pub ppid: i32,
    pub state: char,
    pub pgrp: i32,
    pub session: i32,
    pub comm: String,
    pub starttime: u64,
}

pub fn read_proc(pid: i32) -> Option<Proc> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s[open + 1..close].to_string();
    let f: Vec<&str> = s[close + 2..].split_whitespace().collect();
    // fields after comm: state(3) ppid(4) pgrp(5) session(6) ... starttime(22)
    Some(Proc {
        pid,
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        pgrp: f.get(2)?.parse().ok()?,
        session: f.get(3)?.parse().ok()?,
        comm,
        starttime: f.get(19)?.parse().ok()?,
    })
}

pub fn all_procs() -> Vec<Proc> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
                if let Some(p) = read_proc(pid) {
                    v.push(p);
                }
            }
        }
    }
    v
}

/// Every descendant of `root` (not `root` itself), zombies included.
pub fn descendants(root: i32) -> Vec<Proc> {
    let procs = all_procs();
    let mut kids: HashMap<i32, Vec<&Proc>> = HashMap::new();
    for p in &procs {
        kids.entry(p.ppid).or_default().push(p);
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        if let Some(ks) = kids.get(&p) {
            for k in ks {
                if k.pid != root {
                    out.push((*k).clone());
                    stack.push(k.pid);
                }
            }
        }
    }
    out
}

pub fn zombies_under(root: i32) -> usize {
    descendants(root).iter().filter(|p| p.state == 'Z').count()
}

/// True if `pid` is a live (not zombie) process with the given start time.
pub fn alive(pid: i32, starttime: Option<u64>) -> bool {
    match read_proc(pid) {
        Some(p) => p.state != 'Z' && p.state != 'X' && starttime.is_none_or(|t| t == p.starttime),
        None => false,
    }
}

/// `Uid:`/`Gid:`/`Groups:` lines of /proc/PID/status.
pub fn proc_status_field(pid: i32, field: &str) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .map(|l| l[field.len() + 1..].trim().to_string())
}

pub fn kill(pid: i32, sig: i32) -> bool {
    // SAFETY: plain kill(2); pid comes from /proc or our own spawn.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// Polls `f` until it returns Some, or panics with `what` after `timeout`. For conditions that
/// have no event (HTTP state, /proc); the poll interval is short.
pub fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Minimal HTTP/1.1 GET over std TcpStream (`Connection: close`, handles chunked bodies).
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: */*\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("malformed response: {text:?}")))?;
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

// ---------------------------------------------------------------------------------------------
// hivesup

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Default)]
struct Lines {
    v: Vec<String>,
    eof: bool,
}

type Shared = Arc<(Mutex<Lines>, Condvar)>;

fn reader(
    mut r: impl Read + Send + 'static,
    shared: Shared,
    gate: Option<Arc<std::sync::atomic::AtomicBool>>,
) {
    thread::spawn(move || {
        // a stalled consumer (like a blocked log driver) until the test opens the gate
        if let Some(g) = gate {
            while !g.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(10));
            }
        }
        let mut br = BufReader::with_capacity(1 << 16, &mut r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match br.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if buf.ends_with(b"\n") {
                        buf.pop();
                    }
                    let line = String::from_utf8_lossy(&buf).into_owned();
                    let (m, cv) = &*shared;
                    m.lock().unwrap().v.push(line);
                    cv.notify_all();
                }
            }
        }
        let (m, cv) = &*shared;
        m.lock().unwrap().eof = true;
        cv.notify_all();
    });
}

/// How to run hivesup.
#[derive(Default)]
pub struct Opts {
    /// Run as PID 1 of a new PID namespace (`unshare --pid --fork --mount-proc --kill-child`).
    pub unshare: bool,
    /// Arguments after the binary. `None`: `--config DIR/hivesup.toml`.
    pub args: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    /// Run hivesup itself as this uid (and gid = uid), e.g. 65534 for nobody.
    pub uid: Option<u32>,
    /// Do not read hivesup's stdout until [`Hivesup::release_stdout`] (a stalled consumer).
    pub stall_stdout: bool,
}

pub struct Hivesup {
    pub dir: TestDir,
    pub config: String,
    pub config_path: String,
    command: String,
    /// pid of the process we spawned (hivesup itself, or unshare).
    spawned: i32,
    /// pid of hivesup (host view). Under unshare: the child of unshare.
    pid: i32,
    unshare: bool,
    out: Shared,
    err: Shared,
    exit_rx: mpsc::Receiver<ExitStatus>,
    exit: Option<ExitStatus>,
    addr: Option<SocketAddr>,
    stdout_gate: Arc<std::sync::atomic::AtomicBool>,
}

impl Hivesup {
    /// Writes `config` to DIR/hivesup.toml and runs `hivesup --config DIR/hivesup.toml`.
    pub fn start(dir: TestDir, config: &str) -> Hivesup {
        Self::start_with(dir, config, Opts::default())
    }

    /// Same, as PID 1 of a fresh PID namespace.
    pub fn start_pid1(dir: TestDir, config: &str) -> Hivesup {
        Self::start_with(
            dir,
            config,
            Opts {
                unshare: true,
                ..Opts::default()
            },
        )
    }

    /// Init mode: `hivesup -- ARGS...` (no config).
    pub fn init(dir: TestDir, args: &[&str], unshare: bool) -> Hivesup {
        let mut a = vec!["--".to_string()];
        a.extend(args.iter().map(|s| s.to_string()));
        Self::start_with(
            dir,
            "",
            Opts {
                unshare,
                args: Some(a),
                ..Opts::default()
            },
        )
    }

    pub fn start_with(dir: TestDir, config: &str, opts: Opts) -> Hivesup {
        let config_path = dir.p("hivesup.toml");
        // hivesup running as another user could not create a socket in our directory.
        let socket = if opts.uid.is_some() {
            String::new()
        } else {
            dir.p("ctl.sock")
        };
        let config = with_control_socket(config, &socket);
        if !config.is_empty() {
            std::fs::write(&config_path, &config).unwrap();
        }
        let args = opts
            .args
            .clone()
            .unwrap_or_else(|| vec!["--config".into(), config_path.clone()]);
        let mut cmd = if opts.unshare {
            let mut c = Command::new("unshare");
            c.args(["--pid", "--fork", "--mount-proc", "--kill-child", BIN]);
            c
        } else {
            Command::new(BIN)
        };
        cmd.args(&args);
        cmd.env_remove("HIVESUP_CONFIG");
        cmd.env("RUST_BACKTRACE", "1");
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.current_dir(dir.path());
        if let Some(u) = opts.uid {
            // std drops supplementary groups itself when root sets a uid
            cmd.uid(u).gid(u);
        }
        // Own session and process group, so Drop can kill the group without touching the
        // test runner. SAFETY: setsid is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let command = format!(
            "{}{} {}",
            if opts.unshare {
                "unshare --pid --fork --mount-proc --kill-child "
            } else {
                ""
            },
            BIN,
            args.join(" ")
        );
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("failed to spawn {command}: {e}"));
        let spawned = child.id() as i32;
        let out: Shared = Arc::default();
        let err: Shared = Arc::default();
        let gate = Arc::new(std::sync::atomic::AtomicBool::new(!opts.stall_stdout));
        reader(
            child.stdout.take().unwrap(),
            out.clone(),
            Some(gate.clone()),
        );
        reader(child.stderr.take().unwrap(), err.clone(), None);
        let (tx, exit_rx) = mpsc::channel();
        thread::spawn(move || {
            if let Ok(st) = child.wait() {
                let _ = tx.send(st);
            }
        });
        let mut h = Hivesup {
            dir,
            config,
            config_path,
            command,
            spawned,
            pid: spawned,
            unshare: opts.unshare,
            out,
            err,
            exit_rx,
            exit: None,
            addr: None,
            stdout_gate: gate,
        };
        if opts.unshare {
            h.pid = h.find_unshare_child();
        }
        h
    }

    /// hivesup's pid under unshare: the child unshare forked. If unshare was refused, FAIL
    /// with its reason: the project's machines allow it, and a skipped PID-1 test would hide
    /// exactly the behaviour users depend on.
    fn find_unshare_child(&mut self) -> i32 {
        let deadline = Instant::now() + WAIT;
        loop {
            let path = format!("/proc/{0}/task/{0}/children", self.spawned);
            if let Ok(s) = std::fs::read_to_string(&path) {
                if let Some(pid) = s
                    .split_whitespace()
                    .next()
                    .and_then(|p| p.parse::<i32>().ok())
                {
                    // wait until the child has exec'd hivesup (its comm is no longer unshare)
                    if read_proc(pid).is_some_and(|p| p.comm != "unshare") {
                        return pid;
                    }
                }
            }
            if let Ok(st) = self.exit_rx.try_recv() {
                self.exit = Some(st);
                self.drain();
                // A fast hivesup (init mode `sh -c 'exit 0'`) can come and go before we look:
                // only unshare's own complaints mean it was refused.
                if self.stderr().iter().any(|l| l.starts_with("unshare:")) {
                    self.fail(&format!(
                        "unshare failed ({st}): is `unshare --pid --fork --mount-proc` refused here? \
                         This test needs it and does not skip."
                    ));
                }
                return self.spawned;
            }
            if Instant::now() > deadline {
                self.fail("timed out waiting for unshare to fork hivesup");
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Starts reading hivesup's stdout (see [`Opts::stall_stdout`]).
    pub fn release_stdout(&self) {
        self.stdout_gate.store(true, Ordering::SeqCst);
    }

    /// hivesup's pid (host view).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn signal(&self, sig: i32) {
        if !kill(self.pid, sig) {
            self.fail(&format!(
                "kill({}, {sig}) failed: {}",
                self.pid,
                std::io::Error::last_os_error()
            ));
        }
    }

    pub fn lines(&self, s: Stream) -> Vec<String> {
        let shared = match s {
            Stream::Stdout => &self.out,
            Stream::Stderr => &self.err,
        };
        shared.0.lock().unwrap().v.clone()
    }
    pub fn stdout(&self) -> Vec<String> {
        self.lines(Stream::Stdout)
    }
    pub fn stderr(&self) -> Vec<String> {
        self.lines(Stream::Stderr)
    }

    /// Number of lines on `s` matching `pred` so far.
    pub fn count(&self, s: Stream, pred: impl Fn(&str) -> bool) -> usize {
        let shared = match s {
            Stream::Stdout => &self.out,
            Stream::Stderr => &self.err,
        };
        shared
            .0
            .lock()
            .unwrap()
            .v
            .iter()
            .filter(|l| pred(l))
            .count()
    }

    /// Waits until at least `n` lines on `s` match `pred`; returns the n-th. Searches the whole
    /// history, so a line that came before the call counts.
    pub fn wait_for_nth(
        &self,
        s: Stream,
        n: usize,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
        what: &str,
    ) -> String {
        let shared = match s {
            Stream::Stdout => &self.out,
            Stream::Stderr => &self.err,
        };
        let deadline = Instant::now() + timeout;
        let (m, cv) = &**shared;
        let mut g = m.lock().unwrap();
        loop {
            if let Some(l) = g.v.iter().filter(|l| pred(l)).nth(n - 1) {
                return l.clone();
            }
            let now = Instant::now();
            if g.eof || now >= deadline {
                let why = if g.eof { "stream closed" } else { "timed out" };
                drop(g);
                self.fail(&format!(
                    "{why} after {timeout:?} waiting for {what} on {s:?}"
                ));
            }
            g = cv.wait_timeout(g, deadline - now).unwrap().0;
        }
    }

    pub fn wait_for_line(
        &self,
        s: Stream,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
        what: &str,
    ) -> String {
        self.wait_for_nth(s, 1, pred, timeout, what)
    }

    /// Waits for a stdout line equal to `line`.
    pub fn wait_stdout(&self, line: &str) -> String {
        self.wait_for_line(
            Stream::Stdout,
            |l| l == line,
            WAIT,
            &format!("line {line:?}"),
        )
    }
    /// Waits for `NAME | ready` from each fixture program: they print it only after installing
    /// their signal handlers, so a signal sent after this is echoed, not fatal. (/health 200
    /// is not enough: settle_time can pass before a python fixture has set its handlers.)
    pub fn wait_ready(&self, names: &[&str]) {
        for n in names {
            self.wait_stdout(&format!("{n} | ready"));
        }
    }

    /// Waits for a stdout line containing `part`.
    pub fn wait_stdout_contains(&self, part: &str) -> String {
        self.wait_for_line(
            Stream::Stdout,
            |l| l.contains(part),
            WAIT,
            &format!("a line containing {part:?}"),
        )
    }
    pub fn wait_stderr_contains(&self, part: &str) -> String {
        self.wait_for_line(
            Stream::Stderr,
            |l| l.contains(part),
            WAIT,
            &format!("a line containing {part:?}"),
        )
    }

    /// The health address, parsed from `listening on ADDR` on stderr.
    pub fn addr(&mut self) -> SocketAddr {
        if let Some(a) = self.addr {
            return a;
        }
        let line = self.wait_for_line(
            Stream::Stderr,
            |l| l.contains("listening on "),
            WAIT,
            "`listening on ADDR`",
        );
        let rest = &line[line.find("listening on ").unwrap() + "listening on ".len()..];
        let tok: String = rest
            .chars()
            .take_while(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']'))
            .collect();
        let a: SocketAddr = tok.parse().unwrap_or_else(|e| {
            self.fail(&format!("cannot parse address {tok:?} in {line:?}: {e}"))
        });
        self.addr = Some(a);
        a
    }

    /// GET path on the health address; fails the test on connection errors.
    pub fn get(&mut self, path: &str) -> Response {
        let a = self.addr();
        match http_get(a, path, WAIT) {
            Ok(r) => r,
            Err(e) => self.fail(&format!("GET {path} on {a} failed: {e}")),
        }
    }

    pub fn try_get(&mut self, path: &str) -> std::io::Result<Response> {
        let a = self.addr();
        http_get(a, path, WAIT)
    }

    /// `/status` JSON.
    pub fn status(&mut self) -> serde_json::Value {
        let r = self.get("/status");
        if r.status != 200 {
            self.fail(&format!("/status answered {}: {}", r.status, r.body));
        }
        r.json()
    }

    /// programs.NAME of /status.
    pub fn program(&mut self, name: &str) -> serde_json::Value {
        let s = self.status();
        match s.get("programs").and_then(|p| p.get(name)) {
            Some(v) => v.clone(),
            None => self.fail(&format!("no programs.{name} in /status: {s}")),
        }
    }

    pub fn state(&mut self, name: &str) -> String {
        self.program(name)["state"]
            .as_str()
            .unwrap_or("<not a string>")
            .to_string()
    }

    /// `hivesup ctl --socket DIR/ctl.sock ARGS...` to completion (a start waits for
    /// readiness, so the deadline is LONG).
    pub fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        let socket = self.dir.p("ctl.sock");
        let mut a = vec!["ctl", "--socket", socket.as_str()];
        a.extend_from_slice(args);
        run(
            Command::new(BIN).args(&a).env_remove("HIVESUP_CONFIG"),
            LONG,
        )
    }

    /// Polls /status until `pred(programs.NAME)` holds.
    pub fn wait_program(
        &mut self,
        name: &str,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        let mut last = serde_json::Value::Null;
        loop {
            if let Ok(r) = self.try_get("/status") {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&r.body) {
                    if let Some(p) = v.get("programs").and_then(|p| p.get(name)) {
                        if pred(p) {
                            return p.clone();
                        }
                        last = p.clone();
                    }
                }
            }
            if Instant::now() > deadline {
                self.fail(&format!(
                    "timed out after {timeout:?} waiting for {name}: {what}; last: {last}"
                ));
            }
            if let Ok(st) = self.exit_rx.try_recv() {
                self.exit = Some(st);
                self.fail(&format!(
                    "hivesup exited ({st}) while waiting for {name}: {what}"
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn wait_state(&mut self, name: &str, state: &str, timeout: Duration) -> serde_json::Value {
        self.wait_program(name, timeout, &format!("state {state:?}"), |p| {
            p["state"] == state
        })
    }

    /// Polls `path` until it answers `status`; returns that response.
    pub fn wait_http(&mut self, path: &str, status: u16, timeout: Duration) -> Response {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Ok(r) = self.try_get(path) {
                if r.status == status {
                    return r;
                }
                last = Some(r);
            }
            if Instant::now() > deadline {
                self.fail(&format!(
                    "timed out after {timeout:?} waiting for {path} -> {status}; last: {last:?}"
                ));
            }
            if let Ok(st) = self.exit_rx.try_recv() {
                self.exit = Some(st);
                self.fail(&format!(
                    "hivesup exited ({st}) while waiting for {path} -> {status}"
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for hivesup (or unshare) to exit; returns its exit code (panics on death by signal
    /// unless `allow_signal`).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(st) = self.exit {
            return st;
        }
        match self.exit_rx.recv_timeout(timeout) {
            Ok(st) => {
                self.exit = Some(st);
                // the reader threads see EOF soon after; give them the rest of the output
                self.drain();
                st
            }
            Err(_) => self.fail(&format!("hivesup did not exit within {timeout:?}")),
        }
    }

    /// Exit code of hivesup; fails the test if it died by a signal.
    pub fn wait_code(&mut self, timeout: Duration) -> i32 {
        let st = self.wait_exit(timeout);
        match st.code() {
            Some(c) => c,
            None => self.fail(&format!("hivesup died by a signal: {st}")),
        }
    }

    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            if let Ok(st) = self.exit_rx.try_recv() {
                self.exit = Some(st);
            }
        }
        self.exit
    }

    /// SIGTERM, then the exit code.
    pub fn stop(&mut self) -> i32 {
        self.signal(libc::SIGTERM);
        self.wait_code(LONG)
    }

    fn drain(&self) {
        for shared in [&self.out, &self.err] {
            let deadline = Instant::now() + Duration::from_secs(5);
            let (m, cv) = &**shared;
            let mut g = m.lock().unwrap();
            while !g.eof && Instant::now() < deadline {
                g = cv.wait_timeout(g, Duration::from_millis(50)).unwrap().0;
            }
        }
    }

    /// Kills everything hivesup started and hivesup itself.
    pub fn kill_all(&self) {
        if self.exit.is_some() {
            return;
        }
        for _ in 0..3 {
            let d = descendants(self.spawned);
            if d.is_empty() {
                break;
            }
            for p in d {
                kill(p.pid, libc::SIGKILL);
            }
        }
        // our own group: unshare (and hivesup under it) or hivesup alone
        kill(-self.spawned, libc::SIGKILL);
        kill(self.spawned, libc::SIGKILL);
    }

    /// Kills everything and panics with the full report.
    pub fn fail(&self, msg: &str) -> ! {
        self.release_stdout();
        let procs = self.proc_report();
        self.kill_all();
        let exit = match self.exit {
            Some(st) => format!("{st}"),
            None => match self.exit_rx.recv_timeout(Duration::from_secs(5)) {
                Ok(st) => format!("{st} (after the harness killed it)"),
                Err(_) => "still running?".into(),
            },
        };
        self.drain();
        panic!(
            "{}--- processes under hivesup at the failure:\n{procs}",
            self.report(msg, &exit)
        );
    }

    /// hivesup and its descendants with state and signal masks (for failure reports).
    fn proc_report(&self) -> String {
        let mut r = String::new();
        let mut ps = vec![];
        if let Some(p) = read_proc(self.pid) {
            ps.push(p);
        }
        ps.extend(descendants(self.pid));
        for p in ps.iter().take(30) {
            let f = |k: &str| proc_status_field(p.pid, k).unwrap_or_default();
            let _ = writeln!(
                r,
                "{} ppid={} pgrp={} sid={} state={} comm={} SigPnd={} ShdPnd={} SigBlk={} SigIgn={} SigCgt={}",
                p.pid,
                p.ppid,
                p.pgrp,
                p.session,
                p.state,
                p.comm,
                f("SigPnd"),
                f("ShdPnd"),
                f("SigBlk"),
                f("SigIgn"),
                f("SigCgt")
            );
        }
        if ps.len() > 30 {
            let _ = writeln!(r, "... {} more", ps.len() - 30);
        }
        r
    }

    pub fn report(&self, msg: &str, exit: &str) -> String {
        let mut r = String::new();
        let _ = writeln!(r, "\n=== hivesup test failure: {msg}");
        let _ = writeln!(r, "--- command: {}", self.command);
        let _ = writeln!(r, "--- exit: {exit}");
        let _ = writeln!(r, "--- config ({}):\n{}", self.config_path, self.config);
        for (name, lines) in [("stdout", self.stdout()), ("stderr", self.stderr())] {
            let skip = lines.len().saturating_sub(150);
            let _ = writeln!(
                r,
                "--- {name} ({} lines{}):",
                lines.len(),
                if skip > 0 { ", last 150" } else { "" }
            );
            for l in &lines[skip..] {
                let _ = writeln!(r, "{l}");
            }
        }
        r
    }

    /// Asserts with the full report on failure.
    pub fn check(&self, cond: bool, msg: impl FnOnce() -> String) {
        if !cond {
            self.fail(&msg());
        }
    }

    /// Checks that `pred` holds every time it is polled during `window`. For negative
    /// assertions ("X does not happen"), which no event can confirm; the window is only an
    /// observation period, never synchronisation.
    pub fn holds_for(
        &mut self,
        window: Duration,
        what: &str,
        mut pred: impl FnMut(&mut Hivesup) -> bool,
    ) {
        let end = Instant::now() + window;
        while Instant::now() < end {
            if !pred(self) {
                self.fail(&format!("expected to hold for {window:?}: {what}"));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Panics with the report if hivesup wrote a Rust panic or backtrace.
    pub fn assert_no_panic(&self) {
        let all: Vec<String> = self.stderr().into_iter().chain(self.stdout()).collect();
        if let Some(l) = all
            .iter()
            .find(|l| l.contains("panicked at") || l.contains("stack backtrace"))
        {
            self.fail(&format!("hivesup panicked: {l}"));
        }
    }
}

impl Drop for Hivesup {
    fn drop(&mut self) {
        if self.exited().is_none() {
            self.kill_all();
            let _ = self.exit_rx.recv_timeout(Duration::from_secs(5));
        }
    }
}

/// Runs a short command to completion (for `hivesup health`, `status`, `check`...), with a
/// deadline; returns (exit code, stdout, stderr).
pub fn run(cmd: &mut Command, timeout: Duration) -> (i32, String, String) {
    let desc = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {desc}: {e}"));
    let pid = child.id() as i32;
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t1 = thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let t2 = thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(st)) => {
            let out = t1.join().unwrap();
            let err = t2.join().unwrap();
            let code = st.code().unwrap_or_else(|| {
                panic!("{desc} died by signal {st}\nstdout:\n{out}\nstderr:\n{err}")
            });
            (code, out, err)
        }
        _ => {
            kill(pid, libc::SIGKILL);
            panic!("{desc} did not finish within {timeout:?}");
        }
    }
}

/// `hivesup ARGS...` to completion.
pub fn hivesup(args: &[&str]) -> (i32, String, String) {
    run(
        Command::new(BIN).args(args).env_remove("HIVESUP_CONFIG"),
        WAIT,
    )
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Fails (never skips) when a test needs root.
pub fn require_root(why: &str) {
    assert!(
        is_root(),
        "this test must run as root ({why}); it does not skip"
    );
}
