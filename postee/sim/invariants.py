"""What must hold at the end of a simulation, checked against what the nodes and actions recorded.

Each check returns its violations, each a dict with enough to debug it (node, route, action, event id
and number, times). The guarantees are the documented ones, no stronger: an action whose outcome was
not recorded yet when its node crashed runs again after the restart (`postee.pipeline.ledger`), so a
second run of an action is allowed only when its node crashed between the two (counted as redone).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from postee.sim.deployment import Deployment
from postee.sim.recording import Call
from postee.sim.scenario import CONTROLLER
from postee.values.eventkeys import dedup_key

__all__ = ["RouteFacts", "Verdict", "check_all"]

MAX_SHOWN = 20
"""Violations listed per invariant (all are counted)."""


@attrs.frozen
class RouteFacts:
    """What the checks need to know of one route on one node."""

    actions: tuple[str, ...]
    serialized: bool
    aggregates: bool
    dedup_window: float | None
    dedup_props: tuple[str, ...]
    steps: tuple[str, ...] = ()
    """Every action of a route serialized across sides, in list order (its plan); empty otherwise."""


@attrs.define
class Verdict:
    invariants: dict[str, bool] = attrs.Factory(dict)
    violations: list[dict[str, Any]] = attrs.Factory(list)
    counts: dict[str, int] = attrs.Factory(dict)
    redone_after_crash: int = 0
    checked: dict[str, int] = attrs.Factory(dict)
    """How much each check looked at (a check that looked at nothing proves nothing)."""
    unchecked: list[str] = attrs.Factory(list)
    """What could not be checked, and why."""

    def record(self, name: str, found: Iterable[dict[str, Any]]) -> None:
        found = list(found)
        self.invariants[name] = not found
        self.counts[name] = len(found)
        for violation in found[:MAX_SHOWN]:
            self.violations.append({"invariant": name, **violation})


def _calls_by_key(calls: Iterable[Call]) -> dict[tuple[str, str, str, str], list[Call]]:
    """Calls by (node, route, action, event): an action listed by two routes runs once for each."""
    grouped: dict[tuple[str, str, str, str], list[Call]] = collections.defaultdict(list)
    for call in calls:
        grouped[(call.node, call.route, call.action, call.event_id)].append(call)
    return grouped


def exactly_once_upstream(deployment: Deployment) -> tuple[list[dict[str, Any]], int, int]:
    """Every event a runner accepted was accepted by the controller exactly once (or recorded just before a
    crash, and replayed after it). Returns (violations, lost, duplicated)."""
    controller = deployment.slots[CONTROLLER].log
    central = collections.Counter(a.event_id for a in controller.accepted if a.source != "webhook")
    # Recorded, then the controller crashed before it said so: its replay at the restart processes it.
    replayed = {a.event_id for a in controller.replayed}
    found, lost, duplicated = [], 0, 0
    for name, slot in deployment.slots.items():
        if name == CONTROLLER:
            continue
        for accepted in {a.event_id: a for a in slot.log.accepted}.values():
            if origin_of(accepted.event_id) != accepted.event_id:
                continue  # handed over by the controller: it has it (a runner does not report it back)
            times = central.get(accepted.event_id, 0)
            if times == 0 and accepted.event_id in replayed:
                continue
            if times != 1:
                lost += times == 0
                duplicated += times > 1
                found.append({"runner": name, "event_id": accepted.event_id, "n": accepted.n,
                              "accepted_at": accepted.at, "controller_accepted": times})
    return found, lost, duplicated


def actions_once(deployment: Deployment, facts: Mapping[tuple[str, str], RouteFacts], calls: list[Call],
                 verdict: Verdict) -> list[dict[str, Any]]:
    """At most once per (event, action) unless a retry or a crash of its node was recorded; at least once
    unless its failure was recorded."""
    found: list[dict[str, Any]] = []
    grouped = _calls_by_key(calls)
    for (node, _route, action, event_id), attempts in grouped.items():
        ok = [c for c in attempts if c.result == "ok"]
        for first, again in zip(ok, ok[1:], strict=False):
            if deployment.crashed_between(node, first.ended, again.started):
                verdict.redone_after_crash += 1
            elif not _aggregating_route(facts, node, first.route):
                found.append({"problem": "ran twice", "node": node, "action": action, "event_id": event_id,
                              "route": first.route, "items": list(first.items), "first": first.ended,
                              "again": again.started})
    # one event under two ids (where it entered, and handed over): an action must not run for both
    by_origin: dict[tuple[str, str, str, str], dict[str, Call]] = collections.defaultdict(dict)
    for (node, route, action, event_id), attempts in grouped.items():
        ok = [c for c in attempts if c.result == "ok"]
        if ok:
            by_origin[(node, route, action, origin_of(event_id))].setdefault(event_id, ok[0])
    for (node, route, action, origin), runs in by_origin.items():
        if len(runs) > 1 and not _aggregating_route(facts, node, route):
            found.append({"problem": "ran twice for one event (under two ids)", "node": node, "action": action,
                          "route": route, "event_id": origin, "ids": sorted(runs)})
    failed = {(e.node, e.route, e.action, e.event_id) for s in deployment.slots.values() for e in s.log.executions
              if not e.ok}
    for slot in deployment.slots.values():
        handed = {(o.route, o.event_id): o for o in slot.log.outcomes if o.matched and o.dropped is None}
        told: dict[tuple[str, str], set[str]] = collections.defaultdict(set)  # what each outcome said it handed
        for o in slot.log.outcomes:
            if o.matched and o.dropped is None and o.handed is not None:
                told[(o.route, o.event_id)].update(o.handed)
        for outcome in handed.values():
            route = facts.get((slot.name, outcome.route))
            if route is None or route.aggregates:
                continue
            expected = told.get((outcome.route, outcome.event_id))
            for action in route.actions if expected is None else sorted(expected):
                key = (slot.name, outcome.route, action, outcome.event_id)
                if key in failed or any(c.result == "ok" for c in grouped.get(key, ())):
                    continue
                found.append({"problem": "never ran", "node": slot.name, "route": outcome.route, "action": action,
                              "event_id": outcome.event_id, "n": outcome.n, "handed_at": outcome.at})
    return found


def _aggregating_route(facts: Mapping[tuple[str, str], RouteFacts], node: str, route: str) -> bool:
    known = facts.get((node, route))
    return known is not None and known.aggregates


def serialized_order(deployment: Deployment, facts: Mapping[tuple[str, str], RouteFacts],
                     calls: list[Call]) -> list[dict[str, Any]]:
    """A serialized route runs its actions in list order, one after another, and its events in arrival order."""
    found: list[dict[str, Any]] = []
    by_route: dict[tuple[str, str], dict[str, list[Call]]] = collections.defaultdict(
        lambda: collections.defaultdict(list))
    for call in calls:
        by_route[(call.node, call.route)][call.event_id].append(call)
    for (node, route), events in by_route.items():
        known = facts.get((node, route))
        if known is None or not known.serialized:
            continue
        spans: dict[str, tuple[float, float]] = {}
        for event_id, event_calls in events.items():
            order = {action: i for i, action in enumerate(known.actions)}
            event_calls.sort(key=lambda c: (c.started, c.ended))
            for earlier, later in zip(event_calls, event_calls[1:], strict=False):
                if order.get(later.action, 0) < order.get(earlier.action, 0) and not deployment.crashed_between(
                        node, earlier.started, later.ended):
                    found.append({"problem": "actions out of list order", "node": node, "route": route,
                                  "event_id": event_id, "first": earlier.action, "then": later.action})
                if later.started < earlier.ended and later.action != earlier.action:
                    found.append({"problem": "actions overlapped", "node": node, "route": route, "event_id": event_id,
                                  "first": [earlier.action, earlier.started, earlier.ended],
                                  "then": [later.action, later.started, later.ended]})
            spans[event_id] = (event_calls[0].started, max(c.ended for c in event_calls))
        log = deployment.slots[node].log
        arrival = log.queued or [a.event_id for a in log.accepted]  # the intake queue's order, when heard
        last = {event_id: i for i, event_id in enumerate(arrival)}  # a replay (after a crash) counts last
        ordered = sorted((e for e in spans if e in last), key=last.__getitem__)
        for before, after in zip(ordered, ordered[1:], strict=False):
            (b_start, b_end), (a_start, a_end) = spans[before], spans[after]
            if a_start < b_end and not deployment.crashed_between(node, b_start, a_end):
                found.append({"problem": "events out of arrival order or overlapping", "node": node, "route": route,
                              "earlier_event": before, "earlier_span": [b_start, b_end], "later_event": after,
                              "later_span": [a_start, a_end]})
    return found


def origin_of(event_id: str) -> str:
    """The event a handed-over one continues (`postee.pipeline.plan.continuation_id`), or the id itself."""
    return event_id.split("~", 1)[0]


def cross_side_order(deployment: Deployment, facts: Mapping[tuple[str, str], RouteFacts],
                     calls: list[Call], verdict: Verdict) -> list[dict[str, Any]]:
    """A route serialized across sides runs each event's actions in list order, each after the previous
    one ended, whichever node runs it; and each node runs a step for the events handed to it in the order
    they entered at their runner. A crash of a node between two calls excuses them (an action whose
    outcome was not recorded runs again)."""
    plans = {route: known.steps for (_, route), known in facts.items() if known.steps}
    found: list[dict[str, Any]] = []
    chains: dict[tuple[str, str], list[Call]] = collections.defaultdict(list)
    for call in calls:
        if call.route in plans:
            chains[(call.route, origin_of(call.event_id))].append(call)

    def excused(first: Call, then: Call) -> bool:
        return any(deployment.crashed_between(node, first.started, then.ended) for node in {first.node, then.node})

    verdict.checked["cross_side_chains"] = sum(len({c.node for c in chain}) > 1 for chain in chains.values())
    verdict.checked["runner_steps_from_the_controller"] = sum(
        1 for c in calls if c.node != CONTROLLER and origin_of(c.event_id) != c.event_id)
    for (route, origin), chain in chains.items():
        order = {action: i for i, action in enumerate(plans[route])}
        chain.sort(key=lambda c: (c.started, c.ended))
        for earlier, later in zip(chain, chain[1:], strict=False):
            if earlier.action == later.action or excused(earlier, later):
                continue
            if order.get(later.action, 0) < order.get(earlier.action, 0):
                found.append({"problem": "steps out of list order", "route": route, "event_id": origin,
                              "first": [earlier.node, earlier.action], "then": [later.node, later.action]})
            elif later.started < earlier.ended:
                found.append({"problem": "a step started before the previous one ended", "route": route,
                              "event_id": origin, "first": [earlier.node, earlier.action, earlier.started,
                                                            earlier.ended],
                              "then": [later.node, later.action, later.started, later.ended]})
    # per node and step, the events of one entry runner in the order they entered there
    entered: dict[str, tuple[str, int]] = {}
    for name, slot in deployment.slots.items():
        if name != CONTROLLER:
            for index, accepted in enumerate(slot.log.accepted):
                entered.setdefault(accepted.event_id, (name, index))
    firsts: dict[tuple[str, str, str, str], list[tuple[int, Call]]] = collections.defaultdict(list)
    for (route, origin), chain in chains.items():
        if origin not in entered:
            continue
        runner, index = entered[origin]
        seen: set[tuple[str, str]] = set()
        for call in chain:
            if (call.node, call.action) not in seen:
                seen.add((call.node, call.action))
                firsts[(route, call.node, call.action, runner)].append((index, call))
    for (route, node, action, runner), runs in firsts.items():
        runs.sort(key=lambda item: item[0])
        for (_, before), (_, after) in zip(runs, runs[1:], strict=False):
            if after.started < before.started and not excused(after, before):
                found.append({"problem": "events out of their entry order", "route": route, "node": node,
                              "action": action, "entered_at": runner, "earlier_event": before.event_id,
                              "later_event": after.event_id, "started": [before.started, after.started]})
    return found


def dedup_window(deployment: Deployment, facts: Mapping[tuple[str, str], RouteFacts],
                 keys: Mapping[str, str], bodies: Mapping[str, Any] | None = None,
                 verdict: Verdict | None = None) -> list[dict[str, Any]]:
    """A deduplicating route drops exactly the events whose key another event recorded less than its
    window before (the window counts from that event's check; a duplicate does not extend it).

    An event's key is the route's own (`unique-message-props` of its body) when `bodies` are given,
    else `keys[event id]`."""
    found: list[dict[str, Any]] = []
    for slot in deployment.slots.values():
        live: dict[tuple[str, str], tuple[float, str]] = {}
        for outcome in slot.log.outcomes:
            known = facts.get((slot.name, outcome.route))
            if known is None or known.dedup_window is None or outcome.checked_at is None:
                continue
            if bodies is not None:
                body = bodies.get(outcome.event_id)
                key = dedup_key(body, known.dedup_props) if isinstance(body, Mapping) else None
            else:
                key = keys.get(outcome.event_id)
            if key is None:
                continue
            if verdict is not None:
                verdict.checked["dedup_decisions"] = verdict.checked.get("dedup_decisions", 0) + 1
            entry = live.get((outcome.route, key))
            is_live = entry is not None and (not known.dedup_window or outcome.checked_at < entry[0])
            own = entry is not None and entry[1] == outcome.event_id
            if outcome.dropped == "duplicate":
                if not is_live or own:
                    found.append({"problem": "dropped, not a duplicate inside the window", "node": slot.name,
                                  "route": outcome.route, "event_id": outcome.event_id, "n": outcome.n, "key": key,
                                  "checked_at": outcome.checked_at, "window_owner": entry})
            elif is_live and not own:
                found.append({"problem": "passed, a duplicate inside the window", "node": slot.name,
                              "route": outcome.route, "event_id": outcome.event_id, "n": outcome.n, "key": key,
                              "checked_at": outcome.checked_at, "window_owner": entry})
            elif not own:
                expires = outcome.checked_at + known.dedup_window if known.dedup_window else float("inf")
                live[(outcome.route, key)] = (expires, outcome.event_id)
    return found


def aggregated_once(deployment: Deployment, facts: Mapping[tuple[str, str], RouteFacts], calls: list[Call],
                    verdict: Verdict) -> list[dict[str, Any]]:
    """Each event queued for an aggregate is sent once per action, in exactly one aggregate (or is in an
    aggregate whose failure was recorded: an aggregate that failed after its retries is dropped, said so)."""
    found: list[dict[str, Any]] = []
    failed = {(e.node, e.route, e.action, e.event_id) for s in deployment.slots.values() for e in s.log.executions
              if not e.ok}
    by_node: dict[str, list[Call]] = collections.defaultdict(list)
    given_up: set[tuple[str, str, str, int]] = set()
    for call in calls:
        if not _aggregating_route(facts, call.node, call.route):
            continue
        if call.result == "ok":
            by_node[call.node].append(call)
        elif (call.node, call.route, call.action, call.event_id) in failed:
            given_up.update((call.node, call.route, call.action, n) for n in call.items)
    for slot in deployment.slots.values():
        queued: dict[tuple[str, str], dict[int, str]] = collections.defaultdict(dict)
        for outcome in slot.log.outcomes:
            known = facts.get((slot.name, outcome.route))
            if known is None or not known.aggregates or not outcome.matched or outcome.n is None:
                continue
            if outcome.dropped in (None, "aggregating"):
                for action in known.actions:
                    queued[(outcome.route, action)][outcome.n] = outcome.event_id
        sent: dict[tuple[str, str], list[tuple[int, Call]]] = collections.defaultdict(list)
        for call in by_node.get(slot.name, ()):
            for n in call.items:
                sent[(call.route, call.action)].append((n, call))
        for (route, action), items in queued.items():
            named = sent.get((route, action), ())
            if not named and any(c.route == route and c.action == action for c in by_node.get(slot.name, ())):
                # Aggregates were sent, but their content does not name its events (`sim#<n>`): a user's
                # template. Which event went where cannot be told from outside.
                verdict.unchecked.append(f"aggregated_items_sent_once: {slot.name} route {route!r}: its template "
                                         "does not name the events an aggregate carries")
                continue
            verdict.checked["aggregated_items"] = verdict.checked.get("aggregated_items", 0) + len(items)
            times = collections.defaultdict(list)
            for n, call in named:
                times[n].append(call)
            for n, event_id in items.items():
                sends = times.get(n, [])
                if not sends and (slot.name, route, action, n) not in given_up:
                    found.append({"problem": "queued, never sent", "node": slot.name, "route": route, "action": action,
                                  "n": n, "event_id": event_id})
                for first, again in zip(sends, sends[1:], strict=False):
                    if deployment.crashed_between(slot.name, first.started, again.ended):
                        verdict.redone_after_crash += 1
                    else:
                        found.append({"problem": "sent in two aggregates", "node": slot.name, "route": route,
                                      "action": action, "n": n, "first": first.started, "again": again.started})
    return found


def check_all(deployment: Deployment, facts: Mapping[tuple[str, str], RouteFacts], calls: list[Call],
              keys: Mapping[str, str], converged: list[dict[str, Any]],
              quiet: list[dict[str, Any]], bodies: Mapping[str, Any] | None = None) -> tuple[Verdict, int, int]:
    """Every invariant; returns the verdict, and the events lost and duplicated upstream."""
    verdict = Verdict()
    upstream, lost, duplicated = exactly_once_upstream(deployment)
    verdict.record("exactly_once_upstream", upstream)
    verdict.record("actions_at_most_and_at_least_once", actions_once(deployment, facts, calls, verdict))
    verdict.record("serialized_routes_keep_order", serialized_order(deployment, facts, calls))
    verdict.record("serialized_across_sides_keep_order", cross_side_order(deployment, facts, calls, verdict))
    verdict.record("dedup_drops_exactly_the_duplicates", dedup_window(deployment, facts, keys, bodies, verdict))
    verdict.record("aggregated_items_sent_once", aggregated_once(deployment, facts, calls, verdict))
    verdict.record("runners_converge_on_the_config", converged)
    verdict.record("quiet_when_done", quiet)
    return verdict, lost, duplicated
