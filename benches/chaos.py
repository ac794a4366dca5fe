#!/usr/bin/env python3
"""Chaos with acked-write accounting (issue 5): the agent image under faults and write load.

A writer thread inserts rows through the reference API (POST /api/v1/vectors, each with a
unique label) and records every insert the API acknowledged (201 + id: the API answers
after the transaction committed). Meanwhile, in rounds picked in turn:

  pg-postmaster  kill -9 the postgres postmaster (hivesup restarts postgres)
  pg-backend     kill -9 a random child of the postmaster (postgres resets itself)
  api-master     kill -9 the API's uvicorn master (hivesup restarts the API)
  api-worker     kill -9 one uvicorn worker (uvicorn replaces it)
  api-sigstop    SIGSTOP the API's process group for longer than its health timeout, SIGCONT
  flood          a supervised program writes megabytes per second to stdout and stderr;
                 meanwhile /livez must answer, writes must be acked, and a kill -9 of the
                 API master must still be noticed and the API restarted
  zombies        100,000 orphans (short form: 10,000) reparented to hivesup, exiting at once
  docker-stop    docker stop + docker start: exit 0, and postgres does no recovery at start
  docker-kill    docker kill (SIGKILL to hivesup) + docker start

After each round the container must be healthy again within --bound seconds (hivesup's
/health 200, the API's health 200, a write acked after the fault, Docker's health
`healthy`, and the round's own condition, e.g. a new postgres pid); every acknowledged row
must be in the table (id and label); no zombie may remain in the container; no process the
round restarted may survive (pid + start time compared before/after). Prints a table and
exits 1 if any invariant failed. Timing is reported, never asserted, except the generous
recovery bound.

Everything it creates (container, volume, temp files) is named hivesup-chaos-* and removed
at the end. Host ports are ephemeral. Python 3 stdlib only; needs the image built
(`make chaos` does that) and a Docker engine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
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
PASSWORD = "chaos-only-password"
CONFIG_IN_CONTAINER = "/etc/hivesup/chaos.toml"
FLOOD_FLAG = "/tmp/chaos-flood"
KINDS = [
    "pg-postmaster",
    "pg-backend",
    "api-master",
    "api-worker",
    "api-sigstop",
    "flood",
    "zombies",
    "docker-stop",
    "docker-kill",
]
# Lines postgres logs when it starts after an unclean shutdown.
RECOVERY_MARKS = ("database system was not properly shut down", "redo starts")

# The flood program: idle until FLOOD_FLAG exists, then writes 1 KiB lines to stdout and
# stderr as fast as the pipes take them (capped at RATE bytes/s), plus one 1 MiB line
# per second, and counts the bytes of the current flood in /tmp/chaos-flood-bytes.
FLOOD_SRC = r"""
import os, sys, time
RATE = 16 << 20
line = (b"flood " * 170)[:1023] + b"\n"
chunk = line * 64
big = b"x" * (1 << 20)
written = 0
while True:
    if not os.path.exists("/tmp/chaos-flood"):
        written = 0  # counts per flood: the bench reads it at the flood's end
        time.sleep(0.2)
        continue
    t0 = time.monotonic()
    sent = 0
    while time.monotonic() - t0 < 1 and sent < RATE:
        os.write(1, chunk)
        os.write(2, chunk)
        sent += 2 * len(chunk)
    os.write(1, big + b"\n")
    written += sent + len(big) + 1
    with open("/tmp/chaos-flood-bytes", "w") as f:
        f.write(str(written))
    left = 1 - (time.monotonic() - t0)
    if left > 0:
        time.sleep(left)
