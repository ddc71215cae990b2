"""Probe /healthz URLs every 50 ms for a while, from a process of its own, and print the latencies.

    python bench/health_probe.py SECONDS URL [URL ...]      # prints {"URL": [ms, ...], ...} as JSON
    python bench/health_probe.py --floor PORT                # serve the floor (below) until killed

A new connection per probe, as a kubelet makes it. Run by bench/swarm.py beside its load, in its own
process so that the load generator's busy event loop does not add to what is measured.

The floor: a standard-library HTTP server in a process of its own that answers every GET with a
constant, probed beside our health ports. It does no work of ours, so its latency is what the
machine alone costs a probe under the same load (a busy core must first run the woken process).
"""

from __future__ import annotations

import http.client
import http.server
import json
import sys
import time
from urllib.parse import urlsplit


def probe(url: str) -> float:
    parts = urlsplit(url)
    started = time.perf_counter()
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=10)
    try:
        conn.request("GET", parts.path or "/")
        conn.getresponse().read()
    finally:
        conn.close()
    return (time.perf_counter() - started) * 1000


class _Constant(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"status":"ok"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    if sys.argv[1] == "--floor":
        http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), _Constant).serve_forever()
    seconds, urls = float(sys.argv[1]), sys.argv[2:]
    found: dict[str, list[float]] = {url: [] for url in urls}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for url in urls:
            found[url].append(probe(url))
        time.sleep(0.05)
    print(json.dumps(found))


if __name__ == "__main__":
    main()
