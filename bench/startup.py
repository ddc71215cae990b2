"""Start-up time: process start to the first 200 from /readyz, on an existing SQLite database.

    python bench/startup.py                  # median of 5 starts, and where import time goes
    python bench/startup.py --runs 9 --top 25
    python bench/startup.py --src /tmp/old/src --src src   # two source trees, starts interleaved

Migrates a fresh SQLite database once (not timed), then spawns `vibe-ensemble serve` RUNS times
and polls /readyz every 5 ms from the moment the process is spawned. Prints the wall-clock time
to the first 200 and the CPU time the server process had used by then (user + system, from
/proc: steadier than wall-clock time on a busy machine). With several `--src` trees (each put
first on PYTHONPATH) the starts alternate between them, so both see the same machine.
Also runs one start under `python -X importtime` and prints the top-level imports that cost most
(cumulative), and the total. Prints figures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

SERVE = [sys.executable, "-m", "vibe_ensemble.cli", "serve"]
IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def environment(data_dir: Path, port: int, src: str | None = None) -> dict[str, str]:
    env = {**os.environ, "VIBE_DATA_DIR": str(data_dir), "VIBE_PORT": str(port), "VIBE_HOST": "127.0.0.1"}
    if src:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    return env


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc); NaN where there is no /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:  # nosec B310 - loopback URL we built
            return bool(answer.status == 200)
    except (urllib.error.URLError, ConnectionError, OSError):
        return False


def start_once(data_dir: Path, src: str | None = None, timeout: float = 60) -> tuple[float, float]:
    """(wall, CPU) seconds from spawning `serve` to /readyz answering 200; the server is stopped after."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/readyz"
    began = time.perf_counter()
    proc = subprocess.Popen(  # nosec B603 - our own CLI
        SERVE, env=environment(data_dir, port, src), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        while not ready(url):
            if proc.poll() is not None:
                raise SystemExit(
                    f"server exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}"
                )  # type: ignore[union-attr]
            if time.perf_counter() - began > timeout:
                raise SystemExit(f"not ready after {timeout} s")
            time.sleep(0.005)
        return time.perf_counter() - began, cpu_seconds(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def import_profile(data_dir: Path, top: int, src: str | None) -> tuple[float, list[tuple[float, str]]]:
    """One start under -X importtime, stopped once ready: total import seconds and the costliest."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/readyz"
    log = data_dir / "importtime.log"
    with log.open("w") as err:
        proc = subprocess.Popen(  # nosec B603 - our own CLI
            [sys.executable, "-X", "importtime", *SERVE[1:]],
            env=environment(data_dir, port, src),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            deadline = time.perf_counter() + 60
            while not ready(url) and time.perf_counter() < deadline and proc.poll() is None:
                time.sleep(0.01)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    total = 0
    roots: dict[str, int] = {}
    for line in log.read_text().splitlines():
        match = IMPORT_LINE.match(line)
        if not match:
            continue
        own, cumulative, indent, name = int(match[1]), int(match[2]), match[3], match[4]
        total += own
        if len(indent) <= 1:  # a top-level import: its cumulative time is not counted twice
            roots[name] = roots.get(name, 0) + cumulative
    costliest = sorted(((us / 1e6, name) for name, us in roots.items()), reverse=True)[:top]
    return total / 1e6, costliest


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s [{min(values):.2f}-{max(values):.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5, help="starts to time per tree (default 5)")
    parser.add_argument(
        "--src", action="append", help="a source tree to put first on PYTHONPATH (repeatable)"
    )
    parser.add_argument("--top", type=int, default=15, help="top-level imports to list (default 15)")
    parser.add_argument("--no-imports", action="store_true", help="skip the -X importtime run")
    args = parser.parse_args()
    trees: list[str | None] = list(args.src or [None])
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = Path(scratch)
        subprocess.run(  # nosec B603 - our own CLI
            [*SERVE[:-1], "migrate"],
            env=environment(data_dir, free_port(), trees[0]),
            check=True,
            capture_output=True,
        )
        for tree in trees:
            start_once(data_dir, tree)  # the first start creates the admin token, and warms caches; not timed
        figures: dict[str | None, list[tuple[float, float]]] = {tree: [] for tree in trees}
        for _ in range(args.runs):
            for tree in trees:
                figures[tree].append(start_once(data_dir, tree))
        print(f"start to /readyz 200 (SQLite, {args.runs} starts each, median [min-max]):")
        for tree, runs in figures.items():
            wall, cpu = spread([w for w, _ in runs]), spread([c for _, c in runs])
            print(f"  {tree or 'installed'}: wall {wall}   CPU {cpu}")
        if args.no_imports:
            return
        for tree in trees:
            total, costliest = import_profile(data_dir, args.top, tree)
            print(f"imports of {tree or 'installed'}: {total:.2f} s (-X importtime); costliest top-level:")
            for seconds, name in costliest:
                print(f"  {seconds:7.3f} s  {name}")


if __name__ == "__main__":
    main()
