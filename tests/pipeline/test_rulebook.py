"""The rule book: every route's rule for an event in one Rego call, each route keeping its own answer
and its own errors (issue #15: a route that does not match must cost next to nothing)."""

from __future__ import annotations

import pytest

from postee.pipeline.events import parse_event
from postee.pipeline.rulebook import RuleBook
from postee.rego.engine import RegoEvalError
from postee.rego.pool import open_rego_pool
from postee.rego.rules import build_rule

RULES = {
    "team-a": 'input.team == "a"',
    "team-b": 'input.team == "b"',
    "critical": "input.critical > 0",
    "divides": "input.total / input.parts > 1",  # regorus: an evaluation error when parts is 0
    "everything": None,  # no rule: every event, no Rego call
}


def book(pool) -> RuleBook:
    return RuleBook(pool, {name: build_rule(name, text) for name, text in RULES.items()})


def said(decisions: dict) -> dict:
    return {name: f"error: {d.message}" if isinstance(d, Exception) else d for name, d in decisions.items()}


async def test_every_route_is_answered_from_one_worker_call():
    async with open_rego_pool("regorus", isolation="thread", workers=1) as pool:
        rulebook = book(pool)
        event = parse_event(b'{"team": "b", "critical": 2, "total": 4, "parts": 1}')
        decisions = await rulebook.decide(event, list(RULES))
        assert rulebook.calls == 1 and pool.stats.evaluations == 1  # four rules, one query
    assert decisions == {"team-a": False, "team-b": True, "critical": True, "divides": True, "everything": True}


async def test_a_rule_that_errors_fails_its_route_alone_with_its_own_message():
    event = parse_event(b'{"team": "a", "critical": 0, "total": 4, "parts": 0}')
    async with open_rego_pool("regorus", isolation="thread", workers=1) as pool:
        rulebook = book(pool)
        decisions = said(await rulebook.decide(event, list(RULES)))
        assert rulebook.calls == 1  # the rule that errors fails alone, in the same call
        with pytest.raises(RegoEvalError) as alone:  # the message the route gets evaluating alone
            await build_rule("divides", RULES["divides"]).matches(pool, event.body, event.text)
    assert decisions["team-a"] is True and decisions["team-b"] is False and decisions["critical"] is False
    assert decisions["divides"] == f"error: {alone.value.message}" and "divide by zero" in decisions["divides"]


async def test_when_the_one_call_fails_as_a_whole_there_is_no_decision():
    """A crash or a timeout of the one call: no decision (None), so every route gets the event and
    asks its own rule in its own window: only the rule at fault fails, and only its route waits."""
    async with open_rego_pool("regorus", isolation="thread", workers=1, timeout=0) as pool:
        rulebook = book(pool)
        assert await rulebook.decide(parse_event(b'{"team": "a"}'), list(RULES)) is None
        assert rulebook.calls == 1
