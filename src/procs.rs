//! Reading the process table from /proc: who descends from whom, and which of our
//! children are leftovers of a program that already exited.
//!
//! Postgres backends and daemonising programs call setsid(), so a kill to the program's
//! process group misses them. While the program lives they are found as its descendants
//! (by parent pid); once it has died they are reparented to hivesup (PID 1 or subreaper)
//! and found as our children that nobody registered.

use std::fs;

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
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // rest[0] is field 3 (state); starttime is field 22.
    Some(Stat {
        pid,
        state: rest.first()?.chars().next()?,
        ppid: rest.get(1)?.parse().ok()?,
        pgrp: rest.get(2)?.parse().ok()?,
        start_time: rest.get(19)?.parse().ok()?,
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
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Every live process (zombies excluded).
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
    let uptime = fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    // SAFETY: sysconf reads a constant and touches no memory of ours.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (uptime * hz) as u64
}

/// All descendants of `root` (not `root` itself), by walking parent links.
pub fn descendants(table: &[Stat], root: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for s in table.iter().filter(|s| s.ppid == parent) {
            if !out.contains(&s.pid) && s.pid != root {
                out.push(s.pid);
                frontier.push(s.pid);
            }
        }
    }
    out
}

/// Our children (and their descendants) that were left behind by a program whose main
/// process started at `since` with process group `pgid`: in that group, or started after
/// it. `is_ours` says which pids are registered programs or probes (never leftovers).
pub fn leftovers(
    table: &[Stat],
    me: u32,
    pgid: u32,
    since: u64,
    is_ours: impl Fn(u32) -> bool,
) -> Vec<u32> {
    let mut out = Vec::new();
    for s in table.iter().filter(|s| s.ppid == me && !is_ours(s.pid)) {
        if s.pgrp == pgid || s.start_time >= since {
            out.push(s.pid);
            out.extend(descendants(table, s.pid));
        }
    }
    out
}

#[cfg(test)]
mod tests {
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
        let table = [
            p(10, 1, 10, 100),
            p(11, 10, 10, 101),
            p(12, 11, 12, 102),
            p(20, 1, 20, 50),
            p(30, 1, 30, 200),
        ];
        let mut d = descendants(&table, 10);
        d.sort();
        assert_eq!(d, [11, 12]);
        // Program with pgid 10 started at 100: 10 is registered, 20 is older and foreign,
        // 30 started later (a setsid escapee reparented to us).
        let mut l = leftovers(&table, 1, 10, 100, |pid| pid == 10);
        l.sort();
        assert_eq!(l, [30]);
    }

    #[test]
    fn reads_our_own_stat() {
        let me = std::process::id();
        let s = stat(me).unwrap();
        assert_eq!(s.pid, me);
        assert!(all().iter().any(|s| s.pid == me));
    }
}
