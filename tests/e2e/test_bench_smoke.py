"""The benchmarks run (briefly), so they cannot rot. Figures are printed, never asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parents[2] / "bench"


def _run(*argv: str) -> str:
    done = subprocess.run(
        [sys.executable, *argv], cwd=BENCH, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_swarm_runs_against_ours_and_the_bare_server(tmp_path: Path) -> None:
    out = _run("swarm.py", "--agents", "2", "--seconds", "1", "--mix", "--json", str(tmp_path / "s.json"))
    assert "ratio" in out and "/healthz under this load" in out and "floor" in out
    assert (tmp_path / "s.json").exists()


def test_swarm_runs_over_rest() -> None:
    assert "ratio" in _run("swarm.py", "--agents", "2", "--seconds", "1", "--door", "rest")


def test_tool_calls_runs() -> None:
    assert "calls/s" in _run("tool_calls.py", "--calls", "5", "--warmup", "1")


def test_storage_runs() -> None:
    assert "CPU per call" in _run("storage.py", "--rounds", "20", "--mix")


def test_scale_runs() -> None:
    out = _run("scale.py", "--issues", "200", "--messages", "500", "--knowledge", "50", "--calls", "3")
    assert "fetch_inbox" in out and "plan, inbox page" in out


def test_startup_runs() -> None:
    out = _run("startup.py", "--runs", "1", "--top", "3")
    assert "start to /readyz 200" in out and "CPU" in out
    assert "imports of installed" in out


def test_stack_runs() -> None:
    out = _run("stack.py", "--rounds", "100")
    assert "ours   CPU per call" in out and "bare   CPU per call" in out and "shaped CPU per call" in out
    assert "ratio" in out and "the SDK on our payloads" in out


def test_live_latency_runs_and_counts_what_was_lost() -> None:
    out = _run("live_latency.py", "--subscribers", "3", "--events", "5", "--transport", "ws", "--projects=2")
    assert "lost 0, duplicated 0" in out and "RSS" in out and "p99 ms" in out


def test_hardening_runs() -> None:
    out = _run("hardening.py", "--requests", "50")
    assert "/metrics:" in out and "/healthz while it ran" in out and "steps" in out
