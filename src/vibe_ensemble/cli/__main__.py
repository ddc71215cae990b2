"""`python -m vibe_ensemble.cli …` (what the commit hook and the tests run)."""

from vibe_ensemble.cli import main

main()
