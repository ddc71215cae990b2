"""Worst cases after the hardening of issue 9, measured against a real server.

- /metrics size before and after 10,000 requests with random HTTP methods and paths;
- /healthz latency while the costliest lease check within the limits runs;
- the costliest single glob comparison within the limits, in-process.

    .venv/bin/python bench/hardening.py [--requests 10000]

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import statistics
import string
import threading
import time

import httpx2
from servers import own_servers

from vibe_ensemble.domain import globs, overlap

# pairs within the limits (256 characters, 32 wildcards) that cost the most steps we found
WORST = [
    ("*" + "a" * 120 + "*" + "a" * 120, "*" + "a" * 100 + "*" + "a" * 100 + "*"),
    ("*a" * 16 + "a" * 200, "*a" * 16 + "a" * 200),
    ("?*" * 16 + "a" * 200, "*?" * 16 + "a" * 200),
    ("*a" + "?" * 30, "*b" + "?" * 30 + "c"),
]


def glob_worst() -> None:
    for a, b in WORST:
        pa, pb = globs.parse("a", a)[0], globs.parse("b", b)[0]
        budget = overlap.Budget()
        started = time.perf_counter()
        overlap.overlaps(pa, pb, budget)
        took = time.perf_counter() - started
        print(f"glob pair {a[:16]}… x {b[:16]}…: {budget.spent} steps, {took:.3f} s")


def metrics_growth(url: str, requests: int) -> None:
    rng = random.Random(1)
    before = len(httpx2.get(url + "/metrics").content)
    with httpx2.Client(base_url=url) as client:
        for _ in range(requests):
            method = "".join(rng.choices(string.ascii_uppercase, k=rng.randint(3, 10)))
            path = "/x" + "".join(rng.choices(string.ascii_lowercase + "/", k=rng.randint(1, 30)))
            client.request(method, path)
    after = len(httpx2.get(url + "/metrics").content)
    print(f"/metrics: {before / 1024:.1f} KB before, {after / 1024:.1f} KB after {requests} random requests")


def healthz_during_worst_check(url: str, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    base = url + "/api/v1/projects/default"
    for i, (a, _) in enumerate(WORST):
        name = f"holder{i}"
        httpx2.post(base + "/agents", json={"name": name}, headers=headers)
        r = httpx2.post(base + "/reservations", json={"paths": [a], "agent": name}, headers=headers)
        r.raise_for_status()
    httpx2.post(base + "/agents", json={"name": "asker"}, headers=headers)
    wanted = [b for _, b in WORST] * 25  # 100 patterns, each against the four worst leases
    done = threading.Event()
    outcome: list[str] = []

    def worst() -> None:
        started = time.perf_counter()
        r = httpx2.post(
            base + "/reservations/check",
            json={"paths": wanted, "agent": "asker"},
            headers=headers,
            timeout=600,
        )
        outcome.append(f"{r.status_code} in {time.perf_counter() - started:.1f} s: {r.text[:160]}")
        done.set()

    thread = threading.Thread(target=worst)
    thread.start()
    latencies = []
    with httpx2.Client(base_url=url) as client:
        while not done.is_set():
            started = time.perf_counter()
            client.get("/healthz")
            latencies.append((time.perf_counter() - started) * 1000)
            time.sleep(0.02)
    thread.join()
    print(f"worst check: {outcome[0]}")
    if latencies:
        print(
            f"/healthz while it ran: {len(latencies)} requests, "
            f"median {statistics.median(latencies):.1f} ms, max {max(latencies):.1f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=10_000)
    args = parser.parse_args()
    glob_worst()
    with own_servers(None, 1) as servers:
        metrics_growth(servers.urls[0], args.requests)
        healthz_during_worst_check(servers.urls[0], servers.token)


if __name__ == "__main__":
    main()
