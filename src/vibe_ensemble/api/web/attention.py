"""The home page's "Needs attention" panel: what it renders (its routes are in `attention_views`).

The rules live in `domain.attention` (documented in docs/dashboard.md#needs-attention); their
thresholds come from the settings. The panel is its own live region: it follows the feed like the
board, and also re-fetches itself when time alone changes the answer (`recheck_s`: a message
becoming overdue, a lease entering its warning window, an agent falling silent).
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from fastapi import Request

from vibe_ensemble.api.web import session as sessions
from vibe_ensemble.api.web.login import Visit
from vibe_ensemble.domain.attention import AttentionRules
from vibe_ensemble.domain.permissions import Op

FRAGMENT = "/fragments/attention"
FAMILIES = ("agent.*", "issue.*", "message.*", "reservation.*")


def rules_of(request: Request) -> AttentionRules:
    """The thresholds from this server's settings."""
    settings = request.app.state.runtime.settings
    return AttentionRules(
        silent_after=timedelta(seconds=settings.offline_after_s),
        ack_after=timedelta(seconds=settings.attention_ack_after_s),
        lease_warning=timedelta(seconds=settings.attention_lease_warning_s),
        conflict_window=timedelta(seconds=settings.attention_conflict_window_s),
    )


async def context(visit: Visit, project: str) -> dict[str, Any]:
    """What `_attention.html` renders."""
    found = await visit.services.attention.overview(
        visit.caller, project=project, rules=rules_of(visit.request)
    )
    recheck = None
    if found.recheck_at is not None:
        recheck = max(1, math.ceil((found.recheck_at - found.now).total_seconds()))
    return {
        "attention": found,
        "recheck_s": recheck,
        "may_release": visit.may(Op.AGENT_RETIRE),
        "csrf": visit.csrf,
        "csrf_field": sessions.CSRF_FIELD,
    }
