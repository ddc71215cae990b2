"""The permission matrix and the caller: who may do what, and as whom."""

from __future__ import annotations

import pytest

from vibe_ensemble.domain.caller import SYSTEM, Caller
from vibe_ensemble.domain.enums import TokenRole
from vibe_ensemble.domain.errors import InvalidInput, PermissionDenied
from vibe_ensemble.domain.permissions import PERMISSIONS, Op, allowed, may_change_issue

READS = {Op.PROJECT_READ, Op.AGENT_READ, Op.ISSUE_READ, Op.RESERVATION_READ, Op.KNOWLEDGE_READ, Op.EVENT_READ}


def test_every_role_has_a_row() -> None:
    assert set(PERMISSIONS) == set(TokenRole)


def test_viewer_only_reads() -> None:
    assert PERMISSIONS[TokenRole.VIEWER] == READS
    assert not allowed(TokenRole.VIEWER, Op.ISSUE_WRITE)
    assert not allowed(TokenRole.VIEWER, Op.MESSAGE_READ)  # a viewer has no inbox


def test_worker_works_but_does_not_coordinate_or_administer() -> None:
    for op in (Op.AGENT_ACT, Op.ISSUE_WRITE, Op.MESSAGE_SEND, Op.MESSAGE_READ, Op.RESERVATION_WRITE):
        assert allowed(TokenRole.WORKER, op), op
    for op in (
        Op.AGENT_RETIRE,
        Op.AGENT_COORDINATE,
        Op.ISSUE_ASSIGN_OTHERS,
        Op.TOKEN_ADMIN,
        Op.PROJECT_ADMIN,
        Op.AUDIT_READ,
    ):
        assert not allowed(TokenRole.WORKER, op), op


def test_coordinator_adds_retire_and_assign_but_not_admin() -> None:
    extra = PERMISSIONS[TokenRole.COORDINATOR] - PERMISSIONS[TokenRole.WORKER]
    assert extra == {
        Op.AGENT_RETIRE,
        Op.AGENT_COORDINATE,
        Op.ISSUE_ASSIGN_OTHERS,
        Op.ISSUE_CHANGE_CLAIMED,
        Op.MESSAGE_OVERSEE,  # the dashboard's mail bodies (docs/dashboard.md#mail)
    }
    assert not allowed(TokenRole.COORDINATOR, Op.TOKEN_ADMIN)


def test_admin_may_do_everything() -> None:
    assert PERMISSIONS[TokenRole.ADMIN] == frozenset(Op)


def test_roles_are_nested() -> None:
    viewer, worker, coordinator, admin = (
        PERMISSIONS[r] for r in (TokenRole.VIEWER, TokenRole.WORKER, TokenRole.COORDINATOR, TokenRole.ADMIN)
    )
    assert viewer < worker < coordinator < admin


def test_require_names_operation_and_role() -> None:
    viewer = Caller(credential_id=3, role=TokenRole.VIEWER, label="dash")
    with pytest.raises(PermissionDenied) as err:
        viewer.require(Op.ISSUE_WRITE)
    assert err.value.details == {"operation": "issue.write", "role": "viewer"}
    assert "viewer token may not do issue.write" in err.value.message
    SYSTEM.require(Op.TOKEN_ADMIN)  # the system caller is an admin


def test_project_slug_scope_wins_and_refuses_others() -> None:
    scoped = Caller(credential_id=1, role=TokenRole.WORKER, project="web")
    assert scoped.project_slug(None, "default") == "web"
    assert scoped.project_slug("web", "default") == "web"
    with pytest.raises(PermissionDenied, match="scoped to project 'web'"):
        scoped.project_slug("api", "default")
    unscoped = Caller(credential_id=2, role=TokenRole.WORKER)
    assert unscoped.project_slug(None, "default") == "default"
    assert unscoped.project_slug("api", "default") == "api"


def test_bound_agent_cannot_act_as_another() -> None:
    bound = Caller(credential_id=1, role=TokenRole.WORKER, project="web", agent="w1")
    assert bound.acting_agent(None) == "w1"
    assert bound.acting_agent("w1") == "w1"
    with pytest.raises(PermissionDenied) as err:
        bound.acting_agent("w2")
    assert "bound to agent 'w1' and cannot act as 'w2'" in err.value.message
    assert err.value.details == {"agent": "w2"}
    assert bound.display == "w1"


def test_team_token_names_its_agent() -> None:
    team = Caller(credential_id=9, role=TokenRole.COORDINATOR, label="ci")
    assert team.acting_agent("w2") == "w2"
    with pytest.raises(InvalidInput) as err:
        team.acting_agent(None)
    assert err.value.field == "agent"
    assert team.display == "token:ci"
    assert Caller(credential_id=9, role=TokenRole.WORKER).display == "token:9"


def test_claimed_issue_rule() -> None:
    for role in TokenRole:
        assert may_change_issue(role, "w2", None)  # nobody holds it
        assert may_change_issue(role, "w1", "w1")  # its assignee
    assert not may_change_issue(TokenRole.WORKER, "w2", "w1")
    assert not may_change_issue(TokenRole.WORKER, "token:ci", "w1")  # a token acting as no agent
    assert may_change_issue(TokenRole.COORDINATOR, "w2", "w1")
    assert may_change_issue(TokenRole.ADMIN, "token:ops", "w1")


def test_require_issue_change_names_the_rule() -> None:
    worker = Caller(credential_id=4, role=TokenRole.WORKER, agent="w2")
    worker.require_issue_change(7, "w2", "w2")
    with pytest.raises(PermissionDenied) as err:
        worker.require_issue_change(7, "w2", "w1")
    assert err.value.message.startswith(
        "issue 7 is claimed by w1: an issue claimed by an agent may be changed"
    )
    assert "anyone else may comment on it" in err.value.message
    assert err.value.details == {
        "operation": "issue.change_claimed",
        "role": "worker",
        "id": 7,
        "assignee": "w1",
        "actor": "w2",
    }