"""

# Runs inside the container: every process as JSON (pid, ppid, sid, state, start time).
PS_SRC = r"""
import json, os
out = []
for d in os.listdir("/proc"):
    if not d.isdigit():
        continue
    try:
        s = open(f"/proc/{d}/stat").read()
        cmd = open(f"/proc/{d}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        continue
    comm = s[s.index("(") + 1 : s.rindex(")")]
    f = s[s.rindex(")") + 2 :].split()
    out.append({"pid": int(d), "comm": comm, "state": f[0], "ppid": int(f[1]), "sid": int(f[3]),
                "start": int(f[19]), "cmd": cmd})
print(json.dumps(out))
"""

# Runs inside the container: waits (up to 20 s) for a client backend of the postmaster
# argv[1] (a child whose command line names the API's database) and kill -9s it.
KILL_CLIENT_SRC = r"""
import os, signal, sys, time
pm = sys.argv[1]
deadline = time.time() + 20
while time.time() < deadline:
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            s = open(f"/proc/{d}/stat").read()
            cmd = open(f"/proc/{d}/cmdline", "rb").read().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        if s[s.rindex(")") + 2 :].split()[1] == pm and "hive_agent" in cmd:
            try:
                os.kill(int(d), signal.SIGKILL)
            except ProcessLookupError:
                continue
            print(d, cmd)
            sys.exit(0)
"""

# Runs inside the container: N orphans in batches. Each batch: an intermediate process
# forks BATCH children that block on a pipe, then exits; the children are reparented to
# PID 1 (hivesup) and, as the intermediate's exit closes the pipe, all exit at once.
ZOMBIE_SRC = r"""
import os, sys
n, batch = int(sys.argv[1]), int(sys.argv[2])
made = 0
while made < n:
    k = min(batch, n - made)
    mid = os.fork()
    if mid == 0:
        r, w = os.pipe()
        for _ in range(k):
            if os.fork() == 0:
                os.close(w)
                os.read(r, 1)
                os._exit(0)
        os._exit(0)
    os.waitpid(mid, 0)
    made += k
print(made)
"""


def log(msg: str) -> None:
    print(f"chaos: {msg}", file=sys.stderr, flush=True)


def docker(*args, check=True, timeout=120, input=None) -> subprocess.CompletedProcess:
    r = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, input=input)
    if check and r.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])} ... failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    return r


def http(url: str, data: bytes | None = None, timeout: float = 3) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError, ValueError):
        return 0, b""


class Failure(Exception):
    pass


class Container:
    def __init__(self, image: str, name: str):
        self.image, self.name = image, name
        self.api = self.health = None
        self.started_at = None  # docker's clock, RFC 3339, for `docker logs --since`

    def create(self, config: Path) -> None:
        docker(
            "create", "--name", self.name,
            "-v", f"{self.name}:/var/lib/postgresql/data",
            "-p", "127.0.0.1::38886", "-p", "127.0.0.1::38887",
            "-e", f"POSTGRES_PASSWORD={PASSWORD}", "-e", f"HIVESUP_CONFIG={CONFIG_IN_CONTAINER}",
            # The flood round writes ~30 MB/s to the log: keep the json-file log bounded.
            "--log-opt", "max-size=32m", "--log-opt", "max-file=2",
            self.image,
        )  # fmt: skip
        # docker cp, not a bind mount: works whatever filesystem the engine sees.
        docker("cp", str(config), f"{self.name}:{CONFIG_IN_CONTAINER}")

    def start(self) -> None:
        self.api = self.health = None
        self.started_at = time.time()
        docker("start", self.name)
        ports = docker("port", self.name).stdout
        for line in ports.splitlines():
            port, _, addr = line.partition(" -> ")
            if ":" in addr and "." in addr:
                url = "http://" + addr.strip()
                if port.startswith("38886"):
                    self.api = url
                elif port.startswith("38887"):
                    self.health = url
        if not self.api or not self.health:
            raise RuntimeError(f"no host ports for {self.name}: {ports!r}")

    def state(self) -> dict:
        return json.loads(docker("inspect", self.name).stdout)[0]["State"]

    def exec(self, *cmd, check=True, timeout=120, user=None) -> str:
        args = ["exec"] + (["-u", user] if user else []) + [self.name, *cmd]
        return docker(*args, check=check, timeout=timeout).stdout

    def procs(self) -> list[dict]:
        return json.loads(self.exec("python3", "-c", PS_SRC))

    def status(self) -> dict:
        code, body = http(self.health + "/status") if self.health else (0, b"")
        if code != 200:
            return {}
        return json.loads(body)["programs"]

    def psql(self, sql: str) -> str:
        return self.exec("psql", "-h", "/var/run/postgresql", "-U", "postgres", "-d", "hive_agent",
                         "-v", "ON_ERROR_STOP=1", "-AtF", "\t", "-c", sql, timeout=60)  # fmt: skip

    def logs_since(self, since: float) -> str:
        r = docker("logs", "--since", f"{since:.3f}", self.name, check=False, timeout=60)
        return r.stdout + r.stderr

    def remove(self) -> None:
        docker("rm", "-f", "-v", self.name, check=False)
        docker("volume", "rm", "-f", self.name, check=False)


class Writer(threading.Thread):
    """Inserts rows through the API; `acked` maps id -> label for every 201 it got."""

    def __init__(self, c: Container, run: str):
        super().__init__(daemon=True)
        self.c, self.run_id = c, run
        self.acked: dict[int, str] = {}
        self.lock = threading.Lock()
        self.seq = self.errors = 0
        self.last_ack_sent = 0.0  # send time of the newest acked request
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            base = self.c.api
            if not base:
                time.sleep(0.05)
                continue
            self.seq += 1
            label = f"{self.run_id}-{self.seq}"
            body = json.dumps({"label": label, "embedding": [random.random() for _ in range(3)]}).encode()
            sent = time.time()
            code, resp = http(base + "/api/v1/vectors", body, timeout=5)
            if code == 201:
                with self.lock:
                    self.acked[json.loads(resp)["id"]] = label
                    self.last_ack_sent = max(self.last_ack_sent, sent)
            else:
                self.errors += 1
                time.sleep(0.05)

    def snapshot(self) -> dict[int, str]:
        with self.lock:
            return dict(self.acked)


class Round:
    def __init__(self, n: int, kind: str):
        self.n, self.kind = n, kind
        self.recovered = False
        self.time_to_healthy: float | None = None
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.zombies_left = 0
        self.lost = 0
        self.acked = 0

    def fail(self, msg: str) -> None:
        self.problems.append(msg)
        log(f"round {self.n} {self.kind}: FAIL {msg}")


class Chaos:
    def __init__(self, args):
        self.args = args
        tag = f"{os.getpid()}-{secrets.token_hex(3)}"
        self.c = Container(args.image, f"hivesup-chaos-{tag}")
        self.writer = Writer(self.c, tag)
        self.rounds: list[Round] = []
        self.sigstops = 0

    # ------------------------------------------------------------------ helpers

    def program_pid(self, name: str) -> int:
        p = self.c.status().get(name) or {}
        if not p.get("pid"):
            raise Failure(f"program {name} has no pid: {p}")
        return p["pid"]

    def healthy_now(self, since: float, extra) -> bool:
        c = self.c
        if not c.api or not c.health:
            return False
        if http(c.health + "/health")[0] != 200 or http(c.api + "/api/v1/health")[0] != 200:
            return False
        if self.writer.last_ack_sent <= since:
            return False
        if c.state().get("Health", {}).get("Status") != "healthy":
            return False
        return extra is None or extra()

    def wait_healthy(self, r: Round, since: float, extra=None) -> None:
        deadline = since + self.args.bound
        while time.time() < deadline:
            if self.healthy_now(since, extra):
                r.recovered = True
                r.time_to_healthy = time.time() - since
                return
            st = self.c.state()
            if st["Status"] in ("exited", "dead"):
                r.fail(f"container {st['Status']} (exit {st['ExitCode']})")
                return
            time.sleep(0.1)
        r.fail(f"not healthy within {self.args.bound:.0f} s")

    def survivors(self, before: list[dict]) -> list[dict]:
        now = {(p["pid"], p["start"]) for p in self.c.procs()}
        return [p for p in before if (p["pid"], p["start"]) in now]

    def check_survivors(self, r: Round, before: list[dict]) -> None:
        left = self.survivors(before)
        if left:
            r.fail("processes from before the restart survive: " + ", ".join(f"{p['pid']} {p['cmd'][:60]}" for p in left))

    def check_zombies(self, r: Round) -> None:
        # A process that just exited is a zombie until its parent reaps it: only a zombie
        # that stays for 10 s counts.
        deadline = time.time() + 10
        while True:
            z = [p for p in self.c.procs() if p["state"] == "Z"]
            if not z or time.time() > deadline:
                break
            time.sleep(0.2)
        r.zombies_left = len(z)
        if z:
            r.fail(f"{len(z)} zombies remain: " + ", ".join(f"{p['pid']} ({p['comm']}, parent {p['ppid']})" for p in z[:5]))

    def check_rows(self, r: Round) -> None:
        acked = self.writer.snapshot()  # before the query: every one of these committed
        rows = {}
        for line in self.c.psql("SELECT id, label FROM items").splitlines():
            i, _, label = line.partition("\t")
            rows[int(i)] = label
        lost = [i for i, label in acked.items() if rows.get(i) != label]
        r.acked, r.lost = len(acked), len(lost)
        if lost:
            r.fail(f"{len(lost)} acknowledged rows missing or changed, e.g. ids {sorted(lost)[:10]}")

    @staticmethod
    def tree(procs: list[dict], root: int) -> list[dict]:
        """root and all its descendants (by ppid)."""
        kids: dict[int, list[dict]] = {}
        for p in procs:
            kids.setdefault(p["ppid"], []).append(p)
        out, stack = [p for p in procs if p["pid"] == root], [root]
        while stack:
            for child in kids.get(stack.pop(), []):
                out.append(child)
                stack.append(child["pid"])
        return out

    def kill(self, sig: str, pid: int, check: bool = True) -> bool:
        # Not kill(1): procps' kill reads "-35" as a signal even after "--".
        src = "import os, signal, sys; os.kill(int(sys.argv[2]), getattr(signal, 'SIG' + sys.argv[1]))"
        r = docker("exec", self.c.name, "python3", "-c", src, sig, str(pid), check=check)
        return r.returncode == 0

    # ------------------------------------------------------------------ rounds

    def restart_program(self, r: Round, name: str) -> None:
        """kill -9 a program's main process: hivesup must restart it, leaving nothing behind."""
        old = self.program_pid(name)
        procs = self.c.procs()
        before = self.tree(procs, old)
        if self.args.sabotage == "survivor":
            before += [p for p in procs if p["pid"] == 1]  # PID 1 survives every program restart
        t = time.time()
        self.kill("KILL", old)
        self.wait_healthy(r, t, lambda: self.c.status().get(name, {}).get("pid") not in (None, old)
                          and self.c.status()[name]["ready"])  # fmt: skip
        self.check_survivors(r, before)

    def r_pg_postmaster(self, r: Round) -> None:
        self.restart_program(r, "postgres")

    def r_api_master(self, r: Round) -> None:
        self.restart_program(r, "api")

    def r_pg_backend(self, r: Round) -> None:
        pm = self.program_pid("postgres")
        children = [p for p in self.c.procs() if p["ppid"] == pm]
        if random.random() < 0.5:
            # A client backend (one of the API's connections): they live for one request,
            # so a script in the container watches for one and kills it the moment it sees it.
            out = self.c.exec("python3", "-c", KILL_CLIENT_SRC, str(pm), timeout=60).strip()
            if not out:
                raise Failure("no client backend appeared within 20 s")
            t = time.time()  # the kill happened just before the script printed
            pid, _, cmd = out.partition(" ")
            victim = {"pid": int(pid), "cmd": cmd}
        else:
            # Or one of the postmaster's long-lived children (checkpointer, walwriter, ...).
            for _ in range(20):
                children = [p for p in self.c.procs() if p["ppid"] == pm]
                victim = random.choice(children)
                t = time.time()
                if self.kill("KILL", victim["pid"], check=False):
                    break
            else:
                raise Failure("could not kill any child of the postmaster")
        r.notes.append("killed " + victim["cmd"].removeprefix("postgres: ").strip()[:40])
        # postgres answers a crashed child by ending every other child and starting over.
        self.wait_healthy(r, t, lambda: self.program_pid("postgres") == pm)
        self.check_survivors(r, children)

    def api_workers(self, master: int) -> list[dict]:
        return [p for p in self.c.procs() if p["ppid"] == master and "spawn_main" in p["cmd"]]

    def r_api_worker(self, r: Round) -> None:
        master = self.program_pid("api")
        workers = self.api_workers(master)
        victim = random.choice(workers)
        t = time.time()
        self.kill("KILL", victim["pid"])
        # uvicorn's master replaces the worker; hivesup leaves the API alone.
        self.wait_healthy(r, t, lambda: self.program_pid("api") == master and len(self.api_workers(master)) == len(workers))
        self.check_survivors(r, [victim])

    def r_api_sigstop(self, r: Round) -> None:
        master = self.program_pid("api")
        restarts = self.c.status()["api"]["restarts"]
        self.kill("STOP", -master)
        group = [p for p in self.c.procs() if p["sid"] == master]
        if not group or any(p["state"] != "T" for p in group):
            r.fail("SIGSTOP did not stop the API's group: " + ", ".join(f"{p['pid']} {p['state']}" for p in group))
        # Every other SIGSTOP round of the long form outlasts the API's health probe
        # (3 failures, 10 s apart, 3 s timeout): hivesup must then report it unhealthy.
        self.sigstops += 1
        long = not self.args.short and self.sigstops % 2 == 0
        seconds = self.args.long_stop_seconds if long else self.args.stop_seconds
        end, unhealthy = time.time() + seconds, False
        while time.time() < end:  # the fault itself lasts this long
            unhealthy = unhealthy or self.c.status().get("api", {}).get("healthy") is False
            time.sleep(0.5)
        self.kill("CONT", -master)
        r.notes.append(f"stopped {seconds:.0f} s" + (", /health 503 meanwhile" if unhealthy else ""))
        if long and not unhealthy:
            r.fail(f"the API was stopped for {seconds:.0f} s and hivesup never reported it unhealthy")
        # Time to healthy counts from SIGCONT.
        self.wait_healthy(r, time.time())
        st = self.c.status()["api"]
        if st["pid"] != master:
            r.notes.append(f"restarted by hivesup ({st['restarts'] - restarts}x)")

    def flood_bytes(self) -> int:
        return int(self.c.exec("sh", "-c", "cat /tmp/chaos-flood-bytes 2>/dev/null || echo 0"))

    def r_flood(self, r: Round) -> None:
        self.c.exec("rm", "-f", "/tmp/chaos-flood-bytes")
        self.c.exec("touch", FLOOD_FLAG)
        t = time.time()
        livez, worst, acks0 = 0, 0.0, len(self.writer.snapshot())
        try:
            end = t + self.args.flood_seconds
            while time.time() < end:
                t1 = time.time()
                if http(self.c.health + "/livez", timeout=5)[0] != 200:
                    r.fail("/livez did not answer 200 during the flood")
                worst = max(worst, time.time() - t1)
                livez += 1
                time.sleep(0.1)
            acks = len(self.writer.snapshot()) - acks0
            if acks == 0:
                r.fail("no write acknowledged during the flood")
            # hivesup must still supervise: kill the API master, it must come back.
            sub = Round(r.n, "api-master")
            self.restart_program(sub, "api")
            r.problems += sub.problems
        finally:
            self.c.exec("rm", "-f", FLOOD_FLAG)
        mb_s = self.flood_bytes() / (time.time() - t) / 1e6
        if mb_s < 1:
            r.fail(f"the flood wrote only {mb_s:.2f} MB/s")
        r.notes.append(f"{mb_s:.0f} MB/s of output, /livez max {worst * 1000:.0f} ms, {acks} acks, "
                       f"API kill -9 -> ready {sub.time_to_healthy or 0:.1f} s")  # fmt: skip
        # Time to healthy counts from the end of the flood.
        self.wait_healthy(r, time.time())

    def r_zombies(self, r: Round) -> None:
        def reaped() -> int:
            for line in http(self.c.health + "/metrics")[1].decode().splitlines():
                if line.startswith("hivesup_reaped_zombies_total"):
                    return int(float(line.split()[-1]))
            return -1

        n0 = reaped()
        t = time.time()
        made = int(self.c.exec("python3", "-c", ZOMBIE_SRC, str(self.args.zombies), str(self.args.zombie_batch), timeout=600))
        made_at = time.time()
        deadline = made_at + self.args.bound
        while reaped() - n0 < made and time.time() < deadline:
            time.sleep(0.1)
        got = reaped() - n0
        if got < made:
            r.fail(f"hivesup reaped {got} of {made} orphans")
        r.notes.append(f"{made} orphans, reaped {got}, {made_at - t:.1f} s to make, +{time.time() - made_at:.1f} s to reap")
        # Time to healthy counts from the last orphan's exit.
        self.wait_healthy(r, made_at)

    def r_docker_stop(self, r: Round) -> None:
        before = self.c.procs()
        t0 = time.time()
        docker("stop", self.c.name, timeout=60)
        stop_s = time.time() - t0
        code = self.c.state()["ExitCode"]
        if code != 0:
            r.fail(f"docker stop: exit code {code} (not a clean stop)")
        r.notes.append(f"stop {stop_s:.1f} s")
        t = time.time()
        self.c.start()
        self.wait_healthy(r, t)
        logs = self.c.logs_since(t - 1)
        if "database system is ready to accept connections" not in logs:
            r.fail("the log since docker start has no postgres start: the recovery check read nothing")
        for mark in RECOVERY_MARKS:
            if mark in logs:
                r.fail(f"postgres recovered after a clean stop: {mark!r} in the log")
        self.check_survivors(r, before)

    def r_docker_kill(self, r: Round) -> None:
        before = self.c.procs()
        docker("kill", self.c.name, timeout=60)
        t = time.time()
        self.c.start()
        self.wait_healthy(r, t)
        logs = self.c.logs_since(t - 1)
        if "redo starts" in logs:
            r.notes.append("crash recovery (expected)")
        self.check_survivors(r, before)

    def sabotage(self, r: Round) -> None:
        """--sabotage: break an invariant on purpose, to show that the checks catch it."""
        what = self.args.sabotage
        if what == "lose-row":
            victim = min(self.writer.snapshot())
            self.c.psql(f"DELETE FROM items WHERE id = {victim}")
        elif what == "zombie":
            # A zombie whose parent (not hivesup) never reaps it.
            self.c.exec("sh", "-c", "python3 -c 'import os,time\nif os.fork()==0: os._exit(0)\ntime.sleep(60)' >/dev/null 2>&1 &")

    # ------------------------------------------------------------------ main

    def run(self) -> int:
        with tempfile.TemporaryDirectory(prefix="hivesup-chaos-") as tmp:
            cfg = Path(tmp) / "chaos.toml"
            flood = json.dumps(["python3", "-c", FLOOD_SRC])
            cfg.write_text((ROOT / "conf/agent.toml").read_text()
                           + f'\n[programs.flood]\ncommand = {flood}\npriority = 300\nrestart = "always"\n')  # fmt: skip
            self.c.create(cfg)
        t = time.time()
        self.c.start()
        self.writer.start()
        first = Round(0, "cold-start")
        self.wait_healthy(first, t)
        if not first.recovered:
            log("the container never became healthy; last log lines:")
            print(self.c.logs_since(t - 1)[-3000:], file=sys.stderr)
            return 1
        log(f"healthy {first.time_to_healthy:.1f} s after a cold start")
        kinds = self.args.kinds or KINDS
        for n in range(1, self.args.rounds + 1):
            kind = kinds[(n - 1) % len(kinds)]
            r = Round(n, kind)
            self.rounds.append(r)
            log(f"round {n}/{self.args.rounds}: {kind}")
            try:
                getattr(self, "r_" + kind.replace("-", "_"))(r)
                self.sabotage(r)
                if r.recovered:
                    self.check_zombies(r)
                    self.check_rows(r)
            except (Failure, RuntimeError, subprocess.TimeoutExpired, KeyError, ValueError) as e:
                r.fail(f"{type(e).__name__}: {e}")
            log(f"round {n}: {'recovered in %.1f s' % r.time_to_healthy if r.recovered else 'NOT recovered'}, "
                f"{r.acked} acked, {r.lost} lost, {len(r.problems)} problems {'; '.join(r.notes)}")  # fmt: skip
            if not r.recovered:
                break  # the next round would measure this one's damage
        self.writer.stop.set()
        self.writer.join(10)
        return self.report()

    def report(self) -> int:
        rs = self.rounds
        times = [r.time_to_healthy for r in rs if r.recovered]
        acked = max((r.acked for r in rs), default=0)
        lost = max((r.lost for r in rs), default=0)
        zombies = sum(r.zombies_left for r in rs)
        failed = [r for r in rs if r.problems]

        def fmt(xs):
            return (f"{statistics.median(xs):.1f} s", f"{max(xs):.1f} s") if xs else ("-", "-")

        med, worst = fmt(times)
        lines = [
            "| rounds run | recovered | median to healthy | worst to healthy | acked rows | lost rows | leftover zombies | writes not acked (API down) |",
            "|---|---|---|---|---|---|---|---|",
            f"| {len(rs)} | {sum(r.recovered for r in rs)} | {med} | {worst} | {acked} | {lost} | {zombies} | {self.writer.errors} |",
            "",
            "| round kind | runs | recovered | median to healthy | worst to healthy | problems | notes (last run) |",
            "|---|---|---|---|---|---|---|",
        ]
        for kind in dict.fromkeys(r.kind for r in rs):
            ks = [r for r in rs if r.kind == kind]
            m, w = fmt([r.time_to_healthy for r in ks if r.recovered])
            notes = "; ".join(ks[-1].notes)
            lines.append(f"| {kind} | {len(ks)} | {sum(r.recovered for r in ks)} | {m} | {w} | {sum(len(r.problems) for r in ks)} | {notes} |")
        table = "\n".join(lines)
        print(table)
        if self.args.out:
            out = Path(self.args.out)
            out.mkdir(parents=True, exist_ok=True)
            (out / "chaos.md").write_text(table + "\n")
            (out / "chaos.json").write_text(json.dumps([r.__dict__ for r in rs], indent=1) + "\n")
        for r in failed:
            for p in r.problems:
                print(f"FAILED round {r.n} ({r.kind}): {p}")
        ok = rs and not failed and lost == 0 and zombies == 0 and len(rs) == self.args.rounds
        print("chaos: all invariants held" if ok else "chaos: INVARIANTS FAILED")
        return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", default="hive-agent:chaos")
    ap.add_argument("--short", action="store_true", help="one round of each kind, 10,000 orphans")
    ap.add_argument("--rounds", type=int, help="rounds to run (default 30, short: one per kind)")
    ap.add_argument("--kinds", nargs="*", choices=KINDS, help="only these round kinds, in turn")
    ap.add_argument("--zombies", type=int, help="orphans in a zombie round (default 100,000, short: 10,000)")
    ap.add_argument("--zombie-batch", type=int, default=2000, help="orphans alive at once (pid_max is shared)")
    ap.add_argument("--bound", type=float, default=90, help="seconds a round may take to recover")
    ap.add_argument("--stop-seconds", type=float, default=5, help="SIGSTOP length (API health timeout: 3 s)")
    ap.add_argument("--long-stop-seconds", type=float, default=40,
                    help="SIGSTOP length of every other such round in the long form (> 3 failed probes)")
    ap.add_argument("--flood-seconds", type=float, default=8)
    ap.add_argument("--out", help="directory for chaos.md and chaos.json")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--keep", action="store_true", help="leave the container and volume for inspection")
    ap.add_argument("--sabotage", choices=["lose-row", "zombie", "survivor"],
                    help="break an invariant after each round (self-test: the run must fail)")
    args = ap.parse_args()
    kinds = args.kinds or KINDS
    args.rounds = args.rounds or (len(kinds) if args.short else 30)
    args.zombies = args.zombies or (10_000 if args.short else 100_000)
    random.seed(args.seed)
    chaos = Chaos(args)
    try:
        return chaos.run()
    except KeyboardInterrupt:
        return 130
    finally:
        chaos.writer.stop.set()
        if args.keep:
            log(f"kept {chaos.c.name} (remove: docker rm -f -v {chaos.c.name}; docker volume rm {chaos.c.name})")
        else:
            chaos.c.remove()


if __name__ == "__main__":
    sys.exit(main())
