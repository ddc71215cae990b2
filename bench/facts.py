"""What a benchmark writes beside the table it prints: its figures and the machine's facts, as JSON.

    facts.write(args.json, "scale", args, figures)     # nothing when args.json is None

The facts are what makes two runs comparable or not: the cores, the memory, the load average when
the run ended, the Python, the commit the tree was at (None outside a git checkout), and the HTTP
parser and event loop uvicorn finds installed (httptools and uvloop, or None: then h11 and asyncio),
which every server of a bench runs on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def machine() -> dict[str, Any]:
    return {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "load_average": list(os.getloadavg()),
        "platform": platform.platform(),
        "python": sys.version,
        "commit": _commit(),
        "httptools": _version("httptools"),
        "uvloop": _version("uvloop"),
    }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def write(path: Path | None, bench: str, args: argparse.Namespace, figures: dict[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    found = {
        "bench": bench,
        "machine": machine(),
        "args": {k: str(v) for k, v in vars(args).items() if k != "json"},
        "figures": figures,
    }
    path.write_text(json.dumps(found, indent=2) + "\n")
    print(f"\nwrote {path}")


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None
