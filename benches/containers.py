"""Scenario 7 of the benchmark: the unified image under hivesup against the design it
replaces (supervisord as PID 1, benches/Dockerfile.supervisord), same base, same runtime.

Needs the images: runs when `docker image inspect hive-agent` succeeds, otherwise adds a
row saying they are not built. Every container and volume it creates is named
`hivesup-bench-*` and removed at the end; nothing else is touched.

Figures per image: size; `docker run` -> healthy, cold (empty volume: initdb) and warm
(`docker start` again on the initialised volume), both as the first 200 of the health
endpoint Docker's HEALTHCHECK uses (polled every 50 ms from the host) and as Docker's own
`healthy` (with --health-interval=500ms for both images); `docker stop` -> exited; the RSS
of PID 1 inside the container; the API's failed database connections during start-up.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HIVESUP_IMAGE = "hive-agent"
SUPERVISORD_IMAGE = "hivesup-bench-supervisord"
PASSWORD = "bench-only-password"


def docker(*args, check=True, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=timeout)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def inspect(name: str) -> dict:
    return json.loads(docker("inspect", name).stdout)[0]


def rss_mib(host_pid: int) -> float:
    st = Path(f"/proc/{host_pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+)", st, re.M).group(1)) / 1024


class Image:
    def __init__(self, peer: str, image: str, health_port: int, health_path: str):
        self.peer, self.image, self.health_port, self.health_path = peer, image, health_port, health_path


def wait_healthy(name: str, url_of, t0: float, timeout: float = 120) -> tuple[float, float]:
    """Seconds from t0 to the first 200 of the health URL and to Docker's `healthy`."""
    first_200 = docker_healthy = None
    deadline = t0 + timeout
    while time.time() < deadline and (first_200 is None or docker_healthy is None):
        if first_200 is None:
            url = url_of()
            if url and http_ok(url):
                first_200 = time.time() - t0
        if docker_healthy is None:
            st = inspect(name)["State"]
            if st.get("Health", {}).get("Status") == "healthy":
                docker_healthy = time.time() - t0
            if st["Status"] in ("exited", "dead"):
                raise RuntimeError(f"{name} exited with {st['ExitCode']}: {docker('logs', '--tail', '20', name, check=False).stderr[-800:]}")
        time.sleep(0.05)
    if first_200 is None or docker_healthy is None:
        raise RuntimeError(f"{name} not healthy within {timeout:.0f} s")
    return first_200, docker_healthy


def failed_connections(logs: str) -> int:
    """The API's failed database connections: psycopg's OperationalError / refused
    connections in the API's start-up (lifespan) and health handler."""
    return len(re.findall(r"connection failed|Connection refused|OperationalError", logs))


def one_cycle(img: Image, tag: str) -> dict:
    name, vol = f"hivesup-bench-{tag}", f"hivesup-bench-{tag}-data"
    docker("rm", "-f", name, check=False)
    docker("volume", "rm", "-f", vol, check=False)
    docker("volume", "create", vol)
    try:
        def url():
            ip = inspect(name)["NetworkSettings"]["IPAddress"]
            return f"http://{ip}:{img.health_port}{img.health_path}" if ip else None
        t0 = time.time()
        docker("run", "-d", "--name", name, "-e", f"POSTGRES_PASSWORD={PASSWORD}", "-v", f"{vol}:/var/lib/postgresql/data",
               "--health-interval=500ms", "--stop-timeout=15", img.image)
        cold_200, cold_docker = wait_healthy(name, url, t0)
        time.sleep(2)
        pid1 = inspect(name)["State"]["Pid"]
        rss = rss_mib(pid1)
        logs = docker("logs", name).stdout + docker("logs", name).stderr
        fails = failed_connections(logs)
        t0 = time.time()
        docker("stop", "-t", "15", name, timeout=60)
        stop_s = time.time() - t0
        exit_code = inspect(name)["State"]["ExitCode"]
        t0 = time.time()
        docker("start", name)
        warm_200, warm_docker = wait_healthy(name, url, t0)
        logs2 = docker("logs", name).stdout + docker("logs", name).stderr
        warm_fails = failed_connections(logs2) - fails
        return {"cold_200": cold_200, "cold_docker": cold_docker, "warm_200": warm_200, "warm_docker": warm_docker,
                "stop": stop_s, "exit_code": exit_code, "rss": rss, "fails": fails, "warm_fails": warm_fails}
    finally:
        docker("rm", "-f", name, check=False)
        docker("volume", "rm", "-f", vol, check=False)


