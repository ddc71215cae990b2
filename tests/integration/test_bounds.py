"""Values the database cannot hold are bad input on every backend, never a crash."""

from __future__ import annotations

import pytest

from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.errors import InvalidInput
from vibe_ensemble.services import Services

from .snapshot import snapshot


@pytest.mark.parametrize("huge", [2**63, 2**80, -(2**70)])
async def test_ids_past_64_bits_are_invalid_input(services: Services, admin: Caller, huge: int) -> None:
    await services.agents.register(admin, name="w1")
    before = await snapshot(services.ctx.db)
    with pytest.raises(InvalidInput, match="out of the range the server can store"):
        await services.issues.get(admin, huge)
    with pytest.raises(InvalidInput, match="out of the range"):
        await services.issues.create(admin, title="t", depends_on=[huge])
    with pytest.raises(InvalidInput, match="out of the range"):
        await services.messages.mark_read(admin, [huge], agent="w1")
    assert await snapshot(services.ctx.db) == before


async def test_lone_surrogates_are_invalid_input(services: Services, admin: Caller) -> None:
    before = await snapshot(services.ctx.db)
    with pytest.raises(InvalidInput) as refused:
        await services.issues.create(admin, title="a\ud800b")
    assert (refused.value.field, refused.value.rule) == (
        "title",
        "must be valid Unicode (no lone surrogates)",
    )
    with pytest.raises(InvalidInput, match="valid Unicode"):
        await services.issues.create(admin, title="fine", body="x\udfffy")
    # values that no rule looks at are still refused cleanly, by the store
    with pytest.raises(InvalidInput, match="valid Unicode"):
        await services.issues.list(admin, assignee="w\ud800")
    with pytest.raises(InvalidInput, match="valid Unicode"):
        await services.events.page(admin, types=["issue.\udc00"])
    assert await snapshot(services.ctx.db) == before
