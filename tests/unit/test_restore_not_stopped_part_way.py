"""A restore is not stopped part-way: SIGTERM and Ctrl-C wait for it, and `pg_restore` ends with its
command (a killed restore left the restored data without what it keeps from the database it replaced)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import wait_until
from vibe_ensemble.cli.backup import _not_stopped_part_way


async def test_sigterm_and_sigint_wait_for_the_restore(capfd: pytest.CaptureFixture[str]) -> None:
    said = ""
    with _not_stopped_part_way("restore"):
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        async with asyncio.timeout(10):  # the loop runs the handlers; the process goes on
            while "SIGINT" not in said:
                await asyncio.sleep(0.01)
                said += capfd.readouterr().err
    assert "SIGTERM received: stopping once the restore has finished" in said
    assert "SIGINT received" in said
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # given back after the block


@pytest.mark.skipif(sys.platform != "linux", reason="prctl(PR_SET_PDEATHSIG) is Linux's")
def test_a_pg_tool_ends_with_the_command_that_started_it(tmp_path: Path) -> None:
    """The command is killed (SIGKILL cannot be waited for): the tool it started is killed with it, not
    left to commit a restore on its own."""
    started = tmp_path / "tool.pid"
    tool_script = tmp_path / "tool.py"
    # the tool stands in for a long pg_restore: it writes its pid and waits to be killed (never for 60 s)
    tool_script.write_text(
        f"import os, time\nopen({str(started)!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)\n"
    )
    script = (
        "import asyncio, os, sys\n"
        "from vibe_ensemble.store import backup_postgres\n"
        f"asyncio.run(backup_postgres._run([sys.executable, {str(tool_script)!r}], dict(os.environ)))\n"
    )
    command = subprocess.Popen([sys.executable, "-c", script])
    try:
        wait_until(lambda: started.exists() and started.read_text(), timeout=30, what="the tool to start")
        tool = int(started.read_text())
        command.kill()
        command.wait(timeout=10)
        wait_until(lambda: not _alive(tool), timeout=10, what="the tool to end with its command")
    finally:
        command.kill()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has ended (its parent, init, reaps it)
