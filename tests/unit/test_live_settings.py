"""Production refuses SQLite behind several replicas; the live-feed settings take small test values."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from vibe_ensemble.ops.config import Settings, looks_random

SECRET = "qK7vR2xN9pL4mW8tZ3cF6hJ1bD5gS0yA"  # what secrets.token_urlsafe gives
OTHER, THIRD = "bgmI9IfmsC_Eielsk4s3cXQwXYCvbAvC", "hz8HI8OoMoNxzOJk0b106l-UdTI_KYUp"
SQLITE_REASON = "SQLite cannot serve several replicas: set VIBE_DATABASE_URL to PostgreSQL"


def test_sqlite_with_several_replicas_is_unsafe() -> None:
    default_sqlite = Settings(profile="production", replicas=2, request_state_key=SECRET)
    assert SQLITE_REASON in default_sqlite.unsafe_reasons()
    sqlite_file = Settings(replicas=3, request_state_key=SECRET, database_url="sqlite:///data/vibe.db")
    assert SQLITE_REASON in sqlite_file.unsafe_reasons()


def test_one_sqlite_process_or_postgres_replicas_are_fine() -> None:
    safe = {"request_state_key": SECRET, "session_secret": OTHER, "metrics_token": THIRD}
    assert Settings(replicas=1, **safe).unsafe_reasons() == []
    postgres = Settings(replicas=5, database_url="postgresql://db/vibe", **safe)
    assert postgres.unsafe_reasons() == []


def test_presence_and_feed_timings_accept_small_values_and_refuse_nonsense() -> None:
    quick = Settings(offline_after_s=0.5, sweep_interval_s=0.1, leader_retry_s=0.1, feed_keepalive_s=0.2)
    assert (quick.offline_after_s, quick.feed_keepalive_s) == (0.5, 0.2)
    for field in ("offline_after_s", "sweep_interval_s", "leader_retry_s", "feed_send_timeout_s"):
        with pytest.raises(ValidationError, match=field):
            Settings(**{field: 0})
    with pytest.raises(ValidationError, match="feed_keepalive_s"):
        Settings(feed_keepalive_s=301)


def test_the_database_pool_size_is_read_from_the_environment_and_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("VIBE_DB_POOL_SIZE", raising=False)
    assert Settings().db_pool_size == 20
    monkeypatch.setenv("VIBE_DB_POOL_SIZE", "7")
    assert Settings().db_pool_size == 7
    for nonsense in (0, 501):
        with pytest.raises(ValidationError, match="db_pool_size"):
            Settings(db_pool_size=nonsense)


@pytest.mark.parametrize(
    "guessable",
    ["a" * 32, "ab" * 20, "abcdefghijklmnopqrstuvwxyz012345", "password" * 4, "qwertyuiopasdfgh" * 2],
)
def test_production_refuses_guessable_secrets(guessable: str) -> None:
    reasons = Settings(
        request_state_key=guessable, session_secret=guessable, metrics_token=guessable
    ).unsafe_reasons()
    assert any(r.startswith("VIBE_REQUEST_STATE_KEY looks guessable") for r in reasons), reasons
    assert any(r.startswith("VIBE_METRICS_TOKEN looks guessable") for r in reasons), reasons
    assert any(r.startswith("VIBE_SESSION_SECRET looks guessable") and "openssl rand" in r for r in reasons)


def test_generated_secrets_pass() -> None:
    import secrets

    # 128 random bits and up, in the forms people generate them (32 characters is the shortest);
    # 20,000 of each, as a secret that fails once in thousands would refuse someone's deployment.
    makers = [
        lambda: secrets.token_urlsafe(32),
        lambda: secrets.token_hex(32),
        lambda: secrets.token_urlsafe(24),
        lambda: secrets.token_hex(16),
    ]
    for make in makers:
        assert all(looks_random(make()) for _ in range(20_000))
        settings = Settings(request_state_key=make(), session_secret=make(), metrics_token=make())
        assert settings.unsafe_reasons() == []


def test_production_requires_a_metrics_token() -> None:
    """/metrics on a production server answers only a bearer token; a missing or short one is refused."""
    for token in ("", "short", "  " + "x" * 10 + "  "):
        settings = Settings(request_state_key=SECRET, session_secret=OTHER, metrics_token=token)
        assert settings.unsafe_reasons() == [
            "VIBE_METRICS_TOKEN is unset or shorter than 32 characters: set a random secret and give it to "
            "Prometheus as its bearer token (docs/operations.md#metrics)"
        ], token


def test_the_metrics_token_is_stripped() -> None:
    """A token read from a file ends in a newline; Prometheus strips its credentials file too."""
    assert Settings(metrics_token=f" {SECRET}\n").metrics_token == SECRET


def test_production_refuses_the_templates_placeholder_and_one_secret_for_two() -> None:
    """deployment/k8s/secret-template.yaml's placeholder is long and varied enough to pass the other
    tests: applied unfilled, it was served with. One value for two secrets gives whoever holds the
    metrics token (Prometheus) the key that signs sessions."""
    template = "REPLACE-with-at-least-32-random-characters"
    reasons = Settings(request_state_key=template, session_secret=OTHER, metrics_token=THIRD).unsafe_reasons()
    assert reasons == [
        "VIBE_REQUEST_STATE_KEY is the placeholder of deployment/k8s/secret-template.yaml: set a random "
        "secret, e.g. `openssl rand -hex 32` or "
        '`python -c "import secrets; print(secrets.token_urlsafe(32))"`'
    ]
    shared = Settings(request_state_key=SECRET, session_secret=OTHER, metrics_token=OTHER).unsafe_reasons()
    assert [r.split(":")[0] for r in shared] == ["VIBE_METRICS_TOKEN is the same as VIBE_SESSION_SECRET"]
