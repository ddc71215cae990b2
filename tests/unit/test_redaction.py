"""Tokens never reach logs or the audit log: every token-shaped string is cut to its display prefix."""

from __future__ import annotations

import json
import logging

import structlog

from vibe_ensemble.auth import tokens
from vibe_ensemble.ops.logging import LogfmtRenderer, RedactedLines, RedactTokens


def test_redact_keeps_the_prefix_only() -> None:
    secret = tokens.generate()
    assert tokens.redact(f"Bearer {secret}, again {secret}.") == (
        f"Bearer {secret[:12]}…, again {secret[:12]}…."
    )
    assert tokens.redact("vibe_short and vibe-ensemble stay") == "vibe_short and vibe-ensemble stay"


def test_scrub_walks_nested_values_and_keys() -> None:
    secret = tokens.generate()
    scrubbed = tokens.scrub({"a": [secret, {"b": (secret, 3)}], secret: None, "n": 1})
    assert secret not in repr(scrubbed)
    assert scrubbed["n"] == 1
    assert scrubbed["a"][1]["b"][1] == 3


def test_log_records_are_redacted() -> None:
    secret = tokens.generate()
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "auth header was %s", (secret,), None)
    assert RedactTokens().filter(record)
    assert secret not in record.getMessage()
    assert secret[:12] in record.getMessage()


def test_structlog_lines_are_redacted_in_both_formats() -> None:
    secret = tokens.generate()
    for renderer in (LogfmtRenderer(), structlog.processors.JSONRenderer()):
        event = {"event": "login", "token": secret, "nested": [secret], secret: 1, "n": 2}
        line = RedactedLines(renderer)(None, "warning", event)
        assert secret not in line
        assert f"{secret[:12]}…" in line
        assert "n=2" in line or '"n": 2' in line
    parsed = json.loads(RedactedLines(structlog.processors.JSONRenderer())(None, "info", {"t": secret}))
    assert parsed == {"t": f"{secret[:12]}…"}


def test_our_own_package_paths_are_not_taken_for_tokens() -> None:
    """A traceback names files under vibe_ensemble/: they stay whole; a token beside them does not."""
    from vibe_ensemble.auth import tokens

    secret = tokens.generate()
    line = f'File "/srv/src/vibe_ensemble/store/faults.py", line 102, token {secret}'
    shown = tokens.redact(line)
    assert "/srv/src/vibe_ensemble/store/faults.py" in shown
    assert secret not in shown and secret[:12] in shown
