//! Program output: each program's stdout and stderr are read line by line and re-emitted
//! on hivesup's own stdout/stderr, prefixed with the program name (`NAME | line`) or as
//! one JSON object per line.
//!
//! Readers are tokio tasks; the writing is done by one plain thread behind a bounded
//! channel. A slow or blocked stdout (a stalled log driver) therefore never blocks the
//! supervisor's loop: it fills the channel, and the back-pressure reaches only the
//! programs that write, through their pipes. Readers run to EOF, so the last lines a
//! program writes before it exits are not lost, and [`Output::finish`] flushes them.
//!
//! Every line is also kept in [`Logs`]: a bounded ring per program (for `ctl logs`) and a
//! broadcast for followers (`ctl logs -f`). A follower that falls behind loses lines, never
//! slows a program down.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinSet;

use crate::config::LogFormat;

/// Longer lines are split: one line must not hold an unbounded buffer.
const MAX_LINE: usize = 16 * 1024;
const QUEUE: usize = 1024;
/// What `ctl logs` can show: the last lines of each program, within both bounds.
pub const RING_LINES: usize = 1000;
pub const RING_BYTES: usize = 1024 * 1024;
/// Lines a `ctl logs -f` follower may lag behind before it misses some.
const FOLLOW_QUEUE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdout,
    Stderr,
}

struct Line {
    program: Arc<str>,
    stream: Stream,
    text: Vec<u8>,
}

/// One line of a program's output, as `ctl logs` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub program: String,
    pub stream: Stream,
    /// Unix time in seconds.
    pub time: f64,
    pub line: String,
}

#[derive(Default)]
struct Ring {
    lines: VecDeque<Arc<LogLine>>,
    bytes: usize,
}

/// The recent output of every program, and a feed of new lines.
pub struct Logs {
    rings: Mutex<HashMap<String, Ring>>,
    /// Made for the first follower: a broadcast channel allocates (and initialises) all
    /// its slots up front, 160 KiB for FOLLOW_QUEUE, which an idle hivesup that nobody
    /// follows should not carry.
    feed: OnceLock<broadcast::Sender<Arc<LogLine>>>,
}

impl Logs {
    fn new() -> Self {
        Logs {
            rings: Mutex::new(HashMap::new()),
            feed: OnceLock::new(),
        }
    }

    fn record(&self, line: LogLine) {
        let line = Arc::new(line);
        let mut rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        let ring = rings.entry(line.program.clone()).or_default();
        ring.bytes += line.line.len();
        ring.lines.push_back(line.clone());
        while ring.lines.len() > RING_LINES || ring.bytes > RING_BYTES {
            match ring.lines.pop_front() {
                Some(old) => ring.bytes -= old.line.len(),
                None => break,
            }
        }
        // Sent under the lock, so `tail_and_follow` sees every line exactly once.
        if let Some(feed) = self.feed.get() {
            let _ = feed.send(line);
        }
    }

    /// The last `n` lines of `program`, and (for `-f`) a feed of the lines after them.
    pub fn tail_and_follow(
        &self,
        program: &str,
        n: usize,
    ) -> (Vec<Arc<LogLine>>, broadcast::Receiver<Arc<LogLine>>) {
        let rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        let tail = rings
            .get(program)
            .map(|r| {
                let skip = r.lines.len().saturating_sub(n);
                r.lines.iter().skip(skip).cloned().collect()
            })
            .unwrap_or_default();
        let feed = self.feed.get_or_init(|| broadcast::channel(FOLLOW_QUEUE).0);
        (tail, feed.subscribe())
    }
}

pub struct Output {
    tx: mpsc::Sender<Line>,
    /// The writer thread's end, until the first pipe starts it.
    idle: Option<(mpsc::Receiver<Line>, LogFormat)>,
    /// Hears when the writer thread has written everything.
    writer: Option<oneshot::Receiver<()>>,
    readers: JoinSet<()>,
    logs: Arc<Logs>,
}

