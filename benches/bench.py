#!/usr/bin/env python3
"""hivesup side by side with supervisord, s6, tini and dumb-init (issue 4).

Runs every scenario against every peer on this machine, in one run, and prints one
Markdown table: median, min and max of the repetitions, and hivesup's ratio to each peer.
It prints figures and asserts nothing about them; it exits non-zero only when a scenario
could not run at all.

Every supervisor runs as PID 1 of a fresh PID namespace (`unshare --pid --fork
--mount-proc`), in a session of its own. Cleaning up is SIGKILL to that namespace's init
(the kernel then kills everything left in the namespace) and to the unshare process
group: nothing this harness did not start is ever signalled.

Timestamps come from the processes themselves (benches/helper.c records CLOCK_REALTIME
before exec or right after the event); the harness only reads them.

    python3 benches/bench.py [--short] [--out DIR] [--only SCENARIO,...]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEERS = ["hivesup", "hivesup --", "supervisord", "s6", "tini", "dumb-init"]
# "baseline" is another hivesup binary (--baseline), run exactly like "hivesup": its
# ratio column is then this build's figure over the baseline's (before/after).
HIVESUPS = ("hivesup", "baseline")
NS = ["unshare", "--pid", "--fork", "--mount-proc"]


class CannotExpress(Exception):
    """This peer cannot express the scenario; the message says why (goes in the table)."""


class ScenarioError(Exception):
    """The scenario did not produce its figure (timeout, missing stamp...)."""


def log(msg: str) -> None:
    load = os.getloadavg()[0]
    print(f"[bench {time.strftime('%H:%M:%S')} load {load:.1f}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes and /proc


def proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, comm) for every process visible in our /proc."""
    table = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                s = f.read().decode(errors="replace")
        except OSError:
            continue
        comm = s[s.index("(") + 1 : s.rindex(")")]
        ppid = int(s[s.rindex(")") + 2 :].split()[1])
        table[int(d)] = (ppid, comm)
    return table


def descendants(root: int, table=None) -> list[tuple[int, str]]:
    table = table or proc_table()
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append((c, table[c][1]))
            todo.append(c)
    return out


def mem_of(pid: int) -> dict:
    """VmRSS and Pss (KiB) and thread count of one process."""
    st = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"^VmRSS:\s+(\d+)", st, re.M).group(1))
    threads = int(re.search(r"^Threads:\s+(\d+)", st, re.M).group(1))
    pss = int(re.search(r"^Pss:\s+(\d+)", Path(f"/proc/{pid}/smaps_rollup").read_text(), re.M).group(1))
    return {"rss": rss, "pss": pss, "threads": threads}


