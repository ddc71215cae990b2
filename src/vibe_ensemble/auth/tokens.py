"""API tokens: random, recognisable, stored only as a hash."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Any

TOKEN_PREFIX = "vibe_"  # noqa: S105 - a public marker, not a secret  # nosec B105
_DISPLAY = 12  # "vibe_" and the first characters: enough to recognise a token, useless to use it


_RANDOM_BYTES = 32
_RANDOM_CHARS = -(-_RANDOM_BYTES * 4 // 3)  # 43: the bytes in URL-safe base64, without padding


def generate() -> str:
    """A new token: `vibe_` followed by 256 random bits, URL-safe."""
    return TOKEN_PREFIX + secrets.token_urlsafe(_RANDOM_BYTES)


def digest(token: str) -> str:
    """The stored form. Tokens carry 256 random bits, so one SHA-256 is enough (no salt, no stretching)."""
    return hashlib.sha256(token.encode()).hexdigest()


def display_prefix(token: str) -> str:
    return token[:_DISPLAY]


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def looks_like_token(value: str) -> bool:
    return value.startswith(TOKEN_PREFIX) and 20 <= len(value) <= 200


_TOKEN_IN_TEXT = re.compile(re.escape(TOKEN_PREFIX) + r"[A-Za-z0-9_-]{15,}")  # well_formed: 20 and more


def well_formed(value: str) -> bool:
    """A token as `generate` makes them: it looks like one and holds only URL-safe characters, so it
    is a valid header value and `redact` cuts all of it, wherever it is printed."""
    return looks_like_token(value) and _TOKEN_IN_TEXT.fullmatch(value) is not None


_GENERATED_IN_TEXT = re.compile(re.escape(TOKEN_PREFIX) + f"[A-Za-z0-9_-]{{{_RANDOM_CHARS},}}")


def holds_token(text: str) -> bool:
    """Whether `text` holds a token as `generate` makes them: `vibe_` and a run of URL-safe characters
    at least as long as its random part. Narrower than what `redact` cuts (from 15 characters on, for
    a log may hold a token cut short), so that a name such as `vibe_ensemble_dashboard_reader` is
    not taken for a token."""
    return TOKEN_PREFIX in text and _GENERATED_IN_TEXT.search(text) is not None


def redact(text: str) -> str:
    """`text` with every token in it cut to its display prefix (`vibe_AbCdEfG…`)."""
    if TOKEN_PREFIX not in text:  # nearly every text: a substring test costs a fraction of the regex
        return text
    return _TOKEN_IN_TEXT.sub(lambda m: display_prefix(m.group(0)) + "…", text)


def scrub(value: Any) -> Any:
    """`value` (JSON-like: dicts, lists, strings) with every token in it redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(str(k)): scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value
