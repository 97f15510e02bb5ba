"""Every route's rule for an event, decided in one Rego call, before the event goes to any route.

Asked route by route, a config with one route per team paid, on every event and for every route, a
round trip to a worker (the event sent and parsed there again) and a pass through the route's actor
machinery, even when only one route matched: throughput fell to a fifth between 1 and 40 routes
(issue #15). The router now asks the rule book once per event, and hands the event only to the routes
whose rule matched (or failed: that route reports its own error, in order).

The rule book compiles every route's rule into ONE module set (`combine_rules`: each rule's modules
moved under a namespace of their own), so the event crosses to a worker once and is converted to the
engine's input once for all of them (`RegoPool.evaluate_rules`); a rule that errors fails alone, with
its own message. With 40 routes and an 8 KB event a worker spends ~0.5 ms instead of 6.5 with regorus
(one `eval_rule` per rule), 5 ms instead of 147 with regopy (one generated query collecting every
answer; the rules asked apart only when one errors).

Each route keeps its own rule's semantics: its answer is its own, a rule that errors fails only its
route with its own located message, and only a JSON object can match. When the one call fails as a
whole (a worker crash, a timeout), there is no decision: every route gets the event and evaluates its
own rule, in its own window, so only the rule at fault fails and only its route waits for it (asked
again one by one here, a rule that hangs would hold every route twice its timeout).

The same worker call renders the templates of the routes the event matched (`renders`), into the
pipeline's render cache, where those routes find their content: one round trip to a worker per event
instead of two, the event's render input sent along with it (~0.2 ms of the main process's CPU per
event, issue #15). A template's error is the route's, as when it renders alone; when the call fails as a
whole (a template that hangs, a crash) every route asks its own rule and renders its own template.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import structlog

from postee.pipeline.events import Event
from postee.pipeline.rendering import RenderCache
from postee.rego.engine import RegoCompileError, RegoError, RegoEvalError, RegoWorkerError
from postee.rego.pool import QuerySpec, RegoPool, RuleSetSpec
from postee.rego.render import Template, augmented_json
from postee.rego.rules import RouteRule, combine_rules

log = structlog.get_logger("postee.rulebook")

Decision = bool | RegoError
"""A route's rule on an event: matched or not, or the error that stopped it (the route reports it)."""


