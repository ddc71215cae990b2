"""The benchmarks run (briefly), so they cannot rot. Figures are printed, never asserted.

The swarm's are in test_bench_swarm.py: a module runs on one worker, and together they were the
suite's longest module."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support import missing_tool

BENCH = Path(__file__).parents[2] / "bench"


def run_bench(*argv: str) -> str:
    done = subprocess.run(
        [sys.executable, *argv], cwd=BENCH, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def run_bench_json(tmp_path: Path, *argv: str) -> tuple[str, dict[str, Any]]:
    """`run_bench` with `--json`: what the benchmark printed, and what it wrote."""
    written = tmp_path / "figures.json"
    out = run_bench(*argv, "--json", str(written))
    found: dict[str, Any] = json.loads(written.read_text())
    return out, found


def test_tool_calls_runs() -> None:
    assert "calls/s" in run_bench("tool_calls.py", "--calls", "5", "--warmup", "1")


def test_storage_runs() -> None:
    assert "CPU per call" in run_bench("storage.py", "--rounds", "20", "--mix")


def test_scale_runs(tmp_path: Path) -> None:
    out, found = run_bench_json(
        tmp_path, "scale.py", "--issues", "200", "--messages", "500", "--knowledge", "50", "--calls", "3"
    )
    assert "fetch_inbox" in out and "plan, inbox page" in out
    assert found["machine"]["cpus"] and "commit" in found["machine"]  # None outside a git checkout
    # the stack every server of a bench runs on: installed with the project (pyproject.toml)
    assert found["machine"]["httptools"] and found["machine"]["uvloop"]
    assert "plan, knowledge search, ranking" in out and "plan, knowledge search, hits" in out
    reads = found["figures"]["reads"]
    assert reads["fetch_inbox"]["rows"] > 0 and reads["fetch_inbox"]["p95_ms"] > 0
    # a word in one row of a thousand is found; the word in none is searched too, and finds nothing
    assert reads["search_mail (rare word)"]["rows"] > 0 and reads["search_knowledge (rare word)"]["rows"] > 0
    assert reads["search_mail (no match)"]["rows"] == 0
    assert reads["search_mail (other projects' word)"]["rows"] == 0  # none of `default`'s holds it
    assert reads["search_knowledge (a kind)"]["rows"] > 0 and reads["search_knowledge (a tag)"]["rows"] > 0
    assert "ix_issues_project_id_status_priority_id" in found["figures"]["plans"]["ready issues page"]


async def test_scale_shows_postgresql_plans(postgres_url: str, tmp_path: Path) -> None:
    """On PostgreSQL the bench shows each read's statements as their generic plans run them."""
    out, found = await asyncio.to_thread(
        run_bench_json,
        tmp_path,
        "scale.py",
        *("--issues", "200", "--messages", "500", "--knowledge", "50", "--calls", "3"),
        *("--database-url", postgres_url),
    )
    plans, reads = found["figures"]["plans"], found["figures"]["reads"]
    assert set(plans) == set(reads) and all(plans.values())  # every read, each of its statements
    assert "plan, fetch_inbox (1): " in out
    assert plans["fetch_inbox"][0].startswith("Limit (25) / ")  # the agent's 25 messages: a page
    assert "Index" in plans["fetch_inbox"][0]
    assert "knowledge_terms" in " ".join(plans["search_knowledge (a kind)"])


def test_startup_runs() -> None:
    out = run_bench("startup.py", "--runs", "1", "--top", "3")
    assert "start to /readyz 200" in out and "CPU" in out
    assert "imports of installed" in out


def test_instructions_runs(tmp_path: Path) -> None:
    if shutil.which("valgrind") is None:
        missing_tool("valgrind is not installed: `sudo apt-get install valgrind` (Debian's package)")
    # The shaped server under valgrind, served by uvicorn as `serve` runs (httptools, uvloop), with
    # the answers of ours recorded in process by a run without it: every path of the script but ours
    # under valgrind, which is the same loop.
    out, found = run_bench_json(
        tmp_path, "instructions.py", "--app", "shaped", "--rounds", "1", "--served", "serve"
    )
    assert "served by uvicorn, serve" in out and found["figures"]["per_call"]["shaped"] > 0


def test_stack_runs() -> None:
    out = run_bench("stack.py", "--rounds", "100")
    assert "ours   CPU per call" in out and "bare   CPU per call" in out and "shaped CPU per call" in out
    assert "ratio" in out and "the SDK on our payloads" in out


def test_live_latency_runs_and_counts_what_was_lost(tmp_path: Path) -> None:
    out, found = run_bench_json(
        tmp_path,
        "live_latency.py",
        "--subscribers",
        "3",
        "--events",
        "5",
        "--transport",
        "ws",
        "--projects=2",
    )
    assert "lost 0, duplicated 0" in out and "RSS" in out and "p99 ms" in out
    figures = found["figures"]
    assert figures["lost"] == 0 and figures["duplicated"] == 0
    assert figures["deliveries"]["count"] == 8  # 5 events over 2 projects: 3, 2; subscribers on 1, 2, 1
    (server,) = figures["servers"].values()
    assert server["rss_mb_after"] > 0


def test_hardening_runs() -> None:
    out = run_bench("hardening.py", "--requests", "50")
    assert "/metrics:" in out and "/healthz while it ran" in out and "steps" in out


def test_leases_runs() -> None:
    out = run_bench("leases.py", "--sizes", "200,400", "--calls", "1")
    assert "live leases" in out and "exclusive 1-glob reserve" in out


def test_tool_instructions_runs_every_scenario() -> None:
    # Every scenario's calls once, without valgrind (a run under it takes a minute a scenario; the
    # counting itself is bench/instructions.py's, run above).
    assert "checked: list_issues, list_issues_ready" in run_bench("tool_instructions.py", "--check")