impl Output {
    /// The writer thread starts with the first program's pipes, after its spawn: nothing
    /// is written before, and hivesup reaches its first exec without creating it.
    pub fn start(format: LogFormat) -> Self {
        let (tx, rx) = mpsc::channel::<Line>(QUEUE);
        Output {
            tx,
            idle: Some((rx, format)),
            writer: None,
            readers: JoinSet::new(),
            logs: Arc::new(Logs::new()),
        }
    }

    pub fn logs(&self) -> Arc<Logs> {
        self.logs.clone()
    }

    /// Starts reading one pipe of a program until EOF.
    pub fn pump(&mut self, program: &Arc<str>, stream: Stream, fd: OwnedFd) {
        if let Some((lines, format)) = self.idle.take() {
            self.writer = Some(start_writer(lines, format));
        }
        let rx = match pipe::Receiver::from_owned_fd(fd) {
            Ok(rx) => rx,
            Err(e) => {
                tracing::warn!(program = %program, error = %e, "failed to read program output");
                return;
            }
        };
        let sink = Sink {
            tx: self.tx.clone(),
            logs: self.logs.clone(),
            program: program.clone(),
            stream,
        };
        self.readers.spawn(read_lines(rx, sink));
        // Reap finished reader tasks so the set does not grow with every restart.
        while self.readers.try_join_next().is_some() {}
    }

    /// Waits (up to `limit`) for readers to reach EOF, then (up to `limit` again) for
    /// everything read to be written. A stdout that stays blocked (a stalled log driver)
    /// must not keep PID 1 from exiting.
    pub async fn finish(mut self, limit: std::time::Duration) {
        let _ = tokio::time::timeout(limit, async {
            while self.readers.join_next().await.is_some() {}
        })
        .await;
        self.readers.abort_all();
        drop(self.tx);
        if let Some(written) = self.writer.take() {
            let _ = tokio::time::timeout(limit, written).await;
        }
    }
}

/// Starts the thread that writes program output to hivesup's stdout/stderr. The receiver
/// hears when it has written everything and the queue is closed.
fn start_writer(mut rx: mpsc::Receiver<Line>, format: LogFormat) -> oneshot::Receiver<()> {
    let (done, finished) = oneshot::channel();
    std::thread::Builder::new()
        .name("hivesup-output".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            let stdout = std::io::stdout();
            let stderr = std::io::stderr();
            while let Some(line) = rx.blocking_recv() {
                let mut rendered = render(format, &line);
                // Batch whatever else is queued, then write once per stream.
                let mut err_batch = Vec::new();
                if line.stream == Stream::Stderr {
                    std::mem::swap(&mut rendered, &mut err_batch);
                }
                while let Ok(more) = rx.try_recv() {
                    match more.stream {
                        Stream::Stdout => rendered.extend(render(format, &more)),
                        Stream::Stderr => err_batch.extend(render(format, &more)),
                    }
                    if rendered.len() + err_batch.len() > 64 * 1024 {
                        break;
                    }
                }
                // A closed stdout is not a reason to stop supervising: drop the text.
                if !rendered.is_empty() {
                    let mut o = stdout.lock();
                    let _ = o.write_all(&rendered).and_then(|_| o.flush());
                }
                if !err_batch.is_empty() {
                    let mut e = stderr.lock();
                    let _ = e.write_all(&err_batch).and_then(|_| e.flush());
                }
            }
            let _ = done.send(());
        })
        .expect("failed to start the output thread");
    finished
}

/// Where one pipe's lines go: the writer thread and the ring.
struct Sink {
    tx: mpsc::Sender<Line>,
    logs: Arc<Logs>,
    program: Arc<str>,
    stream: Stream,
}

impl Sink {
    async fn send(&self, mut text: Vec<u8>) -> Result<(), ()> {
        if text.last() == Some(&b'\r') {
            text.pop();
        }
        self.logs.record(LogLine {
            program: self.program.to_string(),
            stream: self.stream,
            time: crate::snapshot::unix(SystemTime::now()),
            line: String::from_utf8_lossy(&text).into_owned(),
        });
        self.tx
            .send(Line {
                program: self.program.clone(),
                stream: self.stream,
                text,
            })
            .await
            .map_err(drop)
    }
}

