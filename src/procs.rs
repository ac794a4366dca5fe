//! Reading the process table from /proc: who descends from whom, and which of our
//! children are leftovers of a program that already exited.
//!
//! Postgres backends and daemonising programs call setsid(), so a kill to the program's
//! process group misses them. While the program lives they are found as its descendants
//! (by parent pid); once it has died they are reparented to hivesup (PID 1 or subreaper)
//! and found as our children that nobody registered.
//!
//! Relations are read by walking down from a known pid through
//! `/proc/PID/task/TID/children` (proc(5); the kernel's CONFIG_PROC_CHILDREN), reading
//! `/proc/PID/stat` only for the processes on the way. A scan of every `/proc` entry
//! would grow with the whole machine's process count: a subreaper on a busy host, or a
//! container with hundreds of postgres backends, would pay for all of them on every
//! program exit and at shutdown. Kernels without the children files get that full scan,
//! once per question, as a fallback.

use std::fs;
use std::sync::OnceLock;

/// One line of /proc/PID/stat, the fields we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub pid: u32,
    pub state: char,
    pub ppid: u32,
    pub pgrp: u32,
    /// Clock ticks since boot.
    pub start_time: u64,
}

/// Parses /proc/PID/stat. The command name is in parentheses and may itself contain
/// spaces and ')' characters, so fields are counted from the last ')'.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let mut rest = text[close + 1..].split_whitespace();
    // The first field after the name is field 3 (state); starttime is field 22.
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    let pgrp = rest.next()?.parse().ok()?;
    let start_time = rest.nth(16)?.parse().ok()?;
    Some(Stat {
        pid,
        state,
        ppid,
        pgrp,
        start_time,
    })
}

/// hivesup reads /proc to find what programs leave behind; without it (not mounted, or
/// something else mounted there) leftovers would survive a restart unnoticed, so the
/// supervisor refuses to start. The error says what failed and how to fix it.
pub fn check_available() -> Result<(), String> {
    const FIX: &str = "hivesup needs a proc file system on /proc to find the processes programs \
                       leave behind (mount -t proc proc /proc)";
    match fs::read_to_string("/proc/self/stat") {
        Ok(t) if parse_stat(&t).is_some() => Ok(()),
        Ok(_) => Err(format!(
            "failed to parse /proc/self/stat: /proc is not a proc file system; {FIX}"
        )),
        Err(e) => Err(format!("failed to read /proc/self/stat ({e}); {FIX}")),
    }
}

pub fn stat(pid: u32) -> Option<Stat> {
    parse_stat(&read_proc_file(&format!("/proc/{pid}/stat"))?)
}

/// Reads a /proc file. Unlike fs::read_to_string it does not stat the file first for a
/// size hint (/proc files report size 0): one open, the reads, one close.
fn read_proc_file(path: &str) -> Option<String> {
    use std::io::Read;
    let mut file = fs::File::open(path).ok()?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    String::from_utf8(buf).ok()
}

/// Every live process (zombies excluded): the full scan, for kernels without the
/// children files.
pub fn all() -> Vec<Stat> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(stat)
        .filter(|s| s.state != 'Z')
        .collect()
}

/// Now, in the clock ticks since boot that /proc/PID/stat uses for start times.
pub fn now_ticks() -> u64 {
    // Start times are CLOCK_BOOTTIME truncated to ticks (proc(5), field 22); reading the
    // clock directly costs no file (the vDSO answers), and a time namespace shifts both
    // the same way.
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which lives on our stack.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut t) } != 0 {
        return 0;
    }
    let boot = t.tv_sec as u128 * 1_000_000_000 + t.tv_nsec as u128;
    // SAFETY: sysconf reads a constant and touches no memory of ours.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u128;
    (boot * hz / 1_000_000_000) as u64
}

/// Where parent/child relations come from.
pub enum Tree {
    /// The kernel's per-task children lists, read on demand.
    Live,
    /// A table read once (the full-scan fallback, and tests).
    Table(Vec<Stat>),
}

/// Whether this kernel has /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN).
fn children_files() -> bool {
    static HAVE: OnceLock<bool> = OnceLock::new();
    *HAVE.get_or_init(|| fs::metadata("/proc/thread-self/children").is_ok())
}

impl Tree {
    /// The cheapest source this kernel offers, as of now.
    pub fn read() -> Tree {
        if children_files() {
            Tree::Live
        } else {
            Tree::Table(all())
        }
    }

