//! Hostile HTTP against the health port (issue 5, "Bad input"): oversized heads, garbage
//! bytes, 10,000 idle connections, slowloris, a client that never reads, unread bodies,
//! concurrent clients. After each: the supervised program is untouched (same pid, no
//! restart), /livez answers, and hivesup's peak RSS is printed and loosely bounded.
//!
//! The limits under test are `hivesup::http`'s constants (README, "Health port limits").
// The test process waits on its own children (the harness); clippy.toml guards src/.
#![allow(clippy::disallowed_methods)]
mod common;
use common::*;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use hivesup::http::{HEADER_READ_TIMEOUT, IDLE_TIMEOUT, MAX_CONNECTIONS};

/// Loose bound on hivesup's peak resident memory under any of these attacks.
const MAX_RSS_KIB: u64 = 64 * 1024;

/// hivesup supervising one program `web` (python http.server on its own port, so the
/// slowloris test has an unprotected server to compare with).
struct Target {
    h: Hivesup,
    addr: SocketAddr,
    web_port: u16,
    web_pid: i64,
}

fn start() -> Target {
    let t = TestDir::new();
    t.touch("ok");
    let web_port = free_port();
    let cfg = format!(
        r#"{sup}
[programs.web]
command = {cmd}
[programs.web.ready]
http = "http://127.0.0.1:{web_port}/health"
interval = "50ms"
"#,
        sup = supervisor(""),
        cmd = arr(&[fx("httpd.py"), web_port.to_string(), t.p("ok")]),
    );
    let mut h = Hivesup::start(t, &cfg);
    let addr = h.addr();
    h.wait_http("/health", 200, LONG);
    let web_pid = h.program("web")["pid"]
        .as_i64()
        .unwrap_or_else(|| h.fail("programs.web.pid is not a number"));
    Target {
        h,
        addr,
        web_port,
        web_pid,
    }
}

/// hivesup's peak resident set (VmHWM) in KiB.
fn peak_rss_kib(pid: i32) -> u64 {
    proc_status_field(pid, "VmHWM")
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"))
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

impl Target {
    /// The program is the same process, never restarted; /livez answers; memory stayed bounded.
    fn assert_untouched(&mut self, what: &str) {
        let h = &mut self.h;
        let r = h.get("/livez");
        h.check(r.status == 200 && r.body == "ok\n", || {
            format!("after {what}: /livez answered {} {:?}", r.status, r.body)
        });
        let web = h.program("web");
        h.check(
            web["pid"] == self.web_pid && web["restarts"] == 0 && web["state"] == "running",
            || format!("after {what}: web was disturbed: {web}"),
        );
        h.assert_no_panic();
        let rss = peak_rss_kib(h.pid());
        println!(
            "{what}: hivesup peak RSS {:.1} MiB, web pid {} untouched",
            rss as f64 / 1024.0,
            self.web_pid
        );
        h.check(rss < MAX_RSS_KIB, || {
            format!("after {what}: peak RSS {rss} KiB >= {MAX_RSS_KIB} KiB")
        });
    }
}

/// Sends `req` (ignoring a write refused because the server already answered and closed),
/// then reads until EOF, a reset, or `timeout`. Returns what was read.
fn exchange(addr: SocketAddr, req: &[u8], timeout: Duration) -> Vec<u8> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).expect("connect");
    s.set_read_timeout(Some(timeout)).unwrap();
    s.set_write_timeout(Some(timeout)).unwrap();
    let _ = s.write_all(req);
    let _ = s.shutdown(Shutdown::Write);
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!(
                    "no answer and no close within {timeout:?} for {:?}",
                    head(req)
                )
            }
            Err(_) => break, // reset: the server closed with our bytes unread
        }
    }
    out
}

fn head(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(60)]).into_owned()
}

fn status_of(resp: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(resp);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Whether the server closed `s` (EOF or reset), without blocking. Data waiting to be read
/// (an error response) is consumed first.
fn closed_by_peer(s: &TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: recv into a stack buffer we own, on a socket we own.
        let n = unsafe {
            libc::recv(
                s.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n > 0 {
            continue;
        }
        if n == 0 {
            return true;
        }
        let e = std::io::Error::last_os_error();
        return match e.kind() {
            ErrorKind::WouldBlock => false,
            ErrorKind::Interrupted => continue,
            _ => true,
        };
    }
}

/// Raises this test process's RLIMIT_NOFILE so it can hold `n` sockets (we are root).
fn raise_nofile(n: u64) {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl), 0);
        rl.rlim_max = rl.rlim_max.max(n);
        rl.rlim_cur = rl.rlim_cur.max(n);
        assert_eq!(
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl),
            0,
            "setrlimit(RLIMIT_NOFILE, {n}): {}",
            std::io::Error::last_os_error()
        );
    }
}

