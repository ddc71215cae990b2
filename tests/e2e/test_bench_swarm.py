"""The swarm benchmark runs (briefly), so it cannot rot. Figures are printed, never asserted."""

from __future__ import annotations

import json
from pathlib import Path

from .test_bench_smoke import run_bench


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


async def test_swarm_runs_on_postgresql_and_counts_its_cpu(postgres_url: str) -> None:
    out = run_bench("swarm.py", "--agents", "2", "--seconds", "1", "--database-url", postgres_url)
    assert "ratio" in out and "PostgreSQL" in out and "ms CPU per call" in out
