//! Fuzzing the config loader (issue 5, "Bad input"): configs from `conf/` and
//! `tests/configs/`, mutated by bytes, lines, keys and values, go through
//! `hivesup::config::load` (the same code as `hivesup check` and start-up). Properties:
//! - no panic, and an answer within [`BOUND`] (the load runs on a worker thread; a hang is
//!   a failure, not a stuck test);
//! - a rejection renders as one `FILE:LINE:COL: message` per line, LINE and COL 1-based and
//!   inside the file;
//! - an accepted config has durations hivesup can add to an `Instant`.
//!
//! The normal test run fuzzes for 3 seconds. `HIVESUP_FUZZ_SECS=600` (or `make fuzz`) runs
//! longer; `HIVESUP_FUZZ_SEED=N` replays a run. cargo-fuzz would need a nightly compiler.
// The worker thread is joined by channel with a deadline; no child processes here.
#![allow(clippy::disallowed_methods)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hivesup::config::{self, Config, LoadError};
use proptest::prelude::*;
use proptest::test_runner::{
    Config as RunnerConfig, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner,
};

/// The longest one load may take before it counts as a hang (generous: debug build, loaded
/// 2-core machine; a typical load takes well under a millisecond).
const BOUND: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// corpus

fn corpus() -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    let mut dirs = vec![root.join("conf"), root.join("tests/configs")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "toml") {
                files.push(p);
            }
        }
    }
    files.sort();
    assert!(files.len() >= 5, "corpus too small: {files:?}");
    files
        .into_iter()
        .map(|p| {
            let name = p.strip_prefix(root).unwrap().display().to_string();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// mutations

/// Positions are taken modulo the length they index, so every mutation applies to any input.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit {
        at: usize,
        bit: u8,
    },
    SetByte {
        at: usize,
        byte: u8,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Delete {
        at: usize,
        len: usize,
    },
    Truncate {
        at: usize,
    },
    DeleteLine(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    /// A line of another corpus file inserted before line `at`.
    Splice {
        file: usize,
        line: usize,
        at: usize,
    },
    /// The text after the first `=` of a line replaced.
    Value {
        line: usize,
        value: String,
    },
    /// The key before the first `=` of a line replaced.
    Key {
        line: usize,
        key: String,
    },
}

fn toml_value() -> impl Strategy<Value = String> {
    let fixed = prop::sample::select(vec![
        "\"\"",
        "\"0s\"",
        "\"365d\"",
        "\"366d\"",
        "\"500000000000y\"",
        "\"18446744073709551615s\"",
        "\"1.5s\"",
        "\"-1s\"",
        "\"1m 30\"",
        "-1",
        "0",
        "9223372036854775807",
        "-9223372036854775808",
        "99999999999999999999",
        "0x7fffffff",
        "1e999",
        "nan",
        "-inf",
        "true",
        "1979-05-27T07:32:00Z",
        "[]",
        "{}",
        "[\"\"]",
        "[1, \"a\"]",
        "{ a = 1 }",
        "\"SIGKILL\"",
        "\"SIGRTMAX\"",
        "64",
        "\"0:0\"",
        "\"4294967296\"",
        "\"root\"",
        "\"a\\nb\"",
        "\"\\u0000\"",
        "\"\\t\\r\"",
        "\"\\u202e\"",
        "\"/\"",
        "\"127.0.0.1:0\"",
        "\"[::1]:70000\"",
        "\"http://[::1\"",
        "\"http://h:99999/x\"",
        "\"host=/tmp password=secret\"",
        "[\"/dev/zero\"]",
        "[\"/\", \"/nonexistent\", \"/etc/hostname\"]",
        "{ file = \"/dev/zero\" }",
        "{ file = \"\" }",
        "\"${HOME}\"",
        "\"${NO_SUCH_VAR_HOSTILE}\"",
        "\"${A:-${B:-${C}}}\"",
        "\"$${{}}\"",
        "'''\nmulti\nline'''",
        "\"\"\"\n\"\"\"",
    ])
    .prop_map(String::from);
    prop_oneof![
        4 => fixed,
        1 => "[a-zA-Z0-9 :/._=\\-]{0,16}".prop_map(|s| format!("\"{s}\"")),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => (1usize..3000).prop_map(|d| format!("{}{}", "[".repeat(d), "]".repeat(d))),
        1 => (1usize..3000).prop_map(|d| format!("{}{}", "{a=".repeat(d), "}".repeat(d))),
        1 => "[^\\n]{0,24}",
    ]
}

fn toml_key() -> impl Strategy<Value = String> {
    let fixed = prop::sample::select(vec![
        "command",
        "comand",
        "priority",
        "kind",
        "user",
        "directory",
        "environment",
        "restart",
        "stop_signal",
        "stop_timeout",
        "forward_signals",
        "critical",
        "settle_time",
        "ready",
        "health",
        "tcp",
        "unix",
        "http",
        "exec",
        "postgres",
        "notify",
        "timeout",
        "interval",
        "failures",
        "health_addr",
        "shutdown_timeout",
        "log_format",
        "control_socket",
        "reload_on_sighup",
        "environment_files",
        "programs",
        "supervisor",
        "programs.x.command",
        "\"\"",
        "\"a b\"",
        "a.b.c.d.e.f",
        "[programs.y]\ncommand",
        "[[programs]]\nx",
    ])
    .prop_map(String::from);
    prop_oneof![3 => fixed, 1 => "[a-z_.]{1,12}"]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let u = any::<usize>;
    prop_oneof![
        1 => (u(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        1 => (u(), prop::sample::select(b"\0\n\r\t\"'=[]{}.,#\\\x7f\xc3\xff ".to_vec()))
            .prop_map(|(at, byte)| Mutation::SetByte { at, byte }),
        1 => (u(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        1 => (u(), 1usize..64).prop_map(|(at, len)| Mutation::Delete { at, len }),
        1 => u().prop_map(|at| Mutation::Truncate { at }),
        1 => u().prop_map(Mutation::DeleteLine),
        1 => u().prop_map(Mutation::DuplicateLine),
        1 => (u(), u()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        1 => (u(), u(), u()).prop_map(|(file, line, at)| Mutation::Splice { file, line, at }),
        4 => (u(), toml_value()).prop_map(|(line, value)| Mutation::Value { line, value }),
        2 => (u(), toml_key()).prop_map(|(line, key)| Mutation::Key { line, key }),
    ]
}

fn split_lines(b: &[u8]) -> Vec<Vec<u8>> {
    b.split(|&c| c == b'\n').map(<[u8]>::to_vec).collect()
}

fn apply(corpus: &[(String, Vec<u8>)], base: &[u8], muts: &[Mutation]) -> Vec<u8> {
    let mut b = base.to_vec();
    for m in muts {
        match m {
            Mutation::FlipBit { at, bit } if !b.is_empty() => {
                let i = at % b.len();
                b[i] ^= 1 << bit;
            }
            Mutation::SetByte { at, byte } if !b.is_empty() => {
                let i = at % b.len();
                b[i] = *byte;
            }
            Mutation::Insert { at, bytes } => {
                let i = at % (b.len() + 1);
                b.splice(i..i, bytes.iter().copied());
            }
            Mutation::Delete { at, len } if !b.is_empty() => {
                let i = at % b.len();
                let end = (i + len).min(b.len());
                b.drain(i..end);
            }
            Mutation::Truncate { at } => b.truncate(at % (b.len() + 1)),
            Mutation::DeleteLine(l)
            | Mutation::DuplicateLine(l)
            | Mutation::Value { line: l, .. }
            | Mutation::Key { line: l, .. } => {
                let mut lines = split_lines(&b);
                let i = l % lines.len();
                match m {
                    Mutation::DeleteLine(_) => {
                        lines.remove(i);
                    }
                    Mutation::DuplicateLine(_) => {
                        let dup = lines[i].clone();
                        lines.insert(i, dup);
                    }
                    Mutation::Value { value, .. } => {
                        if let Some(eq) = lines[i].iter().position(|&c| c == b'=') {
                            lines[i].truncate(eq + 1);
                            lines[i].push(b' ');
                            lines[i].extend_from_slice(value.as_bytes());
                        }
                    }
                    Mutation::Key { key, .. } => {
                        if let Some(eq) = lines[i].iter().position(|&c| c == b'=') {
                            let mut line = key.as_bytes().to_vec();
                            line.push(b' ');
                            line.extend_from_slice(&lines[i][eq..]);
                            lines[i] = line;
                        }
                    }
                    _ => unreachable!(),
                }
                b = lines.join(&b'\n');
            }
            Mutation::SwapLines(x, y) => {
                let mut lines = split_lines(&b);
                let n = lines.len();
                lines.swap(x % n, y % n);
                b = lines.join(&b'\n');
            }
            Mutation::Splice { file, line, at } => {
                let other = split_lines(&corpus[file % corpus.len()].1);
                let extra = other[line % other.len()].clone();
                let mut lines = split_lines(&b);
                let i = at % (lines.len() + 1);
                lines.insert(i, extra);
                b = lines.join(&b'\n');
            }
            _ => {}
        }
    }
    b
}

// ---------------------------------------------------------------------------------------------
// the loader on a worker thread

enum Outcome {
    Accepted(Box<Config>),
    Rejected { lines: Vec<String>, display: String },
    Unreadable(String),
    Panicked(String),
}

struct Worker {
    tx: mpsc::Sender<PathBuf>,
    rx: mpsc::Receiver<Outcome>,
}

impl Worker {
    fn new() -> Worker {
        let (tx, jobs) = mpsc::channel::<PathBuf>();
        let (done, rx) = mpsc::channel();
        thread::Builder::new()
            .name("config-loader".into())
            .spawn(move || {
                for path in jobs {
                    let r = catch_unwind(AssertUnwindSafe(|| config::load(&path)));
                    let out = match r {
                        Ok(Ok(c)) => Outcome::Accepted(Box::new(c)),
                        Ok(Err(LoadError::Invalid(e))) => Outcome::Rejected {
                            display: e.to_string(),
                            lines: e.lines,
                        },
                        Ok(Err(e)) => Outcome::Unreadable(format!("{e:#}")),
                        Err(p) => Outcome::Panicked(
                            p.downcast_ref::<String>()
                                .cloned()
                                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                                .unwrap_or_default(),
                        ),
                    };
                    if done.send(out).is_err() {
                        break;
                    }
                }
            })
            .unwrap();
        Worker { tx, rx }
    }

    /// Loads `path`; `None` if no answer came within [`BOUND`] (the stuck worker is
    /// replaced, so shrinking can go on).
    fn load(&mut self, path: &Path) -> Option<Outcome> {
        self.tx.send(path.to_path_buf()).unwrap();
        match self.rx.recv_timeout(BOUND) {
            Ok(o) => Some(o),
            Err(_) => {
                *self = Worker::new();
                None
            }
        }
    }
}

/// Checks one loaded input against the properties; `Err` describes the violation.
fn check(path: &Path, text: &[u8], outcome: Option<Outcome>) -> Result<bool, String> {
    let shown = path.display().to_string();
    let line_count = text.iter().filter(|&&c| c == b'\n').count() + 1;
    match outcome {
        None => Err(format!("no answer within {BOUND:?}: a hang")),
        Some(Outcome::Panicked(msg)) => Err(format!("panicked: {msg}")),
        Some(Outcome::Unreadable(msg)) => Err(format!("could not read its own file: {msg}")),
        Some(Outcome::Accepted(c)) => {
            if c.programs.is_empty() {
                return Err("accepted a config with no programs".into());
            }
            let mut durations = vec![c.supervisor.shutdown_timeout];
            for p in &c.programs {
                durations.extend([
                    p.stop_timeout,
                    p.settle_time,
                    p.restart_backoff,
                    p.restart_backoff_max,
                    p.backoff_reset,
                ]);
                if let Some(r) = &p.ready {
                    durations.extend([r.timeout, r.interval]);
                }
                if let Some(h) = &p.health {
                    durations.extend([h.timeout, h.interval]);
                }
            }
            // Every deadline is now + a few of these: they must fit in an Instant with room.
            let unschedulable = |d: &Duration| {
                *d > config::duration::MAX
                    || d.checked_mul(4)
                        .and_then(|x| Instant::now().checked_add(x))
                        .is_none()
            };
            if let Some(d) = durations.iter().find(|d| unschedulable(d)) {
                return Err(format!(
                    "accepted a duration hivesup cannot schedule: {d:?}"
                ));
            }
            Ok(true)
        }
        Some(Outcome::Rejected { lines, display }) => {
            if lines.is_empty() {
                return Err("rejected with no message".into());
            }
            if display.lines().count() != lines.len() {
                return Err(format!(
                    "{} problems rendered as {} lines:\n{display}",
                    lines.len(),
                    display.lines().count()
                ));
            }
            for l in &lines {
                let (file, ln, col, msg) =
                    locate(l).ok_or_else(|| format!("not FILE:LINE:COL: message: {l:?}"))?;
                // Problems inside an environment_files file name that file instead.
                let inside = if file == shown {
                    line_count
                } else {
                    usize::MAX
                };
                if ln == 0 || col == 0 || ln > inside {
                    return Err(format!(
                        "position {ln}:{col} outside the file ({line_count} lines): {l:?}"
                    ));
                }
                if msg.trim().len() < 3 {
                    return Err(format!("no message after FILE:LINE:COL: {l:?}"));
                }
            }
            Ok(false)
        }
    }
}

/// Splits `FILE:LINE:COL: message` (FILE may itself contain ':').
fn locate(l: &str) -> Option<(&str, usize, usize, &str)> {
    for (i, _) in l.match_indices(':') {
        let rest = &l[i + 1..];
        let mut parts = rest.splitn(3, ':');
        let (Some(ln), Some(col), Some(msg)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if i > 0 && digits(ln) && digits(col) && msg.starts_with(' ') {
            return Some((&l[..i], ln.parse().ok()?, col.parse().ok()?, msg));
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// the run

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a whole number, found {v:?}")),
    )
}

#[test]
fn mutated_configs_never_panic_hang_or_lose_their_position() {
    let secs = env_u64("HIVESUP_FUZZ_SECS").unwrap_or(3);
    let seed = env_u64("HIVESUP_FUZZ_SEED").unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    let corpus = corpus();
    let dir = std::env::temp_dir().join(format!("hivesup-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("fuzzed.toml");
    let worker = std::cell::RefCell::new(Worker::new());
    let cases = AtomicU64::new(0);
    let accepted = AtomicU64::new(0);

    let strategy = (0..corpus.len(), prop::collection::vec(mutation(), 1..6));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut batch = 0u64;
    while Instant::now() < deadline {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        key[8..16].copy_from_slice(&batch.to_le_bytes());
        let mut runner = TestRunner::new_with_rng(
            RunnerConfig {
                cases: 256,
                failure_persistence: None,
                max_shrink_iters: 4096,
                ..RunnerConfig::default()
            },
            TestRng::from_seed(RngAlgorithm::ChaCha, &key),
        );
        let result = runner.run(&strategy, |(file, muts)| {
            let text = apply(&corpus, &corpus[file].1, &muts);
            std::fs::write(&path, &text).unwrap();
            let outcome = worker.borrow_mut().load(&path);
            cases.fetch_add(1, Ordering::Relaxed);
            match check(&path, &text, outcome) {
                Ok(ok) => {
                    accepted.fetch_add(u64::from(ok), Ordering::Relaxed);
                    Ok(())
                }
                Err(e) => Err(TestCaseError::fail(e)),
            }
        });
        if let Err(e) = result {
            let (why, (file, muts)) = match e {
                TestError::Fail(why, v) => (why.to_string(), v),
                TestError::Abort(why) => panic!("fuzz run aborted: {why}"),
            };
            let text = apply(&corpus, &corpus[file].1, &muts);
            panic!(
                "fuzz finding (HIVESUP_FUZZ_SEED={seed}, batch {batch}): {why}\n\
                 base: {}\nmutations: {muts:?}\ninput:\n{}",
                corpus[file].0,
                String::from_utf8_lossy(&text)
            );
        }
        batch += 1;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let n = cases.load(Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "fuzz: {n} cases in {elapsed:.1} s ({:.0} cases/s), {} accepted, {} rejected; corpus {} files; seed {seed}",
        n as f64 / elapsed,
        accepted.load(Ordering::Relaxed),
        n - accepted.load(Ordering::Relaxed),
        corpus.len()
    );
    assert!(n > 0, "no case ran");
}