#[test]
fn oversized_heads_get_431_and_change_nothing() {
    let mut t = start();
    let a = t.addr;
    let get_with = |extra: &str| format!("GET /livez HTTP/1.1\r\nHost: x\r\n{extra}\r\n");

    // Negative control: a head just under the limit is answered.
    let fits = get_with(&format!("X-Pad: {}\r\n", "a".repeat(6 * 1024)));
    let r = exchange(a, fits.as_bytes(), WAIT);
    t.h.check(status_of(&r) == Some(200), || {
        format!("a 6 KiB head should be answered: {:?}", head(&r))
    });

    // One header of 12 KiB (more than the 8 KiB head limit, less than the read buffer).
    let big = get_with(&format!("X-Pad: {}\r\n", "a".repeat(12 * 1024)));
    let r = exchange(a, big.as_bytes(), WAIT);
    t.h.check(status_of(&r) == Some(431), || {
        format!("a 12 KiB header should get 431: {:?}", head(&r))
    });

    // 200 small headers (the limit is 64).
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = exchange(a, get_with(&many).as_bytes(), WAIT);
    t.h.check(status_of(&r) == Some(431), || {
        format!("200 headers should get 431: {:?}", head(&r))
    });

    // A 10 KiB request target.
    let long_uri = format!(
        "GET /livez?{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "q".repeat(10240)
    );
    let r = exchange(a, long_uri.as_bytes(), WAIT);
    t.h.check(matches!(status_of(&r), Some(414 | 431)), || {
        format!("a 10 KiB URI should get 414 or 431: {:?}", head(&r))
    });

    // 16 MiB of header with no end: answered 431 or reset, never buffered.
    let huge = format!(
        "GET /livez HTTP/1.1\r\nHost: x\r\nX-Pad: {}",
        "a".repeat(16 << 20)
    );
    let r = exchange(a, huge.as_bytes(), WAIT);
    t.h.check(r.is_empty() || status_of(&r) == Some(431), || {
        format!("a 16 MiB header: {:?}", head(&r))
    });

    t.assert_untouched("oversized heads");
}

#[test]
fn garbage_bytes_get_400_or_a_close() {
    let mut t = start();
    let mut fixed: Vec<Vec<u8>> = vec![
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(), // a TLS ClientHello start
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),             // the HTTP/2 preface
        b"\0\0\0\0\0\0\0\0\r\n\r\n".to_vec(),
        b"GET /livez HTTP/9.9\r\n\r\n".to_vec(),
        b"GET /livez HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec(),
        b"GET /livez HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
            .to_vec(),
        b"GET /livez HTTP/1.1\r\nBad Header\r\n\r\n".to_vec(),
        b"GET \xff\xfe HTTP/1.1\r\n\r\n".to_vec(),
        b"\r\n\r\n\r\n\r\n".to_vec(),
        "GET /livéz HTTP/1.1\r\n\r\n".as_bytes().to_vec(),
    ];
    // Deterministic pseudo-random bytes (xorshift), of growing lengths.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in (1..200).step_by(7).chain([4096, 65536]) {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        fixed.push(bytes);
    }
    let mut answered = 0;
    for g in &fixed {
        let r = exchange(t.addr, g, WAIT);
        let st = status_of(&r);
        t.h.check(r.is_empty() || matches!(st, Some(400..=499 | 505)), || {
            format!("garbage {:?} got {:?}", head(g), head(&r))
        });
        answered += usize::from(st.is_some());
    }
    println!(
        "garbage: {} inputs, {answered} answered 4xx/505, the rest closed",
        fixed.len()
    );
    t.assert_untouched("garbage bytes");
}

