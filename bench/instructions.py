"""Instructions per tool call, counted by valgrind: a figure that does not drift with the machine.

    python bench/instructions.py                 # ours, the bare server and the shaped one, 100 rounds
    python bench/instructions.py --app ours      # one app only
    python bench/instructions.py --rounds 300 --json out/instructions.json

CPU time on a shared machine drifts by more than most changes save (bench/stack.py's figures moved
by 10-20% between identical runs), so comparing two versions of the code by time needs many runs.
The number of instructions a call executes does not drift: each app runs the swarm's loop in process
(bench/stack.py: `send_message` to the next agent, then `fetch_inbox`, no sockets) under valgrind's
cachegrind with a fixed hash seed, once for `rounds` rounds and once for twice as many, and the
difference divided by the calls between them is what one call costs, start-up excluded. Two runs of
the same code agree to 0.01%. Instructions are not time: the kernel's work (an fsync, a socket) and
waits on memory are not counted, so this tells which version does less work, not how long a call
takes. The apps are ours (on a temporary SQLite file), the bare server (bench/bare_server.py) and
the shaped one (the bare server answering with ours' last answers). Needs valgrind (Debian's
`valgrind` package); a run takes a few minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import facts  # bench/facts.py
from bare_server import asgi, build, build_shaped  # bench/bare_server.py
from stack import AGENTS, Caller, start_ours  # bench/stack.py

WARM_UP = 100  # rounds before the counted ones: caches, plans, the first request's work
APPS = ("ours", "bare", "shaped")


async def loop(app_name: str, rounds: int, answers: dict[str, Any]) -> dict[str, Any]:
    """The child: warm up, then `rounds` rounds of the loop against one app, in process; the app's
    last answers (`answers`: ours', for the shaped server)."""
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
        for i in range(WARM_UP + rounds):
            me, peer = i % AGENTS, (i + 1) % AGENTS
            # The same arguments every tenth round: a run and one twice as long do the same calls.
            subject = f"round {i % 10}"
            await client.call(
                tokens[me], "send_message", {"to": [names[peer]], "subject": subject, "body": "x" * 200}
            )
            await client.call(tokens[peer], "fetch_inbox", {"limit": 20, "unread_only": True})
        return client.answers


def counted(app_name: str, rounds: int, answers: Path) -> int:
    """Instructions of one child run under cachegrind (start-up included)."""
    argv = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]
    argv += [
        sys.executable,
        __file__,
        "--child",
        app_name,
        "--rounds",
        str(rounds),
        "--answers",
        str(answers),
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"{app_name}: valgrind run failed\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def per_call(app_name: str, rounds: int, answers: Path) -> float:
    with ThreadPoolExecutor(max_workers=2) as pool:  # the two runs side by side (two cores)
        short, long = pool.map(lambda n: counted(app_name, n, answers), (rounds, 2 * rounds))
    return (long - short) / (2 * rounds)  # two calls a round


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--app", choices=[*APPS, "all"], default="all")
    parser.add_argument("--rounds", type=int, default=100, help="the shorter run's rounds (default 100)")
    parser.add_argument("--json", type=Path, help="write the figures and machine facts here")
    parser.add_argument("--child", choices=APPS, help=argparse.SUPPRESS)
    parser.add_argument("--answers", type=Path, help=argparse.SUPPRESS)  # the shaped server's, to read
    parser.add_argument("--record", type=Path, help=argparse.SUPPRESS)  # where ours writes its answers
    args = parser.parse_args()
    if args.child:
        given = json.loads(args.answers.read_text()) if args.child == "shaped" else {}
        answered = asyncio.run(loop(args.child, args.rounds, given))
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
        figures = {name: per_call(name, args.rounds, answers) for name in apps}
    print(f"instructions per tool call (valgrind, in process, {args.rounds} and {2 * args.rounds} rounds):")
    for name, count in figures.items():
        versus = f"  {count / figures['bare']:.2f}x the bare server" if "bare" in figures else ""
        print(f"  {name:6} {count:>12,.0f}{versus}")
    facts.write(args.json, "instructions", args, {"per_call": {k: round(v) for k, v in figures.items()}})


if __name__ == "__main__":
    main()