class Namespace:
    """`unshare --pid --fork --mount-proc ARGV`: ARGV is PID 1 of a new namespace."""

    def __init__(self, argv: list[str], work: Path, tag: str, env: dict | None = None):
        self.tag = tag
        self.work = work
        self.stdout = open(work / f"{tag}.stdout", "wb")
        self.stderr = open(work / f"{tag}.stderr", "wb")
        self.argv = argv
        self.p = subprocess.Popen(
            NS + argv, stdout=self.stdout, stderr=self.stderr, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=work, env=env,
        )
        self._init = None

    def init(self, timeout: float = 5.0) -> int:
        """Host pid of the namespace's PID 1 (unshare's only child)."""
        deadline = time.monotonic() + timeout
        while self._init is None:
            for pid, (ppid, _) in proc_table().items():
                if ppid == self.p.pid:
                    self._init = pid
                    break
            else:
                if self.p.poll() is not None or time.monotonic() > deadline:
                    raise ScenarioError(f"{self.tag}: no PID 1 appeared ({self.why()})")
                time.sleep(0.005)
        return self._init

    def why(self) -> str:
        self.stderr.flush()
        err = (self.work / f"{self.tag}.stderr").read_text(errors="replace").strip().splitlines()
        return f"cmd {shlex.join(self.argv)}; exit {self.p.poll()}; stderr: {' / '.join(err[-5:])}"

    def kill(self) -> None:
        if self.p.poll() is None:
            if self._init:
                try:
                    # SIGKILL to a namespace's init kills the whole namespace.
                    os.kill(self._init, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            log(f"{self.tag}: unshare {self.p.pid} did not exit after SIGKILL")
        self.stdout.close()
        self.stderr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()


def wait_for(pred, timeout: float, what: str, ns: Namespace | None = None, step: float = 0.002):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise ScenarioError(f"timed out after {timeout}s waiting for {what}" + (f" ({ns.why()})" if ns else ""))
        if ns is not None and ns.p.poll() is not None:
            raise ScenarioError(f"supervisor exited while waiting for {what} ({ns.why()})")
        time.sleep(step)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def read_stamps(path: Path) -> dict[str, int]:
    """label -> first CLOCK_REALTIME ns stamped with it."""
    out = {}
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2:
                out.setdefault(parts[0], int(parts[1]))
    return out


# ---------------------------------------------------------------- peers

def sigterm_until_gone(target: int, pids: list) -> tuple:
    """SIGTERM to `target`; waits (pidfds, up to 15 s) until it and `pids` have exited.
    Returns the CLOCK_REALTIME ns of the kill and {pid: ns it was seen gone}."""
    fds = {os.pidfd_open(pid): pid for pid in [target] + pids}
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    gone = {}
    t0 = time.time_ns()
    os.kill(target, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while len(gone) < len(fds) and time.monotonic() < deadline:
        for fd, _ in poller.poll(100):
            gone[fds[fd]] = time.time_ns()
            poller.unregister(fd)
    for fd in fds:
        os.close(fd)
    if len(gone) < len(fds):
        raise ScenarioError(f"not everything exited within 15 s of SIGTERM ({len(gone)}/{len(fds)})")
    return t0, gone


class Bench:
    def __init__(self, args):
        self.args = args
        self.short = args.short
        self.work = Path(tempfile.mkdtemp(prefix="hivesup-bench."))
        self.hivesup = str(Path(args.hivesup).resolve())
        self.baseline = str(Path(args.baseline).resolve()) if getattr(args, "baseline", None) else None
        self.helper = str(self.work / "bin" / "helper")
        (self.work / "bin").mkdir()
        subprocess.run(["gcc", "-O2", "-Wall", "-o", self.helper, str(ROOT / "benches" / "helper.c")], check=True)
        self.seq = 0
        self.phase: dict[str, int] = {}

    def fresh(self, tag: str) -> Path:
        self.seq += 1
        d = self.work / f"{self.seq:03d}-{tag.replace(' --', '-init')}"
        d.mkdir()
        return d

    def build(self, peer: str, progs: list[dict], d: Path, http_port: int | None = None,
              shutdown_timeout: str = "9s") -> list[str]:
        """The PID-1 argv that makes `peer` run `progs`, each configured as well as the peer
        allows. A prog: name, argv (list, or callable(peer) -> list), priority, stop_timeout
        (seconds), ready (None | ("tcp", port) | "notify")."""
        argv_of = lambda p: p["argv"](peer) if callable(p["argv"]) else p["argv"]
        if peer in HIVESUPS:
            lines = ["[supervisor]", f'health_addr = "{f"127.0.0.1:{http_port}" if http_port else ""}"',
                     f'shutdown_timeout = "{shutdown_timeout}"', ""]
            for p in progs:
                lines += [f"[programs.{p['name']}]", f"command = {json.dumps(argv_of(p))}",
                          f"priority = {p.get('priority', 100)}", 'restart = "always"']
                if p.get("stop_timeout") is not None:
                    lines.append(f'stop_timeout = "{int(p["stop_timeout"] * 1000)}ms"')
                r = p.get("ready")
                if r == "notify":
                    lines += [f"[programs.{p['name']}.ready]", "notify = true", 'timeout = "20s"']
                elif r:
                    lines += [f"[programs.{p['name']}.ready]", f'tcp = "127.0.0.1:{r[1]}"',
                              'interval = "100ms"', 'timeout = "20s"']
                lines.append("")
            (d / "hivesup.toml").write_text("\n".join(lines))
            return [self.hivesup if peer == "hivesup" else self.baseline, "--config", str(d / "hivesup.toml")]
        if peer == "supervisord":
            lines = ["[supervisord]", "nodaemon=true", f"logfile={d}/supervisord.log",
                     f"pidfile={d}/supervisord.pid", f"childlogdir={d}", "user=root", "loglevel=info", "",
                     "[rpcinterface:supervisor]",
                     "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface", ""]
            if http_port:
                lines += ["[inet_http_server]", f"port=127.0.0.1:{http_port}", ""]
            for p in progs:
                lines += [f"[program:{p['name']}]", f"command={shlex.join(argv_of(p))}",
                          f"priority={p.get('priority', 100)}", "autostart=true", "autorestart=true",
                          "startsecs=1", "stopsignal=TERM",
                          f"stopwaitsecs={p['stop_timeout'] if p.get('stop_timeout') is not None else 10}",
                          "stopasgroup=true", "killasgroup=true",
                          f"stdout_logfile={d}/{p['name']}.out", f"stderr_logfile={d}/{p['name']}.err", ""]
            (d / "supervisord.conf").write_text("\n".join(lines))
            return ["supervisord", "-n", "-c", str(d / "supervisord.conf")]
        if peer == "s6":
            scan = d / "scan"
            scan.mkdir()
            ready_below = [p for p in progs if p.get("ready")]
            for p in progs:
                sd = scan / p["name"]
                sd.mkdir()
                argv = argv_of(p)
                if argv[0] == self.helper:
                    argv = argv[1:]
                else:
                    argv = ["exec"] + argv
                r = p.get("ready")
                if r and r != "notify":
                    # Composed polling readiness: s6-notifyoncheck runs ./data/check every 100 ms.
                    (sd / "data").mkdir()
                    (sd / "data" / "check").write_text(f"#!/bin/sh\nexec {self.helper} tcpcheck {r[1]}\n")
                    (sd / "data" / "check").chmod(0o755)
                    argv = ["exec", "s6-notifyoncheck", "-w", "100", "-n", "0", self.helper] + argv
                if r:
                    (sd / "notification-fd").write_text("3\n")
                if p.get("stop_timeout") is not None:
                    (sd / "timeout-kill").write_text(f"{int(p['stop_timeout'] * 1000)}\n")
                waits = [q for q in ready_below if q.get("priority", 100) < p.get("priority", 100)]
                if waits:
                    # s6 has no priorities: B's run script waits until A is up and ready.
                    w = "\n".join(f"s6-svwait -U {scan / q['name']} || exit 1" for q in waits)
                    (sd / "run").write_text(f"#!/bin/sh\n{w}\nexec {self.helper} {shlex.join(argv)}\n")
                    (sd / "run").chmod(0o755)
                else:
                    (sd / "run.argv").write_text("\n".join(argv) + "\n")
                    (sd / "run").symlink_to(self.helper)
            return ["s6-svscan", str(scan)]
        if peer in ("tini", "dumb-init", "hivesup --"):
            for p in progs:
                if p.get("ready"):
                    raise CannotExpress("one child, no readiness")
                if p.get("stop_timeout") is not None:
                    raise CannotExpress("no stop timeout: it forwards the signal and waits")
            if len(progs) == 1:
                child = argv_of(progs[0])
            elif peer == "hivesup --":
                raise CannotExpress("init mode runs one child (use the config)")
            else:
                # Two programs as one child: sh starts A and execs into B; one process group.
                child = ["sh", "-c", " & ".join(shlex.join(argv_of(p)) for p in progs[:-1])
                         + " & exec " + shlex.join(argv_of(progs[-1]))]
            if peer == "tini":
                return ["tini", "-g", "--"] + child
            if peer == "dumb-init":
                return ["dumb-init", "--"] + child
            return [self.hivesup, "--"] + child
        raise ValueError(peer)

    def wait_up(self, ns: Namespace, peer: str, nprogs: int, http_port: int | None,
                comms=("sleep", "helper", "run")) -> list[int]:
        """Waits until the programs run (and, for hivesup with HTTP, /health says 200);
        returns their host pids."""
        init = ns.init()
        def progs():
            got = [pid for pid, c in descendants(init) if c in comms]
            return got if len(got) >= nprogs else None
        pids = wait_for(progs, 15, f"{nprogs} programs", ns, step=0.01)
        if peer in HIVESUPS and http_port:
            wait_for(lambda: http_status(f"http://127.0.0.1:{http_port}/health") == 200, 15, "/health 200", ns, step=0.02)
        return pids

    # ------------------------------------------------------------ scenario 1: idle memory

    def s1_memory(self, peer: str) -> dict:
        d = self.fresh(f"mem-{peer}")
        port = free_port()
        progs = [{"name": "a", "argv": ["sleep", "infinity"]}, {"name": "b", "argv": ["sleep", "infinity"]}]
        http = peer in HIVESUPS + ("supervisord",)
        argv = self.build(peer, progs, d, port if http else None)
        with Namespace(argv, d, peer) as ns:
            self.wait_up(ns, peer, 2, port if http else None)
            time.sleep(1.2)  # past startsecs / settle_time: every peer is in its steady state
            if http:
                # One request, as Docker's HEALTHCHECK would make, so the HTTP path is paged in.
                http_status(f"http://127.0.0.1:{port}/health" if peer in HIVESUPS else f"http://127.0.0.1:{port}/")
            time.sleep(1.0)
            init = ns.init()
            procs = [init] + [pid for pid, c in descendants(init) if c in ("s6-supervise",)]
            m = [mem_of(p) for p in procs]
        return {"rss_mib": sum(x["rss"] for x in m) / 1024, "pss_mib": sum(x["pss"] for x in m) / 1024,
                "procs": len(procs), "threads": sum(x["threads"] for x in m)}

    # ------------------------------------------------------------ scenario 2: zombies

    def s2_zombies(self, peer: str) -> dict:
        n = self.args.orphans
        cap_s = self.args.zombie_cap if peer == "supervisord" else 30
        d = self.fresh(f"zombies-{peer}")
        res = d / "zombies.result"
        progs = [{"name": "z", "argv": [self.helper, "zombies", str(n), str(res), str(int(cap_s * 1000))]}]
        argv = self.build(peer, progs, d)
        with Namespace(argv, d, peer) as ns:
            ns.init()
            wait_for(lambda: res.exists() and res.read_text().endswith("\n"), cap_s + 60, "the orphan report", ns, step=0.05)
        r = {k: int(v) for k, v in (kv.split("=") for kv in res.read_text().split())}
        if r["made"] < n:
            raise ScenarioError(f"only {r['made']} of {n} orphans could be forked")
        out = {"peak_zombies": r["peak"], "release_to_last_exit_ms": (r["last_exit_ns"] - r["release_ns"]) / 1e6}
        if r["left"]:
            out["reaped_after_last_exit_ms"] = None
            out["note"] = f"{r['left']} of {n} still unreaped after the {cap_s:g} s cap"
            out["lower_bound_ms"] = (r["end_ns"] - r["last_exit_ns"]) / 1e6
        else:
            out["reaped_after_last_exit_ms"] = (r["gone_ns"] - r["last_exit_ns"]) / 1e6
        return out

    # ------------------------------------------------------------ scenario 3: shutdown

    def s3_shutdown(self, peer: str, stubborn: bool) -> dict:
        d = self.fresh(f"stop-{'kill' if stubborn else 'term'}-{peer}")
        progs = [{"name": "a", "argv": ["sleep", "infinity"]}]
        if stubborn:
            progs.append({"name": "b", "argv": [self.helper, "ignore-term"], "stop_timeout": 2})
        else:
            progs.append({"name": "b", "argv": ["sleep", "infinity"]})
        argv = self.build(peer, progs, d)
        with Namespace(argv, d, peer) as ns:
            pids = self.wait_up(ns, peer, 2, None)
            time.sleep(1.2)  # every peer past its start-up (supervisord: startsecs=1 -> RUNNING)
            init = ns.init()
            table = proc_table()
            # The helper's comm is "run" under s6 (its run file is a symlink to the helper).
            stub = [p for p in pids if table.get(p, (0, ""))[1] in ("helper", "run")]
            t0, gone = sigterm_until_gone(init, pids)
            ns.p.wait(5)  # unshare passes on its child's exit code
        out = {"all_gone_ms": (max(gone.values()) - t0) / 1e6, "supervisor_gone_ms": (gone[init] - t0) / 1e6,
               "supervisor_exit_code": ns.p.returncode}
        if stubborn:
            out["stubborn_killed_ms"] = (gone[stub[0]] - t0) / 1e6
        return out

    def s3_crowd(self, peer: str) -> dict:
        """Cooperative SIGTERM with the supervisor not PID 1 but beside `crowd` idle
        processes that are none of its business (a subreaper on a busy host)."""
        n = self.args.crowd
        d = self.fresh(f"stop-crowd-{peer}")
        progs = [{"name": "a", "argv": ["sleep", "infinity"]}, {"name": "b", "argv": ["sleep", "infinity"]}]
        argv = self.build(peer, progs, d)
        if peer == "tini":
            argv = ["tini", "-s"] + argv[1:]  # not PID 1: reap as a subreaper
        crowded = d / "crowd.started"
        with Namespace([self.helper, "crowd", str(n), str(crowded)] + argv, d, peer) as ns:
            init = ns.init()
            wait_for(crowded.exists, 30, f"{n} bystanders", ns, step=0.01)
            def supervisor():
                kids = [pid for pid, (ppid, c) in proc_table().items()
                        if ppid == init and c not in ("bystander", "helper")]
                return kids[0] if kids else None
            sup = wait_for(supervisor, 15, "the supervisor", ns, step=0.01)
            pids = wait_for(lambda: (lambda p: p if len(p) >= 2 else None)(
                [pid for pid, c in descendants(sup) if c == "sleep"]), 15, "2 programs", ns, step=0.01)
            time.sleep(1.2)  # every peer past its start-up, as in the plain scenario
            t0, gone = sigterm_until_gone(sup, pids)
        return {"all_gone_ms": (max(gone.values()) - t0) / 1e6}

    # ------------------------------------------------------------ scenario 4: readiness gate

    def s4_ready(self, peer: str, how: str) -> dict:
        d = self.fresh(f"ready-{how.replace(', ', '-')}-{peer}")
        port = free_port()
        st = d / "stamps"
        if how == "notify" and peer == "supervisord":
            raise CannotExpress("no readiness protocol")
        delay = 1500
        if how == "poll, spread":
            # 1.5 s is a multiple of the 100 ms interval, so with a fixed delay every run
            # lands at the same phase of the probe schedule. Here run k listens at
            # 1500 + (37 k mod 100) ms: 0, 37, 74, 11, 48, ... the same phases for every peer.
            k = self.phase.get(peer, 0)
            self.phase[peer] = k + 1
            delay += (37 * k) % 100
        def a_argv(pr):
            mode = {"hivesup": "notify", "baseline": "notify", "s6": "fd3"}.get(pr, "") if how == "notify" else ""
            return [self.helper, "listen-after", str(delay), str(port), str(st)] + ([mode] if mode else [])
        progs = [{"name": "a", "argv": a_argv, "priority": 100,
                  "ready": "notify" if how == "notify" else ("tcp", port)},
                 {"name": "b", "argv": [self.helper, "stamp", str(st), "b_exec", "sleep", "infinity"], "priority": 200}]
        if peer == "supervisord":
            progs[0]["ready"] = None  # priority is all supervisord has: it orders spawning only
        argv = self.build(peer, progs, d)
        with Namespace(argv, d, peer) as ns:
            ns.init()
            s = wait_for(lambda: (lambda x: x if "a_listen" in x and "b_exec" in x else None)(read_stamps(st)),
                         15, "a_listen and b_exec stamps", ns, step=0.01)
        return {"gate_ms": (s["b_exec"] - s["a_listen"]) / 1e6}

    # ------------------------------------------------------------ scenario 5: start

    def s5_start(self, peer: str) -> dict:
        d = self.fresh(f"start-{peer}")
        st = d / "stamps"
        progs = [{"name": n, "argv": [self.helper, "stamp", str(st), f"prog_{n}", "sleep", "infinity"]} for n in ("a", "b")]
        if peer == "floor":
            argv = [self.helper, "forkexec"] + progs[0]["argv"]
        else:
            argv = self.build(peer, progs if peer not in ("hivesup --",) else progs[:1], d)
        argv = [self.helper, "stamp", str(st), "sup_exec"] + argv
        with Namespace(argv, d, peer) as ns:
            ns.init()
            s = wait_for(lambda: (lambda x: x if "sup_exec" in x and any(k.startswith("prog_") for k in x) else None)(read_stamps(st)),
                         15, "sup_exec and a program's stamp", ns, step=0.01)
        first = min(v for k, v in s.items() if k.startswith("prog_"))
        return {"first_exec_ms": (first - s["sup_exec"]) / 1e6}

    # ------------------------------------------------------------ scenario 6: /health under load

    def s6_load(self, conns: int, peer: str = "hivesup") -> dict:
        d = self.fresh(f"load-{conns}")
        port = free_port()
        progs = [{"name": "a", "argv": ["sleep", "infinity"]}, {"name": "b", "argv": ["sleep", "infinity"]}]
        argv = self.build(peer, progs, d, port)
        with Namespace(argv, d, peer) as ns:
            pids = sorted(self.wait_up(ns, peer, 2, port))
            init = ns.init()
            before = mem_of(init)["rss"]
            peak = [before]
            stop = threading.Event()
            def sample():
                while not stop.wait(0.25):
                    try:
                        peak.append(mem_of(init)["rss"])
                    except (OSError, AttributeError):
                        pass
            t = threading.Thread(target=sample)
            t.start()
            dur = self.args.wrk_seconds
            w = subprocess.run(["wrk", "-t", str(min(2, conns)), "-c", str(conns), "-d", f"{dur}s", "--latency",
                                f"http://127.0.0.1:{port}/health"], capture_output=True, text=True, timeout=dur + 30)
            stop.set()
            t.join()
            time.sleep(1.0)
            after = mem_of(init)["rss"]
            still = sorted(pid for pid, c in descendants(init) if c == "sleep")
        if w.returncode != 0:
            raise ScenarioError(f"wrk failed: {w.stderr.strip()}")
        o = w.stdout
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", o).group(1))
        def lat(pct):
            m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\b", o, re.M)
            return float(m.group(1)) * {"us": 1e-3, "ms": 1, "s": 1e3}[m.group(2)]
        non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", o)
        errs = re.search(r"Socket errors:.*", o)
        return {"rps": rps, "p50_ms": lat(50), "p99_ms": lat(99), "rss_during_mib": max(peak) / 1024,
                "rss_after_mib": after / 1024, "rss_before_mib": before / 1024,
                "programs_untouched": still == pids, "non2xx": int(non2xx.group(1)) if non2xx else 0,
                "socket_errors": errs.group(0) if errs else ""}


# ---------------------------------------------------------------- running and the table


def stats(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def fmt(v: float, unit: str) -> str:
    if unit == "ms":
        return f"{v:.3f} ms" if v < 10 else (f"{v:.1f} ms" if v < 1000 else f"{v / 1000:.3f} s")
    if unit == "MiB":
        return f"{v:.2f} MiB"
    if unit == "req/s":
        return f"{v:,.0f}"
    if unit == "MB":
        return f"{v:.2f} MB"
    return f"{v:g}"


class Table:
    def __init__(self):
        self.rows = []  # (scenario, figure, peer, values|None, unit, note)
        self.failed = []

    def add(self, scenario, figure, peer, values, unit, note=""):
        self.rows.append((scenario, figure, peer, values, unit, note))

    def render(self) -> str:
        out = ["| scenario | figure | peer | median | min | max | n | hivesup ÷ peer | notes |",
               "|---|---|---|---|---|---|---|---|---|"]
        hv = {}
        for sc, fig, peer, vals, unit, _ in self.rows:
            if peer == "hivesup" and vals:
                hv[(sc, fig)] = statistics.median(vals)
        # In scenario order, whatever order they ran in (the orphans run late).
        for sc, fig, peer, vals, unit, note in sorted(self.rows, key=lambda r: r[0].split()[0]):
            if not vals:
                if note:  # figures a run did not produce (nothing was capped, say) are left out
                    out.append(f"| {sc} | {fig} | {peer} | – | – | – | 0 | – | {note} |")
                continue
            med, lo, hi = stats(vals)
            ratio = "–"
            h = hv.get((sc, fig))
            # A ratio to a negative delay (B started before A was ready) means nothing.
            if peer != "hivesup" and h is not None and med > 0 and h >= 0:
                ratio = f"{h / med:.3g}×"
            out.append(f"| {sc} | {fig} | {peer} | {fmt(med, unit)} | {fmt(lo, unit)} | {fmt(hi, unit)} | {len(vals)} | {ratio} | {note} |")
        return "\n".join(out)


# Issue 4's targets for hivesup (medians). Printed as met/missed next to the table; never
# asserted: the machine is shared and the harness must not fail on a slow run.
TARGETS = [
    ("0 binary", "hivesup binary (release profile, strip = true)", "<=", 6, "stripped binary ≤ 6 MB"),
    ("1 idle, 2 programs", "RSS, supervisor + helpers", "<=", 3, "idle RSS, 2 programs + HTTP ≤ 3 MiB"),
    ("1 idle, 2 programs", "processes (supervisor + helpers)", "<=", 1, "one process"),
    ("2 zombies", "last orphan exit → 0 zombies (10000)", "<", 1, "10,000 orphans: 0 zombies < 1 ms after the last exits"),
    ("3 SIGTERM, cooperative", "SIGTERM → supervisor and both programs gone", "<=", 5, "SIGTERM → all gone ≤ 5 ms"),
    ("3 SIGTERM, one ignores it (2 s stop timeout)", "SIGTERM → everything gone", "<=", 2010,
     "SIGKILL after a 2 s stop timeout, all gone ≤ 2.010 s"),
    ("5 start", "exec of supervisor → first program exec", "<=", 3, "exec → first program ≤ 3 ms"),
    ("4 readiness gate, poll", "A listen() → B exec, 100 ms TCP poll, A listens at 1.5 s", "<=", 60,
     "readiness gate, 100 ms poll ≤ 60 ms (A at 1.5 s)"),
    ("4 readiness gate, poll, spread", "A listen() → B exec, 100 ms TCP poll, A listens at 1.5 s + 0..99 ms", "<=", 60,
     "readiness gate, 100 ms poll ≤ 60 ms (phases spread)"),
    ("4 readiness gate, poll", "A listen() → B exec, 100 ms TCP poll, A listens at 1.5 s", "min>=", 0,
     "readiness gate: never early (min ≥ 0)"),
    ("4 readiness gate, notify", "A READY=1 → B exec (sd_notify; s6: notification-fd)", "<=", 2, "readiness gate, sd_notify ≤ 2 ms"),
    ("6 /health, 64 conn", "requests/s", ">=", 20000, "/health, 64 connections ≥ 20,000 req/s"),
    ("6 /health, 64 conn", "p99 latency", "<=", 2, "/health, 64 connections: p99 ≤ 2 ms"),
    ("7 containers", "docker run → Docker `healthy`, cold (interval 500 ms)", "<", 8000, "cold start → healthy < 8 s"),
    ("7 containers", "docker start → Docker `healthy`, warm (interval 500 ms)", "<", 3000, "warm start → healthy < 3 s"),
]


def render_targets(table: Table) -> str:
    out = ["| target (issue 4) | hivesup | met |", "|---|---|---|"]
    for sc, fig, op, limit, label in TARGETS:
        row = next((r for r in table.rows if r[0] == sc and r[1] == fig and r[2] == "hivesup"), None)
        if row is None:
            continue
        vals, unit = row[3], row[4]
        if not vals:
            out.append(f"| {label} | – | not measured: {row[5]} |")
            continue
        med = statistics.median(vals)
        v = min(vals) if op == "min>=" else med
        ok = {"<=": v <= limit, "<": v < limit, ">=": v >= limit, "min>=": v >= limit}[op]
        shown = f"min {fmt(v, unit)}" if op == "min>=" else f"median {fmt(v, unit)}"
        out.append(f"| {label} | {shown} | {'yes' if ok else 'no'} |")
    return "\n".join(out)


def repeat(table: Table, reps: int, scenario: str, peer: str, fn, figures: list[tuple[str, str, str]], note_fn=None):
    """Runs fn() reps times; figures: (key in fn's dict, figure label, unit)."""
    vals = {k: [] for k, _, _ in figures}
    notes = []
    try:
        for i in range(reps):
            r = fn()
            for k, _, _ in figures:
                if r.get(k) is not None:
                    vals[k].append(r[k])
            if r.get("note"):
                notes.append(r["note"])
            if note_fn:
                n = note_fn(r)
                if n:
                    notes.append(n)
    except CannotExpress as e:
        for _, label, unit in figures:
            table.add(scenario, label, peer, None, unit, f"cannot: {e}")
        return
    except (ScenarioError, subprocess.SubprocessError, OSError) as e:
        log(f"{scenario} / {peer}: FAILED: {e}")
        table.failed.append(f"{scenario} / {peer}: {e}")
        for _, label, unit in figures:
            table.add(scenario, label, peer, None, unit, f"failed: {str(e)[:160]}")
        return
    note = "; ".join(sorted(set(notes)))
    for k, label, unit in figures:
        table.add(scenario, label, peer, vals[k], unit, note if vals[k] else "")


def interrupted(signum, frame):
    # SIGTERM (a CI timeout, make being stopped) unwinds like Ctrl-C, so every `with
    # Namespace` kills the namespace it started on the way out.
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    signal.signal(signal.SIGTERM, interrupted)
    return run_all()


def run_all() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--short", action="store_true", help="fewer repetitions, no containers, capped supervisord orphans")
    ap.add_argument("--hivesup", default=os.environ.get("HIVESUP", str(ROOT / "target" / "release" / "hivesup")))
    ap.add_argument("--out", default=None, help="directory for table.md and results.json")
    ap.add_argument("--only", default="", help="comma-separated scenarios: 1,2,3,4,5,6,7,size")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--peers", default="", help="comma-separated peers to run (default all): " + ",".join(PEERS + ["floor"]))
    ap.add_argument("--baseline", default=None,
                    help="another hivesup binary to run as peer \"baseline\" (before/after comparisons)")
    ap.add_argument("--crowd", type=int, default=2000, help="bystander processes in scenario 3's crowded variant")
    ap.add_argument("--images-src", default=str(ROOT),
                    help="checkout whose images/ the supervisord comparison image is built from (default: this one)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs, stamps)")
    a = ap.parse_args()
    a.reps = a.reps or (2 if a.short else 5)
    a.orphans = 10000
    a.zombie_cap = 20 if a.short else 150
    a.wrk_seconds = 3 if a.short else 10
    only = set(a.only.split(",")) if a.only else {"size", "1", "2", "3", "4", "5", "6", "7"}
    if a.baseline and not Path(a.baseline).is_file():
        print(f"bench: --baseline {a.baseline} not found", file=sys.stderr)
        return 2
    if not Path(a.hivesup).is_file():
        print(f"bench: {a.hivesup} not found: run `cargo build --release` first", file=sys.stderr)
        return 2
    for tool in ("unshare", "gcc", "supervisord", "s6-svscan", "tini", "dumb-init", "wrk"):
        if not shutil.which(tool):
            print(f"bench: {tool} not found: run `bash .ci/bench-deps.sh`", file=sys.stderr)
            return 2

    b = Bench(a)
    try:
        return run_scenarios(a, b, only)
    finally:
        if a.keep:
            log(f"kept {b.work}")
        else:
            shutil.rmtree(b.work, ignore_errors=True)


def run_scenarios(a, b: "Bench", only: set) -> int:
    wanted = set(a.peers.split(",")) if a.peers else None
    def peers(names: list[str]) -> list[str]:
        if a.baseline and "hivesup" in names:
            names = ["hivesup", "baseline"] + names[1:]
        return [n for n in names if wanted is None or n in wanted]
    t = Table()
    started = time.monotonic()
    load_start = os.getloadavg()
    reps = a.reps
    log(f"work dir {b.work}; {reps} repetitions per scenario; {'short' if a.short else 'full'} form")

    if "size" in only:
        size = Path(a.hivesup).stat().st_size / 1e6
        t.add("0 binary", "hivesup binary (release profile, strip = true)", "hivesup", [size], "MB")

    if "1" in only:
        log("scenario 1: idle memory")
        for peer in peers(["hivesup", "supervisord", "s6", "tini", "dumb-init"]):
            repeat(t, reps, "1 idle, 2 programs", peer, lambda: b.s1_memory(peer),
                   [("rss_mib", "RSS, supervisor + helpers", "MiB"), ("pss_mib", "PSS, supervisor + helpers", "MiB"),
                    ("procs", "processes (supervisor + helpers)", "")],
                   note_fn=lambda r, peer=peer: {"hivesup": "HTTP /health on", "baseline": "HTTP /health on",
                                                 "supervisord": "inet_http_server on",
                                                 "s6": "s6-svscan + one s6-supervise per program; no HTTP",
                                                 "tini": "one child (sh execs into B, A in the background); no HTTP",
                                                 "dumb-init": "one child (as tini); no HTTP"}[peer]
                   + f"; {r['threads']} threads")

    if "3" in only:
        log("scenario 3: shutdown")
        for peer in peers(["hivesup", "supervisord", "s6", "tini", "dumb-init"]):
            repeat(t, reps, "3 SIGTERM, cooperative", peer, lambda: b.s3_shutdown(peer, False),
                   [("all_gone_ms", "SIGTERM → supervisor and both programs gone", "ms")],
                   note_fn=lambda r: f"exit code {r['supervisor_exit_code']}")
        for peer in peers(["hivesup", "supervisord", "s6", "tini", "dumb-init"]):
            repeat(t, reps, f"3 SIGTERM, cooperative, not PID 1, {a.crowd:,} other processes", peer,
                   lambda: b.s3_crowd(peer),
                   [("all_gone_ms", "SIGTERM → supervisor and both programs gone", "ms")],
                   note_fn=lambda r, peer=peer: "tini -s (subreaper)" if peer == "tini" else "")
        for peer in peers(["hivesup", "supervisord", "s6", "tini", "dumb-init"]):
            repeat(t, reps, "3 SIGTERM, one ignores it (2 s stop timeout)", peer, lambda: b.s3_shutdown(peer, True),
                   [("stubborn_killed_ms", "SIGTERM → stubborn program SIGKILLed", "ms"),
                    ("all_gone_ms", "SIGTERM → everything gone", "ms")],
                   note_fn=lambda r: f"exit code {r['supervisor_exit_code']}")

    if "4" in only:
        log("scenario 4: readiness gate")
        for how in ("poll", "poll, spread", "notify"):
            for peer in peers(["hivesup", "supervisord", "s6", "tini", "dumb-init"]):
                label = {"poll": "A listen() → B exec, 100 ms TCP poll, A listens at 1.5 s",
                         "poll, spread": "A listen() → B exec, 100 ms TCP poll, A listens at 1.5 s + 0..99 ms",
                         "notify": "A READY=1 → B exec (sd_notify; s6: notification-fd)"}[how]
                repeat(t, reps, f"4 readiness gate, {how}", peer, lambda: b.s4_ready(peer, how),
                       [("gate_ms", label, "ms")],
                       note_fn=lambda r: "B started BEFORE A was ready" if r["gate_ms"] < 0 else "")

    if "5" in only:
        log("scenario 5: start")
        for peer in peers(["hivesup", "hivesup --", "supervisord", "s6", "tini", "dumb-init", "floor"]):
            repeat(t, reps, "5 start", peer, lambda: b.s5_start(peer),
                   [("first_exec_ms", "exec of supervisor → first program exec", "ms")],
                   note_fn=lambda r, peer=peer: "floor: a 20-line C fork+exec" if peer == "floor" else "")

    if "6" in only:
        log("scenario 6: /health under load")
        for c, peer in ((c, p) for c in (1, 64, 256) for p in peers(["hivesup"])):
            repeat(t, reps, f"6 /health, {c} conn", peer, lambda: b.s6_load(c, peer),
                   [("rps", "requests/s", "req/s"), ("p50_ms", "p50 latency", "ms"), ("p99_ms", "p99 latency", "ms"),
                    ("rss_during_mib", "hivesup RSS during (peak)", "MiB"), ("rss_after_mib", "hivesup RSS 1 s after", "MiB")],
                   note_fn=lambda r: ("programs untouched" if r["programs_untouched"] else "PROGRAMS CHANGED")
                   + (f"; {r['non2xx']} non-2xx" if r["non2xx"] else "") + (f"; {r['socket_errors']}" if r["socket_errors"] else "")
                   + f"; wrk {a.wrk_seconds} s, 2 threads on the same 2 cores")
        for peer, why in (("supervisord", "no health endpoint (its HTTP server is XML-RPC)"), ("s6", "no HTTP server"),
                          ("tini", "no HTTP server"), ("dumb-init", "no HTTP server")):
            if peers([peer]):
                t.add("6 /health, 1/64/256 conn", "requests/s, latency", peer, None, "", f"cannot: {why}")

    # The orphans run after the other scenarios: 10,000 processes exiting at once leave
    # the kernel busy for a while after, which showed in whatever ran next.
    if "2" in only:
        log(f"scenario 2: {a.orphans} orphans as PID 1")
        for peer in peers(["hivesup", "hivesup --", "supervisord", "s6", "tini", "dumb-init"]):
            n = reps if peer != "supervisord" else (1 if a.short else reps)
            repeat(t, n, "2 zombies", peer, lambda: b.s2_zombies(peer),
                   [("reaped_after_last_exit_ms", f"last orphan exit → 0 zombies ({a.orphans})", "ms"),
                    ("lower_bound_ms", "still zombies at the cap: last exit → cap", "ms"),
                    ("peak_zombies", "peak zombies", ""),
                    ("release_to_last_exit_ms", "release → last orphan exit (kernel)", "ms")])

    if "7" in only:
        log("scenario 7: containers")
        if a.short:
            t.add("7 containers", "all figures", "hivesup", None, "", "skipped in the short form")
        else:
            sys.dont_write_bytecode = True  # no __pycache__ in the work tree
            sys.path.insert(0, str(ROOT / "benches"))
            import containers  # noqa: E402
            containers.run(t, reps, b)

    elapsed = time.monotonic() - started
    uname = platform.uname()
    try:
        cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text()).group(1)
    except (OSError, AttributeError):
        cpu = "?"
    load = os.getloadavg()
    header = (f"hivesup benchmark, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
              f"{'short' if a.short else 'full'} form, {reps} repetitions (median, min, max), {elapsed:.0f} s\n"
              f"machine: {os.cpu_count()} CPUs ({cpu}), {uname.system} {uname.release}, "
              f"load average (1/5/15 min) at the start {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}, "
              f"at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (shared machine: expect noise)\n"
              f"command: python3 benches/bench.py{' --short' if a.short else ''}; hivesup {a.hivesup}"
              f"{f'; baseline {a.baseline}' if a.baseline else ''}\n"
              f"ratio: hivesup's median ÷ the peer's median (below 1: hivesup smaller/faster; for requests/s above 1 is better)\n")
    text = header + "\n" + t.render() + "\n\n" + render_targets(t) + "\n"
    print(text)
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "table.md").write_text(text)
        (out / "results.json").write_text(json.dumps([{"scenario": r[0], "figure": r[1], "peer": r[2], "values": r[3],
                                                       "unit": r[4], "note": r[5]} for r in t.rows], indent=1))
    if t.failed:
        print("scenarios that could not run:\n  " + "\n  ".join(t.failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
