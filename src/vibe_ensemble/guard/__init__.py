"""The git commit guard: the pre-commit hook (`hook`) and its `vibe-ensemble guard …` commands (`cli`)."""

from vibe_ensemble.guard.hook import GuardError, Installed, Outcome, check, install

__all__ = ["GuardError", "Installed", "Outcome", "check", "install"]