def build_supervisord_image(images_src: Path) -> str | None:
    """Builds the comparison image from images_src/images (the runtime steps, postgres
    config and API the hivesup images use) and benches/; returns why it could not, or None."""
    if docker("image", "inspect", "debian:trixie-slim", check=False).returncode != 0:
        return "debian:trixie-slim missing (run `bash images/base-image.sh`)"
    if not (images_src / "images" / "install-runtime.sh").exists():
        return f"{images_src}/images (install-runtime.sh, api/) not found: pass --images-src"
    with tempfile.TemporaryDirectory(prefix="hivesup-bench-ctx.") as ctx:
        shutil.copytree(images_src / "images", Path(ctx) / "images", ignore=shutil.ignore_patterns("secrets"))
        shutil.copytree(ROOT / "benches", Path(ctx) / "benches", ignore=shutil.ignore_patterns("__pycache__"))
        r = docker("build", "-q", "-f", f"{ctx}/benches/Dockerfile.supervisord", "-t", SUPERVISORD_IMAGE, ctx,
                   check=False, timeout=1800)
    return None if r.returncode == 0 else f"docker build failed: {r.stderr.strip()[-300:]}"


def run(table, reps: int, bench) -> None:
    sc = "7 containers"
    if docker("image", "inspect", HIVESUP_IMAGE, check=False).returncode != 0:
        table.add(sc, "all figures", "hivesup", None, "", "images not built: `docker image inspect hive-agent` failed")
        return
    images = [Image("hivesup", HIVESUP_IMAGE, 38887, "/health")]
    why = build_supervisord_image(Path(bench.args.images_src))
    if why:
        table.add(sc, "all figures", "supervisord", None, "", f"comparison image not built: {why}")
    else:
        images.append(Image("supervisord", SUPERVISORD_IMAGE, 38886, "/api/v1/health"))
    figures = [("cold_200", "docker run → health endpoint 200, cold (initdb)", "ms"),
               ("cold_docker", "docker run → Docker `healthy`, cold (interval 500 ms)", "ms"),
               ("warm_200", "docker start → health endpoint 200, warm", "ms"),
               ("warm_docker", "docker start → Docker `healthy`, warm (interval 500 ms)", "ms"),
               ("stop", "docker stop → exited", "ms"),
               ("rss", "RSS of PID 1 in the container", "MiB"),
               ("fails", "API failed DB connections, cold start", ""),
               ("warm_fails", "API failed DB connections, warm start", "")]
    for img in images:
        size = int(inspect(img.image)["Size"]) / 1e6
        table.add(sc, "image size", img.peer, [size], "MB")
        vals = {k: [] for k, _, _ in figures}
        codes = set()
        try:
            for i in range(reps):
                r = one_cycle(img, f"{img.peer}-{i}")
                for k in vals:
                    vals[k].append(r[k] * 1000 if k in ("cold_200", "cold_docker", "warm_200", "warm_docker", "stop") else r[k])
                codes.add(r["exit_code"])
        except (RuntimeError, subprocess.SubprocessError) as e:
            table.failed.append(f"{sc} / {img.peer}: {e}")
            for _, label, unit in figures:
                table.add(sc, label, img.peer, None, unit, f"failed: {str(e)[:160]}")
            continue
        note = f"exit code after docker stop: {', '.join(map(str, sorted(codes)))}"
        if img.peer == "supervisord":
            note += "; HEALTHCHECK curl on the API (supervisord has no health endpoint)"
        for k, label, unit in figures:
            table.add(sc, label, img.peer, vals[k], unit, note if k == "stop" else "")