    /// Live children of `pid`, from every one of its threads: a child belongs to the
    /// thread that forked it, and an orphan reparented to a subreaper to any live thread
    /// of it.
    pub fn children_of(&self, pid: u32) -> Vec<Stat> {
        match self {
            Tree::Table(table) => table.iter().filter(|s| s.ppid == pid).copied().collect(),
            Tree::Live => {
                let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
                    return Vec::new();
                };
                let mut out: Vec<Stat> = Vec::new();
                for task in tasks.flatten() {
                    let Some(tid) = task.file_name().to_str().map(str::to_owned) else {
                        continue;
                    };
                    let Some(text) = read_proc_file(&format!("/proc/{pid}/task/{tid}/children"))
                    else {
                        continue;
                    };
                    for child in text.split_ascii_whitespace() {
                        let Ok(child) = child.parse::<u32>() else {
                            continue;
                        };
                        // The children lists hold zombies too; a zombie has no children.
                        if let Some(s) = stat(child) {
                            if s.state != 'Z'
                                && s.ppid == pid
                                && !out.iter().any(|o| o.pid == child)
                            {
                                out.push(s);
                            }
                        }
                    }
                }
                out
            }
        }
    }

    /// All live descendants of `root` (not `root` itself).
    pub fn descendants(&self, root: u32) -> Vec<Stat> {
        let mut out: Vec<Stat> = Vec::new();
        let mut frontier = vec![root];
        while let Some(parent) = frontier.pop() {
            for s in self.children_of(parent) {
                if s.pid != root && !out.iter().any(|o| o.pid == s.pid) {
                    frontier.push(s.pid);
                    out.push(s);
                }
            }
        }
        out
    }

    /// Our children (and their descendants) that were left behind by a program whose
    /// main process started at `since` with process group `pgid`: in that group, or
    /// started after it. `is_ours` says which pids are registered programs or probes
    /// (never leftovers).
    pub fn leftovers(
        &self,
        me: u32,
        pgid: u32,
        since: u64,
        is_ours: impl Fn(u32) -> bool,
    ) -> Vec<Stat> {
        let mut out = Vec::new();
        for s in self.children_of(me) {
            if !is_ours(s.pid) && (s.pgrp == pgid || s.start_time >= since) {
                out.push(s);
                out.extend(self.descendants(s.pid));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]
    use super::*;

    #[test]
    fn stat_with_tricky_names() {
        let line = "1234 (my (weird) prog) S 1 1234 1234 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 5555 1000 10";
        let s = parse_stat(line).unwrap();
        assert_eq!(
            s,
            Stat {
                pid: 1234,
                state: 'S',
                ppid: 1,
                pgrp: 1234,
                start_time: 5555
            }
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (short) S 0 1"), None);
    }

    fn pids(v: Vec<Stat>) -> Vec<u32> {
        let mut p: Vec<u32> = v.into_iter().map(|s| s.pid).collect();
        p.sort();
        p
    }

    #[test]
    fn descendants_and_leftovers() {
        let p = |pid, ppid, pgrp, start_time| Stat {
            pid,
            state: 'S',
            ppid,
            pgrp,
            start_time,
        };
        let tree = Tree::Table(vec![
            p(10, 1, 10, 100),
            p(11, 10, 10, 101),
            p(12, 11, 12, 102),
            p(20, 1, 20, 50),
            p(30, 1, 30, 200),
            p(31, 30, 30, 201),
            p(40, 1, 10, 90),
        ]);
        assert_eq!(pids(tree.descendants(10)), [11, 12]);
        assert_eq!(pids(tree.children_of(1)), [10, 20, 30, 40]);
        // Program with pgid 10 started at 100: 10 is registered, 20 is older and foreign,
        // 30 started later (a setsid escapee reparented to us, with its child 31), 40 is
        // still in the program's group.
        assert_eq!(
            pids(tree.leftovers(1, 10, 100, |pid| pid == 10)),
            [30, 31, 40]
        );
    }

    /// The live walk finds children of every thread and grandchildren, and nothing else.
    #[test]
    fn live_walk_finds_children_and_grandchildren() {
        assert!(
            children_files(),
            "this kernel lacks /proc/PID/task/TID/children"
        );
        let me = std::process::id();
        // A child forked from another thread of ours (alive while we look: when a thread
        // ends, its children move to another thread), with a grandchild of its own.
        let (tx, rx) = std::sync::mpsc::channel();
        let (done, wait_done) = std::sync::mpsc::channel::<()>();
        let forker = std::thread::spawn(move || {
            let child = std::process::Command::new("sh")
                .args(["-c", "sleep 30 & echo $!; wait"])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            tx.send(child).unwrap();
            let _ = wait_done.recv();
        });
        let mut child = rx.recv().unwrap();
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let grandchild: u32 = line.trim().parse().unwrap();
        let live = Tree::Live;
        let found = pids(live.descendants(child.id()));
        let mine = pids(live.children_of(me));
        done.send(()).unwrap();
        forker.join().unwrap();
        // SAFETY: kill(2) on a pid we started; no memory involved.
        unsafe { libc::kill(grandchild as i32, libc::SIGKILL) };
        child.wait().unwrap();
        assert_eq!(found, [grandchild]);
        assert!(mine.contains(&child.id()), "{mine:?} lacks {}", child.id());
        assert!(!mine.contains(&grandchild));
    }

    #[test]
    fn reads_our_own_stat() {
        let me = std::process::id();
        let s = stat(me).unwrap();
        assert_eq!(s.pid, me);
        assert!(all().iter().any(|s| s.pid == me));
        // Our own start time is in the past of now, on the same clock.
        assert!(s.start_time <= now_ticks());
    }
}