class RuleBook:
    """The rules of one pipeline's routes (see the module docstring)."""

    def __init__(self, pool: RegoPool, rules: Mapping[str, RouteRule], *,
                 renders: Mapping[str, Template] | None = None, renderer: RenderCache | None = None,
                 renders_for: Mapping[str, Callable[[Event], bool]] | None = None) -> None:
        """`renders`: the Rego template of each route that renders what it matches; rendered in the rules'
        own worker call for the routes an event matched, into `renderer`, where the routes find them.
        `renders_for`: for a route that renders only some events it matches (a plan: an event another side
        runs), whether it renders this one."""
        self.pool = pool
        self.rules = dict(rules)
        self.combined = combine_rules(self.rules.values())
        """Every rule compiled together (None for fewer than two distinct rules, or once that failed)."""
        self.renderer = renderer
        self.renders = dict(renders or {}) if renderer is not None else {}
        self.renders_for = {route: check for route, check in (renders_for or {}).items() if route in self.renders}
        self._render_plans: dict[tuple[bool, tuple[str, ...], tuple[str, ...]], _RenderPlan] = {}
        self.calls = 0
        """Worker calls made: one per event with a rule to ask."""

    async def decide(self, event: Event, routes: Sequence[str]) -> dict[str, Decision] | None:
        """Each of `routes`' rule on `event`; None when the worker call failed as a whole (each route
        then asks its own rule)."""
        if not isinstance(event.body, dict):  # only a JSON object can match (Postee)
            return dict.fromkeys(routes, False)
        asked = [name for name in routes if self.rules[name].spec is not None]
        decisions: dict[str, Decision] = {name: True for name in routes if name not in asked}
        if not asked:
            return decisions
        combined = self.combined
        if combined is not None:
            try:
                outcomes = await self._ask_combined(event)
            except RegoWorkerError as exc:  # asked again, the rules would meet the same fate
                log.warning("route rules failed together; each route evaluates its own", event_id=event.id,
                            error=exc.message)
                return None
            if outcomes is not None:
                for name in asked:
                    try:
                        decisions[name] = self.rules[name].decide(combined.outcome(name, outcomes))
                    except RegoError as exc:
                        decisions[name] = exc
                return decisions
        return await self._ask_each(event, asked, decisions)

    async def _ask_combined(self, event: Event) -> list[Any] | None:
        """Every rule's outcome from the combined rules; None when they could not be asked that way
        (each rule is then asked apart)."""
        combined = self.combined
        assert combined is not None
        self.calls += 1
        try:
            plan = self._render_plan(event, True, tuple(combined.keys), lambda name: combined.keys[name])
            return await self._ask(event, combined.spec, plan)
        except RegoCompileError as exc:  # a bug of ours in moving the rules apart: never again
            log.error("the route rules cannot be combined; each is asked apart", error=str(exc))
            self.combined = None
        except RegoWorkerError:
            raise
        except RegoEvalError as exc:  # the input refused as a whole
            log.warning("route rules could not be asked together", event_id=event.id, error=exc.message)
        return None

    async def _ask_each(self, event: Event, asked: list[str], decisions: dict[str, Decision]
                        ) -> dict[str, Decision] | None:
        """Every rule in `asked`, each apart but in one worker call (the event crosses once)."""
        self.calls += 1
        specs: tuple[QuerySpec, ...] = tuple(self.rules[name].spec for name in asked)  # type: ignore[misc]
        plan = self._render_plan(event, False, tuple(asked), asked.index)
        try:
            outcomes = await self._ask(event, specs, plan)
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

    # -- renders in the rules' call ----------------------------------------------------------------
    def _render_plan(self, event: Event, combined: bool, asked: tuple[str, ...],
                     index_of: Callable[[str], int]) -> _RenderPlan:
        """Which templates to render for `event` in a call asking `asked` (each route's outcome at
        `index_of(route)`), and on which rules' answers: a template when one of its routes that renders
        the event matched (a route without a rule always does). Made once per kind of call."""
        passed = tuple(route for route, check in self.renders_for.items() if not check(event))
        key = (combined, asked, passed)
        plan = self._render_plans.get(key)
        if plan is None:
            wanted: dict[str, tuple[Template, set[int] | None]] = {}
            for route, template in self.renders.items():
                if route not in self.rules or route in passed:
                    continue
                if self.rules[route].spec is None:  # no rule: it matches every event
                    wanted[template.name] = (template, None)
                elif route in asked:
                    _, indices = wanted.setdefault(template.name, (template, set()))
                    if indices is not None:
                        indices.add(index_of(route))
            templates = tuple(template for template, _ in wanted.values())
            asks = tuple((template.spec, None if indices is None else tuple(sorted(indices)))
                         for template, indices in wanted.values())
            plan = self._render_plans[key] = _RenderPlan(templates, asks)
        return plan

    async def _ask(self, event: Event, rules: RuleSetSpec | tuple[QuerySpec, ...], plan: _RenderPlan) -> list[Any]:
        """The rules' outcomes on `event`, from one worker call that renders the plan's templates too (into
        the render cache)."""
        if not plan.templates:
            outcomes, _ = await self.pool.evaluate_rules(rules, event.text)
            return outcomes
        assert self.renderer is not None
        render_json = augmented_json(event.body, self.renderer.aqua_server, event.text)
        outcomes, rendered = await self.pool.evaluate_rules(rules, event.text, plan.asks, render_json)
        for position, outcome in rendered.items():
            self.renderer.prime(plan.templates[position], event.id, event.body, outcome)
        return outcomes


@attrs.frozen
class _RenderPlan:
    templates: tuple[Template, ...]
    asks: tuple[tuple[QuerySpec, tuple[int, ...] | None], ...]
    """`RegoPool.evaluate_rules`'s `renders`, in the order of `templates`."""
