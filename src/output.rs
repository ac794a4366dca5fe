//! Program output: each program's stdout and stderr are read line by line and re-emitted
//! on hivesup's own stdout/stderr, prefixed with the program name (`NAME | line`) or as
//! one JSON object per line.
//!
//! Readers are tokio tasks; the writing is done by one plain thread behind a bounded
//! channel. A slow or blocked stdout (a stalled log driver) therefore never blocks the
//! supervisor's loop: it fills the channel, and the back-pressure reaches only the
//! programs that write, through their pipes. Readers run to EOF, so the last lines a
//! program writes before it exits are not lost, and [`Output::finish`] flushes them.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::thread::JoinHandle;

use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::config::LogFormat;

/// Longer lines are split: one line must not hold an unbounded buffer.
const MAX_LINE: usize = 16 * 1024;
const QUEUE: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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

pub struct Output {
    tx: mpsc::Sender<Line>,
    writer: Option<JoinHandle<()>>,
    readers: JoinSet<()>,
}

impl Output {
    pub fn start(format: LogFormat) -> Self {
        let (tx, mut rx) = mpsc::channel::<Line>(QUEUE);
        let writer = std::thread::Builder::new()
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
            })
            .expect("failed to start the output thread");
        Output {
            tx,
            writer: Some(writer),
            readers: JoinSet::new(),
        }
    }

    /// Starts reading one pipe of a program until EOF.
    pub fn pump(&mut self, program: &Arc<str>, stream: Stream, fd: OwnedFd) {
        let rx = match pipe::Receiver::from_owned_fd(fd) {
            Ok(rx) => rx,
            Err(e) => {
                tracing::warn!(program = %program, error = %e, "failed to read program output");
                return;
            }
        };
        let tx = self.tx.clone();
        let program = program.clone();
        self.readers.spawn(read_lines(rx, program, stream, tx));
        // Reap finished reader tasks so the set does not grow with every restart.
        while self.readers.try_join_next().is_some() {}
    }

    /// Waits (up to `limit`) for readers to reach EOF, then flushes everything written.
    pub async fn finish(mut self, limit: std::time::Duration) {
        let _ = tokio::time::timeout(limit, async {
            while self.readers.join_next().await.is_some() {}
        })
        .await;
        self.readers.abort_all();
        drop(self.tx);
        if let Some(w) = self.writer.take() {
            let _ = tokio::task::spawn_blocking(move || w.join()).await;
        }
    }
}

async fn read_lines(
    mut rx: pipe::Receiver,
    program: Arc<str>,
    stream: Stream,
    tx: mpsc::Sender<Line>,
) {
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
            if send(&tx, &program, stream, text).await.is_err() {
                return;
            }
        }
        buf.drain(..start);
        while buf.len() >= MAX_LINE {
            let rest = buf.split_off(MAX_LINE);
            let text = std::mem::replace(&mut buf, rest);
            if send(&tx, &program, stream, text).await.is_err() {
                return;
            }
        }
    }
    if !buf.is_empty() {
        let _ = send(&tx, &program, stream, buf).await;
    }
}

async fn send(
    tx: &mpsc::Sender<Line>,
    program: &Arc<str>,
    stream: Stream,
    mut text: Vec<u8>,
) -> Result<(), ()> {
    if text.last() == Some(&b'\r') {
        text.pop();
    }
    tx.send(Line {
        program: program.clone(),
        stream,
        text,
    })
    .await
    .map_err(drop)
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
