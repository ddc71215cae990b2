"""Structured logging (structlog): console for people, JSON for machines."""

from __future__ import annotations

import logging
from typing import Any

import structlog

from vibe_ensemble.auth import tokens
from vibe_ensemble.ops.config import Settings


class RedactTokens(logging.Filter):
    """Cuts every API token in a standard-library log record down to its display prefix."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = tokens.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def _redact(_: Any, __: str, event_dict: structlog.types.EventDict) -> structlog.types.EventDict:
    scrubbed: structlog.types.EventDict = tokens.scrub(event_dict)
    return scrubbed


def configure_logging(settings: Settings) -> None:
    level = getattr(logging, settings.log_level.upper(), logging.INFO)
    logging.basicConfig(level=level, format="%(message)s")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactTokens) for f in handler.filters):
            handler.addFilter(RedactTokens())
    # Libraries' routine chatter (alembic's context, the MCP session manager) is not news at INFO.
    for name in ("alembic", "mcp"):
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if settings.log_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.format_exc_info,
            _redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=None),
    )
