"""Every route's rule for an event, decided in one Rego call, before the event goes to any route.

Asked route by route, a config with one route per team paid, on every event and for every route, a
round trip to a worker (the event sent and parsed there again) and a pass through the route's actor
machinery, even when only one route matched: throughput fell to a fifth between 1 and 40 routes
(issue #15). The router now asks the rule book once per event: it evaluates every route's rule on the
event in one worker call (`RegoPool.evaluate_many`: the event crosses once), and the router hands the
event only to the routes whose rule matched (or failed: that route reports its own error, in order).

Each route keeps its own rule's semantics: its answer is its own, a rule that errors fails only its
route with its own located message, and only a JSON object can match. When the one call fails as a
whole (a worker crash, a timeout), there is no decision: every route gets the event and evaluates its
own rule, in its own window, so only the rule at fault fails and only its route waits for it (asked
again one by one here, a rule that hangs would hold every route twice its timeout).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import structlog

from postee.pipeline.events import Event
from postee.rego.engine import RegoError, RegoEvalError
from postee.rego.pool import RegoPool
from postee.rego.rules import RouteRule

log = structlog.get_logger("postee.rulebook")

Decision = bool | RegoError
"""A route's rule on an event: matched or not, or the error that stopped it (the route reports it)."""


class RuleBook:
    """The rules of one pipeline's routes (see the module docstring)."""

    def __init__(self, pool: RegoPool, rules: Mapping[str, RouteRule]) -> None:
        self.pool = pool
        self.rules = dict(rules)
        self.calls = 0
        """Worker calls made: one per event with a rule to ask."""

    async def decide(self, event: Event, routes: Sequence[str]) -> dict[str, Decision] | None:
        """Each of `routes`' rule on `event`, from one worker call; None when that call failed as a
        whole (each route then asks its own rule)."""
        if not isinstance(event.body, dict):  # only a JSON object can match (Postee)
            return dict.fromkeys(routes, False)
        asked = [name for name in routes if self.rules[name].spec is not None]
        decisions: dict[str, Decision] = {name: True for name in routes if name not in asked}
        if not asked:
            return decisions
        self.calls += 1
        specs = tuple(self.rules[name].spec for name in asked)
        try:
            outcomes = await self.pool.evaluate_many(specs, event.text)  # type: ignore[arg-type]
        except RegoEvalError as exc:  # the call as a whole: a crash or a timeout
            log.warning("route rules failed together; each route evaluates its own", event_id=event.id,
                        error=exc.message)
            return None
        for name, outcome in zip(asked, outcomes, strict=True):
            try:
                decisions[name] = self.rules[name].decide(outcome)
            except RegoError as exc:
                decisions[name] = exc
        return decisions
