"""The swarm benchmark runs (briefly), so it cannot rot. Figures are printed, never asserted."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .test_bench_smoke import BENCH, run_bench


def test_swarm_runs_against_ours_and_the_bare_server(tmp_path: Path) -> None:
    out = run_bench(
        "swarm.py", "--agents", "2", "--seconds", "1", "--mix", "--json", str(tmp_path / "s.json")
    )
    assert "ratio" in out and "/healthz under this load" in out and "floor" in out
    assert "in the kernel" in out and "PostgreSQL" not in out  # SQLite: no database server
    found = json.loads((tmp_path / "s.json").read_text())
    assert found["bench"] == "swarm" and found["machine"]["cpus"]
    ((ours, bare),) = found["figures"]["runs"]
    assert (ours["server"], bare["server"]) == ("ours", "bare") and ours["calls"] > 0


def test_swarm_runs_over_rest() -> None:
    assert "ratio" in run_bench("swarm.py", "--agents", "2", "--seconds", "1", "--door", "rest")


def test_swarm_runs_in_the_older_protocol_era(tmp_path: Path) -> None:
    written = tmp_path / "s.json"
    out = run_bench("swarm.py", "--agents", "2", "--seconds", "1", "--mode", "legacy", "--json", str(written))
    assert "mode=legacy" in out and "ratio" in out
    ((ours, bare),) = json.loads(written.read_text())["figures"]["runs"]
    assert ours["calls"] > 0 and ours["errors"] == 0 and bare["errors"] == 0


async def test_swarm_runs_on_postgresql_and_counts_its_cpu(postgres_url: str) -> None:
    out = run_bench("swarm.py", "--agents", "2", "--seconds", "1", "--database-url", postgres_url)
    assert "ratio" in out and "PostgreSQL" in out and "ms CPU per call" in out


def test_swarm_runs_against_a_running_server(tmp_path: Path) -> None:
    sys.path.insert(0, str(BENCH))
    try:
        from servers import own_servers  # bench/servers.py: a real server on loopback
    finally:
        sys.path.remove(str(BENCH))
    written = tmp_path / "s.json"
    with own_servers(None, 1) as running:
        out = run_bench(
            "swarm.py",
            "--agents",
            "2",
            "--seconds",
            "1",
            "--url",
            running.urls[0],
            "--token",
            running.token,
            "--json",
            str(written),
        )
    assert f"server={running.urls[0]}" in out and "the liveness port not measured" in out
    ((ours, bare),) = json.loads(written.read_text())["figures"]["runs"]
    assert ours["calls"] > 0 and ours["errors"] == 0
    assert ours["server_cpu_ms_per_call"] is None and bare["server_cpu_ms_per_call"] > 0  # not on hand
