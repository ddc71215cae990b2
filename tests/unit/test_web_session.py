"""Dashboard session cookies and CSRF tokens: signed, expiring, bound to one session and one key."""

from __future__ import annotations

from datetime import UTC, datetime

from vibe_ensemble.api.web import session
from vibe_ensemble.ops.config import Settings

KEY = b"k" * 32
NOW = 1_800_000_000.0


def test_a_cookie_names_its_credential_until_it_expires() -> None:
    started = session.issue(KEY, 42, ttl_s=3600, now=NOW)
    found = session.read(KEY, started.value, now=NOW + 10)
    assert found == started and found.credential_id == 42 and found.expires == int(NOW) + 3600
    assert session.read(KEY, started.value, now=NOW + 3600) is None
    assert session.issue(KEY, 42, ttl_s=3600, now=NOW).value != started.value  # a fresh nonce each time


def test_a_session_never_outlives_its_token() -> None:
    expires = datetime.fromtimestamp(NOW + 600, UTC)
    assert session.lifetime(3600, None, now=NOW) == 3600  # a token that never expires
    assert session.lifetime(3600, expires, now=NOW) == 600  # cut to the token's expiry
    assert session.lifetime(300, expires, now=NOW) == 300  # the configured bound when it is sooner
    assert session.lifetime(3600, expires, now=NOW + 599.5) == 1  # never zero: a cookie that lives


def test_forged_or_malformed_cookies_are_refused() -> None:
    value = session.issue(KEY, 42, ttl_s=3600, now=NOW).value
    version, _, expires, nonce, signature = value.split(".")
    forged = [
        f"{version}.1.{expires}.{nonce}.{signature}",  # another credential, same signature
        f"{version}.42.{int(expires) + 9999}.{nonce}.{signature}",  # a later expiry
        value[:-2] + ("AA" if not value.endswith("AA") else "BB"),
        "",
        "v1.42",
        "v2." + value[3:],
        "v1.x.1.n." + signature,
        value + "." * 300,
        f"{version}.42.{expires}.{nonce}.é",  # a non-ASCII signature (compare_digest raised TypeError)
        f"{version}.42.{expires}.{nonce}.{signature[:-1]}\u00ff",
    ]
    for cookie in forged:
        assert session.read(KEY, cookie, now=NOW) is None, cookie
    assert session.read(b"another key of 32 bytes ........", value, now=NOW) is None


def test_csrf_tokens_belong_to_one_session_and_one_key() -> None:
    one = session.issue(KEY, 42, ttl_s=3600, now=NOW)
    two = session.issue(KEY, 42, ttl_s=3600, now=NOW)
    token = session.csrf_token(KEY, one)
    assert session.csrf_ok(KEY, one, token)
    assert not session.csrf_ok(KEY, two, token)
    assert not session.csrf_ok(b"x" * 32, one, token)
    assert not session.csrf_ok(KEY, one, "")
    assert token not in one.value


def test_without_a_configured_secret_each_process_gets_a_random_key() -> None:
    assert session.session_key(Settings()) != session.session_key(Settings())
    configured = Settings(session_secret="s" * 40)
    assert session.session_key(configured) == b"s" * 40
    assert "VIBE_SESSION_SECRET is unset or shorter than 32 characters: set a random secret" in (
        Settings(session_secret="short").unsafe_reasons()
    )
