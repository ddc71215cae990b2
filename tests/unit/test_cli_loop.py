"""A server process runs on uvloop (cli/common.py); a short command keeps asyncio's own loop."""

from __future__ import annotations

import asyncio

from vibe_ensemble.cli.common import run


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_a_server_runs_on_uvloop_and_a_short_command_on_asyncio() -> None:
    assert run(_loop_module, serving=True).startswith("uvloop")
    assert run(_loop_module).startswith("asyncio")
