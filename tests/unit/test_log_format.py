"""VIBE_LOG_JSON chooses the format: one JSON object per line, or `key=value` text for people."""

from __future__ import annotations

import json

import pytest
import structlog

from vibe_ensemble.ops.config import Settings
from vibe_ensemble.ops.logging import configure_logging, safe_name


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
