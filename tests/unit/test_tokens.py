"""API tokens: recognisable, random, stored only as a digest."""

from __future__ import annotations

import hashlib

from vibe_ensemble.auth import tokens


def test_generate_is_prefixed_random_and_recognised() -> None:
    made = {tokens.generate() for _ in range(100)}
    assert len(made) == 100
    for token in made:
        assert token.startswith(tokens.TOKEN_PREFIX)
        assert len(token) == len(tokens.TOKEN_PREFIX) + 43  # 32 bytes, URL-safe base64 without padding
        assert tokens.looks_like_token(token)


def test_looks_like_token_refuses_other_shapes() -> None:
    assert not tokens.looks_like_token("")
    assert not tokens.looks_like_token("Bearer vibe_abc")
    assert not tokens.looks_like_token("vibe_short")
    assert not tokens.looks_like_token("ghp_" + "a" * 40)
    assert not tokens.looks_like_token("vibe_" + "a" * 300)


def test_digest_is_sha256_hex_and_deterministic() -> None:
    token = tokens.generate()
    assert tokens.digest(token) == hashlib.sha256(token.encode()).hexdigest()
    assert tokens.digest(token) == tokens.digest(token)
    assert len(tokens.digest(token)) == 64
    assert tokens.digest(token) != tokens.digest(tokens.generate())
    assert token not in tokens.digest(token)


def test_display_prefix_is_short_and_not_the_secret() -> None:
    token = tokens.generate()
    prefix = tokens.display_prefix(token)
    assert prefix == token[:12]
    assert prefix.startswith("vibe_")
    assert len(prefix) < len(token)


def test_same_compares_exactly() -> None:
    d = tokens.digest("vibe_" + "x" * 40)
    assert tokens.same(d, d)
    assert not tokens.same(d, tokens.digest("vibe_" + "y" * 40))
    assert not tokens.same(d, d[:-1])


def test_holds_token_finds_generated_tokens_not_words_after_the_prefix() -> None:
    """A label such as `vibe_ensemble_dashboard_reader` holds no token: only `vibe_` and a run of
    URL-safe characters as long as a generated token's random part is one (`redact`, for logs, cuts
    shorter runs too)."""
    token = tokens.generate()
    for text in (token, f"ci {token}", f"ci:{token}.", token + "_and_more"):
        assert tokens.holds_token(text), text
    for text in ("vibe_ensemble_dashboard_reader", "vibe_", "ci", token[:-1], token.removeprefix("vibe_")):
        assert not tokens.holds_token(text), text
