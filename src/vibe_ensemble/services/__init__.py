"""The service layer: one module per capability. Every front door calls these."""

from __future__ import annotations

from vibe_ensemble.services.agents import AgentService
from vibe_ensemble.services.attention import AttentionService
from vibe_ensemble.services.audit import AuditService
from vibe_ensemble.services.backups import BackupLogService
from vibe_ensemble.services.base import ServiceContext
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
    """All services over one context (database, event hub, clock)."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.projects = ProjectService(ctx)
        self.agents = AgentService(ctx)
        ctx.presence.refresh = self.agents.heard_from  # an agent heard from: its presence written
        self.issues = IssueService(ctx)
        self.messages = MessageService(ctx)
        self.events = EventService(ctx)
        self.tokens = TokenService(ctx)
        self.live = LiveService(ctx, self.events, self.messages, self.tokens)
        self.audit = AuditService(ctx)
        self.reservations = ReservationService(ctx)
        self.knowledge = KnowledgeService(ctx)
        self.briefings = BriefingService(ctx)
        self.attention = AttentionService(ctx)
        self.dashboard = DashboardService(ctx)
        self.oversight = OversightService(ctx)
        self.threads = ThreadService(ctx)
        self.insight = InsightService(ctx)
        self.backups = BackupLogService(ctx)
        self.stats = StatsService(ctx)


__all__ = ["ServiceContext", "Services"]
