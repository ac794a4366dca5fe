//! Output capture (issue 2): programs' stdout/stderr re-emitted line by line on hivesup's
//! stdout/stderr as `NAME | line` (text) or JSON objects with program/stream/line (json); the
//! last lines before a program exits are not lost; a flooding program does not block the loop.
mod common;
use common::*;

#[test]
fn text_lines_prefixed_on_matching_stream() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.web]
kind = "oneshot"
command = "echo hello out; echo hello err >&2; printf 'two\nlines\n'"
"#,
        sup = supervisor(""),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_state("web", "exited", WAIT);
    h.wait_stdout("web | hello out");
    h.wait_stdout("web | two");
    h.wait_stdout("web | lines");
    h.wait_for_line(
        Stream::Stderr,
        |l| l == "web | hello err",
        WAIT,
        "`web | hello err` on stderr",
    );
    h.check(!h.stdout().iter().any(|l| l.contains("hello err")), || {
        "stderr line on stdout".into()
    });
    h.check(!h.stderr().iter().any(|l| l.contains("hello out")), || {
        "stdout line on stderr".into()
    });
    assert_eq!(h.stop(), 0);
}

#[test]
fn json_format() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.web]
kind = "oneshot"
command = "echo 'hello \"out\"'; echo hello err >&2"
"#,
        sup = supervisor("log_format = \"json\""),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_state("web", "exited", WAIT);
    let find = |h: &Hivesup, stream: &str, line: &str| -> bool {
        h.stdout().iter().chain(h.stderr().iter()).any(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .is_ok_and(|v| v["program"] == "web" && v["stream"] == stream && v["line"] == line)
        })
    };
    poll("json stdout line", WAIT, || {
        find(&h, "stdout", "hello \"out\"").then_some(())
    });
    poll("json stderr line", WAIT, || {
        find(&h, "stderr", "hello err").then_some(())
    });
    h.stop();
    // json means every line hivesup writes is a JSON object (its own logs included)
    let bad: Vec<String> = h
        .stdout()
        .into_iter()
        .chain(h.stderr())
        .filter(|l| !l.trim().is_empty() && serde_json::from_str::<serde_json::Value>(l).is_err())
        .collect();
    h.check(bad.is_empty(), || {
        format!("non-JSON lines with log_format = json: {bad:?}")
    });
}

/// A oneshot that writes 5,000 lines and a final line without a newline, then exits at once:
/// every line arrives, in order, before hivesup reports the exit.
#[test]
fn last_lines_before_exit_not_lost() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.burst]
kind = "oneshot"
command = ["/usr/bin/python3", "-c", "import sys\nfor i in range(5000): sys.stdout.write('line %d\\n' % i)\nsys.stdout.write('final words')\nsys.stdout.flush()\n"]
"#,
        sup = supervisor(""),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_state("burst", "exited", WAIT);
    h.wait_stdout("burst | line 4999");
    h.wait_stdout("burst | final words");
    let lines: Vec<String> = h
        .stdout()
        .into_iter()
        .filter(|l| l.starts_with("burst | line "))
        .collect();
    h.check(lines.len() == 5000, || {
        format!("expected 5000 lines, got {}", lines.len())
    });
    for (i, l) in lines.iter().enumerate() {
        if *l != format!("burst | line {i}") {
            h.fail(&format!("line {i} out of order or mangled: {l:?}"));
        }
    }
    assert_eq!(h.stop(), 0);
}

/// While a program floods stdout, /livez and /health keep answering, and the flood's last line
/// arrives.
#[test]
fn flood_does_not_block_the_loop() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.quiet]
settle_time = "100ms"
command = {ps}
[programs.flood]
settle_time = "100ms"
command = {flood}
"#,
        sup = supervisor(""),
        ps = arr(&[fx("print_signals.py")]),
        flood = arr(&[fx("flood.py"), "300000".into(), "--stay".into()]),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_stdout("quiet | ready");
    h.wait_for_line(
        Stream::Stdout,
        |l| l.starts_with("flood | flood "),
        WAIT,
        "the flood to start",
    );
    for _ in 0..20 {
        let r = h.get("/livez");
        h.check(r.status == 200, || {
            format!("/livez during flood: {}", r.status)
        });
        let r = h.get("/status");
        h.check(r.status == 200, || {
            format!("/status during flood: {}", r.status)
        });
    }
    h.wait_for_line(
        Stream::Stdout,
        |l| l == "flood | flood done 300000",
        LONG,
        "the flood's last line",
    );
    let n = h.count(Stream::Stdout, |l| l.starts_with("flood | flood "));
    h.check(n == 300001, || {
        format!("lines lost in the flood: {n} of 300001")
    });
    assert_eq!(h.stop(), 0);
}

/// A stderr flood as well, with another program's stdout interleaved: each line intact.
#[test]
fn stderr_flood_lines_intact() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.flood]
kind = "oneshot"
command = {flood}
"#,
        sup = supervisor(""),
        flood = arr(&[fx("flood.py"), "50000".into(), "--stderr".into()]),
    );
    let mut h = Hivesup::start(t, &cfg);
    h.wait_for_line(
        Stream::Stderr,
        |l| l == "flood | flood done 50000",
        LONG,
        "last stderr line",
    );
    let pad = "x".repeat(60);
    let bad = h
        .stderr()
        .into_iter()
        .filter(|l| l.starts_with("flood | flood ") && !l.ends_with("done 50000"))
        .enumerate()
        .find(|(i, l)| *l != format!("flood | flood {i} {pad}"));
    h.check(bad.is_none(), || {
        format!("mangled or missing line: {bad:?}")
    });
    assert_eq!(h.stop(), 0);
}

/// Even when whoever reads hivesup's stdout stalls (a blocked log driver) while a program
/// floods, hivesup's loop keeps answering /livez and /status and its other programs keep being
/// supervised; once the reader resumes, output flows again and shutdown works.
#[test]
fn stalled_stdout_consumer_does_not_block_the_loop() {
    let t = TestDir::new();
    let cfg = format!(
        r#"{sup}
[programs.flood]
settle_time = "100ms"
command = {flood}
[programs.other]
settle_time = "100ms"
restart_backoff = "50ms"
command = {other}
"#,
        sup = supervisor(""),
        flood = arr(&[fx("flood.py"), "200000".into(), "--stay".into()]),
        other = arr(&[
            fx("stamp.py"),
            t.p("other.starts"),
            fx("print_signals.py"),
            "--pidfile".into(),
            t.p("other.pid")
        ]),
    );
    let mut h = Hivesup::start_with(
        t,
        &cfg,
        Opts {
            stall_stdout: true,
            ..Opts::default()
        },
    );
    // the flood has long filled the pipe (64 KiB) we are not reading
    h.wait_program("flood", WAIT, "running", |p| p["state"] == "running");
    poll("other's pidfile", WAIT, || h.dir.read("other.pid"));
    for _ in 0..10 {
        let r = h.get("/livez");
        h.check(r.status == 200, || {
            format!("/livez with a stalled stdout: {}", r.status)
        });
    }
    // supervision goes on: kill `other`, it is seen and restarted
    let pid: i32 = h.dir.read("other.pid").unwrap().parse().unwrap();
    kill(pid, libc::SIGKILL);
    h.wait_program("other", WAIT, "restarted", |p| p["restarts"] == 1);
    h.release_stdout();
    h.wait_for_line(
        Stream::Stdout,
        |l| l == "flood | flood done 200000",
        LONG,
        "the flood's last line",
    );
    assert_eq!(h.stop(), 0);
}