#[test]
fn ten_thousand_idle_connections_do_not_lock_out_livez() {
    const N: usize = 10_000;
    raise_nofile(N as u64 + 1024);
    let mut t = start();
    let pid = t.h.pid();
    let base_fds = open_fds(pid);

    // Watch hivesup's descriptors for the whole flood.
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(open_fds(pid), Ordering::Relaxed);
                thread::sleep(Duration::from_millis(2));
            }
        })
    };
    // A well-behaved client asking /livez throughout the flood.
    let prober = {
        let (stop, addr) = (stop.clone(), t.addr);
        thread::spawn(move || {
            let mut asked = 0;
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match http_get(addr, "/livez", WAIT) {
                    Ok(r) if r.status == 200 => {}
                    other => failures.push(format!("{other:?}")),
                }
                asked += 1;
            }
            (asked, failures)
        })
    };

    let t0 = Instant::now();
    let mut socks = Vec::with_capacity(N);
    for i in 0..N {
        match TcpStream::connect_timeout(&t.addr, WAIT) {
            Ok(s) => socks.push(s),
            Err(e) => t.h.fail(&format!("connection {i} of {N} failed: {e}")),
        }
    }
    println!("{N} idle connections opened in {:.2?}", Instant::now() - t0);
    // Every connection beyond the limit closed one older one.
    let enough = N - MAX_CONNECTIONS;
    let mut closed = 0;
    let deadline = Instant::now() + LONG;
    while closed < enough && Instant::now() < deadline {
        closed = socks.iter().filter(|s| closed_by_peer(s)).count();
        thread::sleep(Duration::from_millis(100));
    }
    let r = t.h.get("/livez");
    t.h.check(r.status == 200, || {
        format!("/livez during the flood: {r:?}")
    });
    stop.store(true, Ordering::Relaxed);
    let (asked, failures) = prober.join().unwrap();
    sampler.join().unwrap();
    let peak = peak.load(Ordering::Relaxed);
    println!(
        "hivesup closed {closed} of {N} at once; /livez asked {asked} times during the flood, {} failed; fds: {base_fds} before, peak {peak}",
        failures.len()
    );
    t.h.check(failures.is_empty(), || {
        format!("/livez failed during the flood: {failures:?}")
    });
    t.h.check(closed >= enough, || {
        format!("only {closed} of {N} idle connections were closed; expected at least {enough}")
    });
    t.h.check(peak <= base_fds + MAX_CONNECTIONS + 8, || {
        format!("hivesup held {peak} descriptors (base {base_fds}, limit {MAX_CONNECTIONS})")
    });
    // The rest are closed by the header timeout.
    let deadline = Instant::now() + HEADER_READ_TIMEOUT + LONG;
    loop {
        let open = socks.iter().filter(|s| !closed_by_peer(s)).count();
        if open == 0 {
            break;
        }
        if Instant::now() > deadline {
            t.h.fail(&format!(
                "{open} idle connections still open past the header timeout"
            ));
        }
        thread::sleep(Duration::from_millis(200));
    }
    drop(socks);
    t.assert_untouched("10,000 idle connections");
}

#[test]
fn slowloris_is_cut_off_while_an_unprotected_server_is_not() {
    let mut t = start();
    let web: SocketAddr = format!("127.0.0.1:{}", t.web_port).parse().unwrap();
    let mut ours = TcpStream::connect(t.addr).unwrap();
    // Negative control: the supervised python http.server has no header timeout.
    let mut theirs = TcpStream::connect(web).unwrap();
    for s in [&mut ours, &mut theirs] {
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").unwrap();
    }
    // One header byte every 100 ms: each write is progress, but the head never ends.
    let t0 = Instant::now();
    let deadline = t0 + HEADER_READ_TIMEOUT + LONG;
    let mut i = 0u64;
    let cut_after = loop {
        i += 1;
        let _ = ours.write_all(b"X");
        if closed_by_peer(&ours) {
            break t0.elapsed();
        }
        if Instant::now() > deadline {
            t.h.fail("hivesup never closed a slowloris connection");
        }
        // Meanwhile a normal client is served.
        if i % 10 == 0 {
            let r = t.h.get("/livez");
            t.h.check(r.status == 200, || {
                format!("/livez during slowloris: {r:?}")
            });
        }
        thread::sleep(Duration::from_millis(100));
    };
    theirs.write_all(b"X").unwrap();
    t.h.check(!closed_by_peer(&theirs), || {
        format!("the control server closed the trickling client too ({cut_after:?}): the test cannot tell a timeout from a client error")
    });
    println!(
        "slowloris: hivesup closed it after {cut_after:.2?} (header timeout {HEADER_READ_TIMEOUT:?}); the unprotected server still holds it"
    );
    drop(theirs); // frees the single-threaded control server for its health probe
    t.assert_untouched("slowloris");
}

