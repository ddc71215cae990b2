"""`observe_tools` (api/mcp/observe.py): a tool call that fails in our code is counted `internal`."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError

from vibe_ensemble.api.mcp.observe import observe_tools
from vibe_ensemble.ops import metrics


async def create_issue() -> None:
    """A tool of the profile (only its name is read)."""


def _count(outcome: str) -> float:
    return metrics.child(metrics.MCP_CALLS, "create_issue", outcome)._value.get()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("raised", "counted"),
    [(RuntimeError("a bug"), "internal"), (MCPError(-32602, "refused"), "protocol_error")],
)
async def test_a_call_that_raises_is_counted_by_what_raised(raised: Exception, counted: str) -> None:
    middleware = observe_tools([create_issue])
    ctx: Any = SimpleNamespace(method="tools/call", params={"name": "create_issue"}, request=None)

    async def call_next(_: Any) -> Any:
        raise raised

    before = _count(counted)
    with pytest.raises(type(raised)):
        await middleware(ctx, call_next)
    assert _count(counted) == before + 1


@pytest.mark.parametrize(("stopping", "counted"), [(True, "going_away"), (False, "cancelled")])
async def test_a_call_cancelled_is_counted_as_cut_off_not_as_refused(
    stopping: bool, counted: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cut off by the server's stop, the agent hears `[going_away]`; it was counted (and logged) as a
    `protocol_error`, which it never was."""
    from vibe_ensemble.api.mcp import observe

    hub = SimpleNamespace(closed=stopping)
    call = SimpleNamespace(
        services=SimpleNamespace(ctx=SimpleNamespace(hub=hub)),
        caller=SimpleNamespace(agent="a1", project="p"),
    )
    monkeypatch.setattr(observe, "bound", lambda: call)
    middleware = observe_tools([create_issue])
    ctx: Any = SimpleNamespace(method="tools/call", params={"name": "create_issue"}, request=None)

    async def call_next(_: Any) -> Any:
        raise asyncio.CancelledError

    before, refused = _count(counted), _count("protocol_error")
    with pytest.raises(asyncio.CancelledError):
        await middleware(ctx, call_next)
    assert (_count(counted), _count("protocol_error")) == (before + 1, refused)
