"""Nothing acknowledged is lost when the server is killed (SIGKILL) under concurrent write load, on
SQLite, where writes share their COMMIT (group commit, store/sqlite.py): a write answered 201 is in
the database after the restart, whatever the other writes of its COMMIT were doing."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx2

from tests.support import start_server, wait_until

P = "/api/v1/projects/default"
WRITERS = 8


async def _write_until_refused(url: str, token: str, writer: int, acknowledged: list[str]) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx2.AsyncClient(base_url=url, headers=headers, timeout=10) as api:
        for n in range(100_000):
            title = f"w{writer}-{n}"
            try:
                answer = await api.post(f"{P}/issues", json={"title": title})
            except httpx2.HTTPError:
                return  # the server is gone: this write was never acknowledged
            if answer.status_code != 201:
                return
            acknowledged.append(title)


async def _load_then_kill(server_url: str, token: str, kill: object) -> list[str]:
    acknowledged: list[str] = []
    writers = [
        asyncio.create_task(_write_until_refused(server_url, token, w, acknowledged)) for w in range(WRITERS)
    ]
    deadline = time.monotonic() + 30
    while len(acknowledged) < 200 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    kill()  # type: ignore[operator]
    await asyncio.gather(*writers)
    return acknowledged


def test_sigkill_under_concurrent_writes_loses_nothing_acknowledged(tmp_path: Path) -> None:
    server = start_server(tmp_path, extra_env={"VIBE_RATE_LIMIT_PER_MINUTE": '{"admin": 0}'})
    try:
        acknowledged = asyncio.run(_load_then_kill(server.url, server.admin_token, server.kill))
        assert len(acknowledged) >= 200, server.log()[-2000:]
        server.restart()
        wait_until(lambda: httpx2.get(server.url + "/readyz").status_code == 200, what="the restart")
        stored: set[str] = set()
        with httpx2.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {server.admin_token}"}
        ) as api:
            cursor = None
            while True:
                params = {"limit": 200, **({"cursor": cursor} if cursor else {})}
                page = api.get(f"{P}/issues", params=params).json()
                stored.update(i["title"] for i in page["items"])
                cursor = page.get("next_cursor")
                if not cursor:
                    break
        missing = [t for t in acknowledged if t not in stored]
        assert not missing, f"{len(missing)} acknowledged writes lost: {missing[:5]}"
    finally:
        server.stop()
