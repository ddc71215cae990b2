"""Where `vibe-ensemble connect` keeps an agent's token in its repository, and how it is read back
(by the client hooks and the commit guard): `.vibe-ensemble/token.env`, a git-ignored env file
with one `VIBE_ENSEMBLE_TOKEN=…` line, readable by its owner only."""

from __future__ import annotations

from pathlib import Path

from vibe_ensemble.auth import tokens

TOKEN_VAR = "VIBE_ENSEMBLE_TOKEN"  # a variable name, not a secret  # noqa: S105  # nosec B105
LOCAL_DIR = ".vibe-ensemble"
TOKEN_FILE = "token.env"  # a file name, not a secret  # noqa: S105  # nosec B105


def token_file(project: Path) -> Path:
    return project / LOCAL_DIR / TOKEN_FILE


def token_in(text: str) -> str | None:
    """The token a token file holds: the `VIBE_ENSEMBLE_TOKEN=` line of the env file `connect` writes
    (comments and blank lines aside), or the token alone. None when that is not a well-formed token."""
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    for line in lines:
        name, equals, value = line.partition("=")
        if equals and name.strip().removeprefix("export ").strip() == TOKEN_VAR:
            value = value.strip().strip("'\"")
            return value if tokens.well_formed(value) else None
    return lines[0] if len(lines) == 1 and tokens.well_formed(lines[0]) else None


def read_token(project: Path) -> str | None:
    path = token_file(project)
    return token_in(path.read_text()) if path.exists() else None
