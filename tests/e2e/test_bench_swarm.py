"""The swarm benchmark runs (briefly), so it cannot rot. Figures are printed, never asserted."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support import start_server

from .test_bench_smoke import run_bench, run_bench_json


def test_swarm_runs_against_ours_and_the_bare_server(tmp_path: Path) -> None:
    out, found = run_bench_json(tmp_path, "swarm.py", "--agents", "2", "--seconds", "1", "--mix")
    assert "ratio" in out and "/healthz under this load" in out and "floor" in out
    assert "in the kernel" in out and "PostgreSQL" not in out  # SQLite: no database server
    assert "our own work (ours - bare)" in out
    assert found["bench"] == "swarm" and found["machine"]["cpus"]
    ((ours, bare),) = found["figures"]["runs"]
    assert (ours["server"], bare["server"]) == ("ours", "bare") and ours["calls"] > 0
    # probed after the measured window, under the same loop: each port answered
    assert ours["healthz_p99_ms"] > 0 and ours["health_port_p99_ms"] > 0 and ours["floor_p99_ms"] > 0
    assert bare["healthz_p99_ms"] is None  # the bare server is not probed
    # the bare server answering with our recorded answers: the SDK's own cost for our payloads
    (shaped,) = found["figures"]["shaped"]
    assert shaped["server"] == "shaped" and shaped["calls"] > 0 and shaped["errors"] == 0
    assert "shaped: the bare server answering with our last answers" in out


def test_swarm_runs_over_rest() -> None:
    out = run_bench("swarm.py", "--agents", "2", "--seconds", "1", "--door", "rest")
    assert "ratio" in out and "shaped" not in out  # our answers over REST are not the SDK's to make


def test_swarm_runs_in_the_older_protocol_era_with_each_window_repeated(tmp_path: Path) -> None:
    argv = ["--agents", "2", "--seconds", "1", "--mode", "legacy", "--repeat", "2"]
    out, found = run_bench_json(tmp_path, "swarm.py", *argv)
    assert "mode=legacy" in out and "ratio" in out
    ((ours, bare),) = found["figures"]["runs"]
    assert ours["calls"] > 0 and ours["errors"] == 0 and bare["errors"] == 0
    (shaped,) = found["figures"]["shaped"]
    assert shaped["calls"] > 0 and shaped["errors"] == 0
    # each server's two windows of a second, together
    assert min(ours["seconds"], bare["seconds"], shaped["seconds"]) >= 2.0
    assert ours["healthz_p99_ms"] > 0  # probed once, after our server's first window


async def test_swarm_runs_on_postgresql_and_counts_its_cpu(postgres_url: str) -> None:
    out = run_bench("swarm.py", "--agents", "2", "--seconds", "1", "--database-url", postgres_url)
    assert "ratio" in out and "PostgreSQL" in out and "ms CPU per call" in out


def test_swarm_runs_against_a_running_server(tmp_path: Path) -> None:
    running = start_server(tmp_path, extra_env={"VIBE_RATE_LIMIT_PER_MINUTE": json.dumps({"worker": 0})})
    try:
        argv = ["--agents", "2", "--seconds", "1", "--url", running.url, "--token", running.admin_token]
        out, found = run_bench_json(tmp_path, "swarm.py", *argv)
    finally:
        running.stop()
    assert f"server={running.url}" in out and "the liveness port not measured" in out
    ((ours, bare),) = found["figures"]["runs"]
    assert ours["calls"] > 0 and ours["errors"] == 0
    assert ours["server_cpu_ms_per_call"] is None and bare["server_cpu_ms_per_call"] > 0  # not on hand
