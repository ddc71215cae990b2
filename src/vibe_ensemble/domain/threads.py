"""Mail as the dashboard shows it: conversations (threads), their messages, and each recipient's
read and acknowledged state."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from vibe_ensemble.domain.enums import Importance

OVERSEER_PREFIX = "token:"  # a sender no agent name can spell: a person, through a token


def is_overseer(sender: str) -> bool:
    """Whether mail came from a person (a token acting as no agent) rather than an agent."""
    return sender.startswith(OVERSEER_PREFIX)


@dataclass
class ThreadSummary:
    thread_id: str
    subject: str  # the first message's
    messages: int
    participants: list[str]  # senders and recipients, by name
    last_at: datetime
    last_sender: str
    importance: Importance  # the highest of its messages
    unacked: int  # deliveries asked to be acknowledged and not yet acknowledged


@dataclass
class Delivery:
    recipient: str
    read_at: datetime | None
    acked_at: datetime | None


@dataclass
class ThreadMessage:
    id: int
    sender: str
    subject: str
    body: str | None  # None: the caller may not read bodies
    importance: Importance
    ack_required: bool
    created_at: datetime
    to_role: str | None
    broadcast: bool
    deliveries: list[Delivery] = field(default_factory=list)

    @property
    def overseer(self) -> bool:
        return is_overseer(self.sender)


@dataclass
class Thread:
    project: str
    thread_id: str
    messages: list[ThreadMessage]  # oldest first
    bodies: bool  # whether bodies are shown to this caller
    more: int = 0  # older messages not shown


@dataclass
class MailHit:
    id: int
    thread_id: str
    sender: str
    subject: str
    importance: Importance
    created_at: datetime
    snippet: str  # the body around the matches, marked « » ("" when bodies are not shown)


IMPORTANCE_RANK = {Importance.LOW: 0, Importance.NORMAL: 1, Importance.HIGH: 2, Importance.URGENT: 3}
