"""The event log's live side: fan-out inside a process, and across replicas."""

from vibe_ensemble.events.hub import EventHub

__all__ = ["EventHub"]