#[test]
fn a_client_that_never_reads_is_dropped_after_the_idle_timeout() {
    let mut t = start();
    let pid = t.h.pid();
    let base_fds = open_fds(pid);
    let s = small_receive_buffer_connect(t.addr);
    // Pipelined requests whose answers we never read: hivesup's writes stall once the socket
    // buffers are full, and then it stops reading too.
    let req = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(400_000);
    s.set_nonblocking(true).unwrap();
    let mut sent = 0;
    let mut stalled_since = Instant::now();
    // Write until hivesup has taken nothing for a second (its buffers and ours are full).
    while sent < req.len() && stalled_since.elapsed() < Duration::from_secs(1) {
        match (&s).write(&req[sent..]) {
            Ok(n) => {
                sent += n;
                stalled_since = Instant::now();
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(10)),
            Err(e) => {
                t.h.fail(&format!("write failed before the idle timeout: {e}"))
            }
        }
    }
    t.h.check(sent < req.len(), || {
        "hivesup read every pipelined request: the buffers never filled".into()
    });
    // The connection is gone from hivesup once no byte moved for IDLE_TIMEOUT.
    let t0 = Instant::now();
    poll(
        "hivesup to drop the stalled connection",
        IDLE_TIMEOUT + LONG,
        || (open_fds(pid) <= base_fds).then_some(()),
    );
    println!(
        "stalled reader: {sent} request bytes accepted, dropped {:.2?} after the buffers filled (idle timeout {IDLE_TIMEOUT:?})",
        t0.elapsed()
    );
    drop(s);
    t.assert_untouched("a client that never reads");
}

/// A client socket with a 4 KiB receive buffer (set before connect, so the window is small).
fn small_receive_buffer_connect(addr: SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(v4) = addr else {
        panic!("expected an IPv4 health address, found {addr}")
    };
    // SAFETY: a fresh socket we own; sockaddr_in filled from a valid address; on success the
    // fd moves into the TcpStream.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let size: libc::c_int = 4096;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let r = libc::connect(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(r, 0, "connect: {}", std::io::Error::last_os_error());
        TcpStream::from_raw_fd(fd)
    }
}

#[test]
fn request_bodies_are_never_read() {
    let mut t = start();
    // A body announced but never sent does not delay the answer.
    let r = exchange(
        t.addr,
        b"GET /livez HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n",
        WAIT,
    );
    t.h.check(status_of(&r) == Some(200), || {
        format!("GET with an unsent body: {:?}", head(&r))
    });

    // POST with a 1 GiB body: 405, and hivesup stops reading instead of draining it.
    let mut s = TcpStream::connect(t.addr).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    s.write_all(b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n")
        .unwrap();
    let chunk = vec![b'x'; 1 << 16];
    let mut written: usize = 0;
    let refused = loop {
        match s.write(&chunk) {
            Ok(n) => written += n,
            Err(e) => break e,
        }
        if written >= 256 << 20 {
            t.h.fail("hivesup took 256 MiB of an unwanted request body");
        }
    };
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    println!(
        "unread body: hivesup stopped the upload after {:.1} MiB ({refused}); answer {:?}",
        written as f64 / (1 << 20) as f64,
        head(&resp)
    );
    t.h.check(resp.is_empty() || status_of(&resp) == Some(405), || {
        format!("POST answered {:?}", head(&resp))
    });

    // Methods other than GET and HEAD: 405 with Allow. `exchange` shuts down its write
    // side after the request: without half_close, hyper sometimes closed on that EOF
    // before answering (a few requests in a hundred), so ask often.
    for m in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"].repeat(40) {
        let r = exchange(
            t.addr,
            format!("{m} /status HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").as_bytes(),
            WAIT,
        );
        t.h.check(status_of(&r) == Some(405), || {
            format!("{m} /status: {:?}", head(&r))
        });
    }
    let r = exchange(t.addr, b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n", WAIT);
    t.h.check(status_of(&r) == Some(200), || {
        format!("HEAD /health: {:?}", head(&r))
    });
    t.assert_untouched("unread request bodies");
}

#[test]
fn concurrent_clients_are_all_answered() {
    let mut t = start();
    let addr = t.addr;
    let threads: Vec<_> = (0..32)
        .map(|i| {
            thread::spawn(move || {
                let paths = ["/health", "/status", "/metrics", "/livez", "/readyz"];
                let mut bad = Vec::new();
                for j in 0..40 {
                    let p = paths[(i + j) % paths.len()];
                    match http_get(addr, p, LONG) {
                        Ok(r) if r.status == 200 => {}
                        other => bad.push(format!("{p}: {other:?}")),
                    }
                }
                bad
            })
        })
        .collect();
    let bad: Vec<String> = threads
        .into_iter()
        .flat_map(|th| th.join().unwrap())
        .collect();
    t.h.check(bad.is_empty(), || {
        format!(
            "{} of 1280 requests failed: {:?}",
            bad.len(),
            &bad[..bad.len().min(5)]
        )
    });
    println!("concurrent: 32 clients x 40 requests, all 200");
    t.assert_untouched("concurrent clients");
}
