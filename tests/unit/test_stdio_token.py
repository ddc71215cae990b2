"""stdio MCP's token watch (cli/stdio.py): a revoked token ends its calls, a database outage does not
end the server."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from vibe_ensemble.cli.stdio import still_usable
from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import TokenRole
from vibe_ensemble.domain.errors import DatabaseUnavailable

CALLER = Caller(credential_id=7, role=TokenRole.WORKER, project="default", agent="ann")


def _services(answer: Any) -> Any:
    async def check(caller: Caller) -> bool:
        assert caller is CALLER
        if isinstance(answer, BaseException):
            raise answer
        return bool(answer)

    return SimpleNamespace(tokens=SimpleNamespace(still_usable=check))


async def test_the_token_s_own_answer_is_taken() -> None:
    assert await still_usable(_services(True), CALLER) is True
    assert await still_usable(_services(False), CALLER) is False


async def test_a_database_outage_does_not_count_as_a_revoked_token() -> None:
    assert await still_usable(_services(DatabaseUnavailable(2.0)), CALLER) is True
