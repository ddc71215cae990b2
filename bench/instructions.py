"""Instructions per tool call, counted by valgrind: a figure that hardly drifts with the machine.

    python bench/instructions.py                 # ours, the bare server and the shaped one, 100 rounds
    python bench/instructions.py --app ours      # one app only
    python bench/instructions.py --rounds 300 --json out/instructions.json
    python bench/instructions.py --served serve  # behind uvicorn on a socket, as `serve` runs (or h11)

CPU time on a shared machine drifts by more than most changes save (bench/stack.py's figures moved
by 10-20% between identical runs), so comparing two versions of the code by time needs many runs.
The number of instructions a call executes drifts far less: each app runs the
swarm's loop in process (bench/stack.py: `send_message` to the next agent, then `fetch_inbox`, no
sockets) under valgrind's cachegrind with a fixed hash seed, once for `rounds` rounds and once for
twice as many, and the difference divided by the calls between them is what one call costs, start-up
excluded. Two runs of the same code mostly agree to 0.01%, but not always: a SQLite COMMIT slower
than 1 ms sends the next one to the commit thread (store/sqlite.py), and under valgrind whether one
was depends on the disk, so runs of our app have differed by up to 5% in process and 1% served
(bench/RESULTS.md, the forty-fourth round); run twice before trusting a change of a few percent.
Instructions are not time: the kernel's work (an fsync, a socket) and waits on memory are not
counted, so this tells which version does less work, not how long a call takes. The apps are ours
(on a temporary SQLite file), the bare server (bench/bare_server.py) and the shaped one (the bare
server answering with ours' last answers). Needs valgrind (Debian's `valgrind` package); a run takes
a few minutes.

With `--served`, each app is served by uvicorn on a loopback socket and called over one keep-alive
connection from the same process, so the HTTP parser's and the event loop's work is counted too:
`serve` is the stack `vibe-ensemble serve` runs (httptools with its bound on a request's head,
cli/http_protocol.py, and uvloop), `h11` uvicorn's pure-Python parser on asyncio's loop (what a
bare server on the SDK runs where httptools and uvloop are not installed). The client's few
lines (a write, a read of the answer) are counted with the server's, alike for every app.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import facts  # bench/facts.py
import uvicorn
from bare_server import asgi, build, build_shaped  # bench/bare_server.py
from stack import AGENTS, Caller, start_ours  # bench/stack.py

from vibe_ensemble.cli.common import server_loop

WARM_UP = 100  # rounds before the counted ones: caches, plans, the first request's work
APPS = ("ours", "bare", "shaped")
STACKS = ("serve", "h11")  # --served: `vibe-ensemble serve`'s HTTP parser and loop, or uvicorn's pure Python


class SocketCaller:
    """A `Caller`'s calls sent over one keep-alive HTTP/1.1 connection to a server on loopback."""

    def __init__(self, caller: Caller, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.caller = caller
        self.reader = reader
        self.writer = writer
        self.answers = caller.answers

    async def call(self, token: str | None, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        headers, body = self.caller.request(token, tool, arguments)
        head = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        self.writer.write(b"POST /mcp HTTP/1.1\r\n" + head + b"\r\n" + body)
        answer_head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(answer_head.split(b" ", 2)[1])
        length = re.search(rb"(?im)^content-length:\s*(\d+)", answer_head)
        if length is None:
            raise SystemExit(f"{tool}: an answer without a content-length: {answer_head[:200]!r}")
        return self.caller.answered(tool, status, await self.reader.readexactly(int(length.group(1))))


async def served(stack: AsyncExitStack, caller: Caller, stack_name: str) -> SocketCaller:
    """`caller`'s app served by uvicorn on a loopback socket (within `stack`), and a connection to it."""
    from vibe_ensemble.cli.http_protocol import HeadLimitedProtocol

    listener = socket.create_server(("127.0.0.1", 0))
    config = uvicorn.Config(
        caller.app,
        http=HeadLimitedProtocol if stack_name == "serve" else "h11",
        lifespan="off",  # the app was started already (its lifespan entered by the caller's maker)
        log_level="warning",
        log_config=None,
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[listener]))

    async def stop() -> None:
        server.should_exit = True
        await serving

    stack.push_async_callback(stop)
    while not server.started:  # noqa: ASYNC110 - uvicorn says it has started with a flag, no event
        await asyncio.sleep(0.01)
    reader, writer = await asyncio.open_connection(*listener.getsockname()[:2])
    stack.callback(writer.close)
    return SocketCaller(caller, reader, writer)


async def loop(app_name: str, rounds: int, answers: dict[str, Any], stack_name: str | None) -> dict[str, Any]:
    """The child: warm up, then `rounds` rounds of the loop against one app, in process (or, with a
    `stack_name`, over a socket: `served`); the app's last answers (`answers`: ours', for the shaped
    server)."""
    names = [f"agent-{i}" for i in range(AGENTS)]
    async with AsyncExitStack() as stack:
        if app_name == "ours":
            client, tokens = await start_ours(stack, None)
        else:
            server = build() if app_name == "bare" else build_shaped(answers)
            client, tokens = (
                Caller(asgi(server), "127.0.0.1:8080"),
                [None] * AGENTS,
            )  # makes its session manager
            await stack.enter_async_context(server.session_manager.run())
        if stack_name is not None:
            client = await served(stack, client, stack_name)  # type: ignore[assignment]
        for i in range(WARM_UP + rounds):
            me, peer = i % AGENTS, (i + 1) % AGENTS
            # The same arguments every tenth round: a run and one twice as long do the same calls.
            subject = f"round {i % 10}"
            await client.call(
                tokens[me], "send_message", {"to": [names[peer]], "subject": subject, "body": "x" * 200}
            )
            await client.call(tokens[peer], "fetch_inbox", {"limit": 20, "unread_only": True})
        return client.answers


def under_valgrind(what: str, argv: list[str]) -> int:
    """The instructions the command `argv` executed under cachegrind, with a fixed hash seed."""
    valgrind = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(valgrind + argv, capture_output=True, text=True, env=env, check=False)
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"{what}: valgrind run failed\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def counted(app_name: str, rounds: int, answers: Path, stack_name: str | None) -> int:
    """Instructions of one child run under cachegrind (start-up included)."""
    argv = [sys.executable, __file__, "--child", app_name, "--rounds", str(rounds), "--answers", str(answers)]
    return under_valgrind(app_name, argv + (["--served", stack_name] if stack_name else []))


def per_call(app_name: str, rounds: int, answers: Path, stack_name: str | None) -> float:
    with ThreadPoolExecutor(max_workers=2) as pool:  # the two runs side by side (two cores)
        short, long = pool.map(lambda n: counted(app_name, n, answers, stack_name), (rounds, 2 * rounds))
    return (long - short) / (2 * rounds)  # two calls a round


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--app", choices=[*APPS, "all"], default="all")
    parser.add_argument("--rounds", type=int, default=100, help="the shorter run's rounds (default 100)")
    parser.add_argument("--json", type=Path, help="write the figures and machine facts here")
    parser.add_argument(
        "--served", choices=STACKS, help="serve each app with uvicorn on a socket: serve's stack, or h11"
    )
    parser.add_argument("--child", choices=APPS, help=argparse.SUPPRESS)
    parser.add_argument("--answers", type=Path, help=argparse.SUPPRESS)  # the shaped server's, to read
    parser.add_argument("--record", type=Path, help=argparse.SUPPRESS)  # where ours writes its answers
    args = parser.parse_args()
    if args.child:
        given = json.loads(args.answers.read_text()) if args.child == "shaped" else {}
        # `serve`'s stack runs on the loop a server process runs on (cli/common.py)
        new_loop = server_loop() if args.served == "serve" else None
        with asyncio.Runner(loop_factory=new_loop) as runner:
            answered = runner.run(loop(args.child, args.rounds, given, args.served))
        if args.record:
            args.record.write_text(json.dumps(answered))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    apps = APPS if args.app == "all" else (args.app,)
    with tempfile.TemporaryDirectory() as tmp:
        answers = Path(tmp) / "answers.json"
        if "shaped" in apps:  # ours' answers, for the shaped server to give back
            argv = [sys.executable, __file__, "--child", "ours", "--rounds", "1", "--record", str(answers)]
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        figures = {name: per_call(name, args.rounds, answers, args.served) for name in apps}
    where = f"served by uvicorn, {args.served}" if args.served else "in process"
    print(f"instructions per tool call (valgrind, {where}, {args.rounds} and {2 * args.rounds} rounds):")
    for name, count in figures.items():
        versus = f"  {count / figures['bare']:.2f}x the bare server" if "bare" in figures else ""
        print(f"  {name:6} {count:>12,.0f}{versus}")
    facts.write(args.json, "instructions", args, {"per_call": {k: round(v) for k, v in figures.items()}})


if __name__ == "__main__":
    main()
