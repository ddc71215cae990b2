"""The service layer: one module per capability. Every front door calls these.

`Services` makes each service the first time it is used, and imports its module then: a CLI command
that lists tokens loads the token and project services, not the other sixteen; a server makes them
all when it starts (`make_all`). docs/operations.md has what that saves a command.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from vibe_ensemble.services.base import ServiceContext

if TYPE_CHECKING:
    from vibe_ensemble.services.agents import AgentService
    from vibe_ensemble.services.attention import AttentionService
    from vibe_ensemble.services.audit import AuditService
    from vibe_ensemble.services.backups import BackupLogService
    from vibe_ensemble.services.briefings import BriefingService
    from vibe_ensemble.services.dashboard import DashboardService
    from vibe_ensemble.services.events import EventService
    from vibe_ensemble.services.insight import InsightService
    from vibe_ensemble.services.issues import IssueService
    from vibe_ensemble.services.knowledge import KnowledgeService
    from vibe_ensemble.services.live import LiveService
    from vibe_ensemble.services.messages import MessageService
    from vibe_ensemble.services.oversight import OversightService
    from vibe_ensemble.services.projects import ProjectService
    from vibe_ensemble.services.reservations import ReservationService
    from vibe_ensemble.services.stats import StatsService
    from vibe_ensemble.services.threads import ThreadService
    from vibe_ensemble.services.tokens import TokenService


class Services:
    """All services over one context (database, event hub, clock), each made on first use."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    @cached_property
    def projects(self) -> ProjectService:
        from vibe_ensemble.services.projects import ProjectService

        return ProjectService(self.ctx)

    @cached_property
    def agents(self) -> AgentService:
        from vibe_ensemble.services.agents import AgentService

        return AgentService(self.ctx)

    @cached_property
    def issues(self) -> IssueService:
        from vibe_ensemble.services.issues import IssueService

        return IssueService(self.ctx)

    @cached_property
    def messages(self) -> MessageService:
        from vibe_ensemble.services.messages import MessageService

        return MessageService(self.ctx)

    @cached_property
    def events(self) -> EventService:
        from vibe_ensemble.services.events import EventService

        return EventService(self.ctx)

    @cached_property
    def live(self) -> LiveService:
        from vibe_ensemble.services.live import LiveService

        return LiveService(self.ctx, self.events, self.messages)

    @cached_property
    def tokens(self) -> TokenService:
        from vibe_ensemble.services.tokens import TokenService

        return TokenService(self.ctx)

    @cached_property
    def audit(self) -> AuditService:
        from vibe_ensemble.services.audit import AuditService

        return AuditService(self.ctx)

    @cached_property
    def reservations(self) -> ReservationService:
        from vibe_ensemble.services.reservations import ReservationService

        return ReservationService(self.ctx)

    @cached_property
    def knowledge(self) -> KnowledgeService:
        from vibe_ensemble.services.knowledge import KnowledgeService

        return KnowledgeService(self.ctx)

    @cached_property
    def briefings(self) -> BriefingService:
        from vibe_ensemble.services.briefings import BriefingService

        return BriefingService(self.ctx)

    @cached_property
    def attention(self) -> AttentionService:
        from vibe_ensemble.services.attention import AttentionService

        return AttentionService(self.ctx)

    @cached_property
    def dashboard(self) -> DashboardService:
        from vibe_ensemble.services.dashboard import DashboardService

        return DashboardService(self.ctx)

    @cached_property
    def oversight(self) -> OversightService:
        from vibe_ensemble.services.oversight import OversightService

        return OversightService(self.ctx)

    @cached_property
    def threads(self) -> ThreadService:
        from vibe_ensemble.services.threads import ThreadService

        return ThreadService(self.ctx)

    @cached_property
    def insight(self) -> InsightService:
        from vibe_ensemble.services.insight import InsightService

        return InsightService(self.ctx)

    @cached_property
    def backups(self) -> BackupLogService:
        from vibe_ensemble.services.backups import BackupLogService

        return BackupLogService(self.ctx)

    @cached_property
    def stats(self) -> StatsService:
        from vibe_ensemble.services.stats import StatsService

        return StatsService(self.ctx)

    def make_all(self) -> None:
        """Make every service now: a server uses them all, and each one's metrics series (the
        `service` label of `vibe_db_transaction_seconds`) is then on /metrics from the start."""
        for name, attribute in vars(Services).items():
            if isinstance(attribute, cached_property):
                getattr(self, name)

    def made(self, name: str) -> bool:
        """Whether the service `name` has been made (used) yet."""
        return name in vars(self)


__all__ = ["ServiceContext", "Services"]