async fn read_lines(mut rx: pipe::Receiver, sink: Sink) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 8192];
    loop {
        let n = match rx.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut start = 0;
        while let Some(i) = buf[start..].iter().position(|&b| b == b'\n') {
            let text = buf[start..start + i].to_vec();
            start += i + 1;
            if sink.send(text).await.is_err() {
                return;
            }
        }
        buf.drain(..start);
        while buf.len() >= MAX_LINE {
            let rest = buf.split_off(MAX_LINE);
            let text = std::mem::replace(&mut buf, rest);
            if sink.send(text).await.is_err() {
                return;
            }
        }
    }
    if !buf.is_empty() {
        let _ = sink.send(buf).await;
    }
}

#[derive(Serialize)]
struct JsonLine<'a> {
    timestamp: String,
    program: &'a str,
    stream: Stream,
    line: &'a str,
}

fn render(format: LogFormat, line: &Line) -> Vec<u8> {
    let text = String::from_utf8_lossy(&line.text);
    match format {
        LogFormat::Text => format!("{} | {}\n", line.program, text).into_bytes(),
        LogFormat::Json => {
            let mut v = serde_json::to_vec(&JsonLine {
                timestamp: humantime::format_rfc3339_millis(std::time::SystemTime::now())
                    .to_string(),
                program: &line.program,
                stream: line.stream,
                line: &text,
            })
            .unwrap_or_default();
            v.push(b'\n');
            v
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> Line {
        Line {
            program: Arc::from("web"),
            stream: Stream::Stderr,
            text: text.as_bytes().to_vec(),
        }
    }

    fn log(program: &str, i: usize) -> LogLine {
        LogLine {
            program: program.into(),
            stream: Stream::Stdout,
            time: 0.0,
            line: format!("line {i}"),
        }
    }

    #[test]
    fn ring_keeps_the_last_lines_per_program() {
        let logs = Logs::new();
        for i in 0..RING_LINES + 5 {
            logs.record(log("a", i));
        }
        logs.record(log("b", 0));
        let (tail, _) = logs.tail_and_follow("a", 3);
        let got: Vec<&str> = tail.iter().map(|l| l.line.as_str()).collect();
        let n = RING_LINES + 5;
        let want = [n - 3, n - 2, n - 1].map(|i| format!("line {i}"));
        assert_eq!(got, want.iter().map(String::as_str).collect::<Vec<_>>());
        let (all, _) = logs.tail_and_follow("a", usize::MAX);
        assert_eq!(all.len(), RING_LINES);
        assert!(logs.tail_and_follow("nobody", 10).0.is_empty());
    }

    #[test]
    fn ring_is_bounded_in_bytes() {
        let logs = Logs::new();
        let big = "x".repeat(MAX_LINE);
        for _ in 0..200 {
            logs.record(LogLine {
                line: big.clone(),
                ..log("a", 0)
            });
        }
        let (all, _) = logs.tail_and_follow("a", usize::MAX);
        assert!(all.iter().map(|l| l.line.len()).sum::<usize>() <= RING_BYTES);
        assert_eq!(all.len(), RING_BYTES / MAX_LINE);
    }

    #[test]
    fn followers_see_each_new_line_once() {
        let logs = Logs::new();
        logs.record(log("a", 0));
        let (tail, mut rx) = logs.tail_and_follow("a", 10);
        assert_eq!(tail.len(), 1);
        logs.record(log("a", 1));
        assert_eq!(rx.try_recv().unwrap().line, "line 1");
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn text_and_json_rendering() {
        assert_eq!(render(LogFormat::Text, &line("hello")), b"web | hello\n");
        let j: serde_json::Value =
            serde_json::from_slice(&render(LogFormat::Json, &line("a \"q\""))).unwrap();
        assert_eq!(j["program"], "web");
        assert_eq!(j["stream"], "stderr");
        assert_eq!(j["line"], "a \"q\"");
    }
}
