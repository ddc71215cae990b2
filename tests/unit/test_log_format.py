"""VIBE_LOG_JSON chooses the format: one JSON object per line, or `key=value` text for people."""

from __future__ import annotations

import json
from typing import Any

import pytest
import structlog
from hypothesis import example, given
from hypothesis import strategies as st

from vibe_ensemble.ops.config import Settings
from vibe_ensemble.ops.logging import LogfmtRenderer, configure_logging, safe_name


@pytest.fixture(autouse=True)
def _restore() -> None:
    yield
    structlog.reset_defaults()


def test_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(Settings(log_json=True))
    structlog.get_logger("t").info("tool_call", tool="claim_issue", outcome="ok", latency_ms=1.5)
    line = json.loads(capsys.readouterr().out.strip())
    assert line["event"] == "tool_call" and line["tool"] == "claim_issue" and line["level"] == "info"
    assert "timestamp" in line


def test_text_lines(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(Settings(log_json=False))
    structlog.get_logger("t").info("tool_call", tool="claim_issue", outcome="ok")
    out = capsys.readouterr().out
    assert "tool_call" in out and "tool=claim_issue" in out
    with pytest.raises(json.JSONDecodeError):
        json.loads(out)


def test_only_names_are_logged_as_names() -> None:
    assert safe_name("agent-7.b_x") == "agent-7.b_x"
    for bad in ("a b", "x\ny", "<b>", "", "-lead", "a" * 65, 7, None):
        assert safe_name(bad) is None


_TEXT = st.text(alphabet=' ="\\\n\tab=é\x00', max_size=8)  # what needs quoting or escaping, and not
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=6,
)
_KEYS = st.sampled_from(["timestamp", "level", "event", "request_id", "route"]) | st.text(
    alphabet="ab_.é-", min_size=1, max_size=8
)


@given(st.dictionaries(_KEYS, _VALUES, max_size=8))
@example({"event": "e", "level": None, "a": "x\\y", "b": "x \\y", "c": 'say "hi"', "d": "1\n2", "e": True})
@example({"timestamp": "t", "a": False, "b": None, "c": {"k": 'v "w"'}, "d": ["a=b"], "e": 1.5, "f": ""})
def test_our_logfmt_lines_are_structlogs(event: dict[str, Any]) -> None:
    """The faster renderer writes what structlog's would, quoting and escaping included."""
    theirs = structlog.processors.LogfmtRenderer(key_order=["timestamp", "level", "event"], drop_missing=True)
    assert LogfmtRenderer()(None, "info", dict(event)) == theirs(None, "info", dict(event))


def test_a_key_with_a_space_or_control_character_is_refused_every_time() -> None:
    renderer = LogfmtRenderer()
    assert renderer(None, "info", {"event": "e", "ok": 'say "hi"\\n'}) == 'event=e ok="say \\"hi\\"\\\\n"'
    for _ in range(2):  # an invalid key is not remembered as checked
        for bad in ("a b", "a\tb", "a\x00"):
            with pytest.raises(ValueError, match="Invalid key"):
                renderer(None, "info", {"event": "e", bad: 1})


@pytest.mark.parametrize("json_lines", [True, False])
def test_a_librarys_own_line_is_written_in_the_same_format(json_lines: bool) -> None:
    """uvicorn's "Cancel 2 running task(s), timeout graceful shutdown exceeded" was a plain line
    in a JSON log: one a log pipeline cannot read."""
    import io
    import logging

    # As an earlier uvicorn.Config in the same process (without log_config=None) leaves them: uvicorn's
    # loggers with a handler of their own that does not propagate (how this failed in CI).
    uvicorn_logger = logging.getLogger("uvicorn")
    uvicorn_logger.addHandler(logging.StreamHandler(io.StringIO()))
    uvicorn_logger.propagate = False
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        configure_logging(Settings(log_json=json_lines))
        logging.getLogger("uvicorn.error").error("Cancel %d running task(s)", 2)
    finally:
        root.removeHandler(handler)
    line = stream.getvalue().strip()
    if json_lines:
        event = json.loads(line)
        assert (event["event"], event["level"], event["logger"]) == (
            "Cancel 2 running task(s)",
            "error",
            "uvicorn.error",
        )
        assert "timestamp" in event
    else:
        assert "level=error" in line and "logger=uvicorn.error" in line and "Cancel 2 running task(s)" in line


_WRITER = """
import sys
import structlog
from vibe_ensemble.ops.config import Settings
from vibe_ensemble.ops.logging import configure_logging
configure_logging(Settings(log_json=True))
log = structlog.get_logger("t")
for i in range(3000):
    log.info("http_request", worker=sys.argv[1], n=i, pad="x" * 200)
"""


def test_processes_sharing_one_unbuffered_stdout_write_whole_lines() -> None:
    """`serve --workers N` runs N processes on one stdout (unbuffered in the image,
    PYTHONUNBUFFERED=1): each line is written whole, in one write, so a log pipeline reads one JSON
    object per line. Written as the line and then its newline, two workers' lines ran together."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    read, write = os.pipe()
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(w)], stdout=write, env=env) for w in range(3)
    ]
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        out = pipe.read()
    assert all(w.wait(60) == 0 for w in writers)
    lines = out.decode().split("\n")
    assert lines[-1] == ""  # ends with a newline
    parsed = [json.loads(line) for line in lines[:-1]]  # each line one whole JSON object, no blank one
    expected = [(str(w), i) for w in range(3) for i in range(3000)]
    assert sorted((p["worker"], p["n"]) for p in parsed) == expected
