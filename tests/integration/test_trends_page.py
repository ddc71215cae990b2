"""The trends fragment draws throughput per agent and shows agent names as text, even a name no
validation would let through (a row written by other means)."""

from __future__ import annotations

import httpx2
import sqlalchemy as sa

from vibe_ensemble.api.app import create_app
from vibe_ensemble.domain.caller import SYSTEM
from vibe_ensemble.runtime import Runtime
from vibe_ensemble.store.tables import agents

HOSTILE = '<script>window.__x = 1</script>"><img src=x onerror=alert(1)>'


async def test_throughput_chart_escapes_agent_names(runtime: Runtime) -> None:
    services = runtime.services
    token = await runtime.bootstrap_admin_token()
    assert token
    await services.agents.register(SYSTEM, name="brook")
    issue = await services.issues.create(SYSTEM, title="Parser")
    await services.issues.claim(SYSTEM, issue.id, agent="brook")
    await services.issues.close(SYSTEM, issue.id, "done", agent="brook")
    async with runtime.db.write() as conn:  # past validation, straight into the row
        await conn.execute(sa.update(agents).where(agents.c.name == "brook").values(name=HOSTILE))
    async with httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=create_app(runtime)),
        base_url="http://127.0.0.1",
        headers={"Authorization": f"Bearer {token}"},
    ) as http:
        html = (await http.get("/fragments/trends")).text
    assert 'data-chart="throughput-chart"' in html
    assert "<script>window" not in html and "<img" not in html
    escaped = "&lt;script&gt;window.__x = 1&lt;/script&gt;&#34;&gt;&lt;img src=x onerror=alert(1)&gt;"
    assert f'data-series="{escaped}" data-value="1"' in html  # today's bar
    assert f'<span class="legend series-1">{escaped} 1</span>' in html
