from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.services import Services


async def test_register_and_create(services: Services, admin: Caller) -> None:
    agent = await services.agents.register(admin, name="a1")
    issue = await services.issues.create(admin, title="t", agent="a1")
    claimed = await services.issues.claim(admin, issue.id, agent="a1")
    assert agent.name == "a1"
    assert claimed.assignee == "a1"
