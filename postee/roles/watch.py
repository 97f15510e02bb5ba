"""What a node tells whoever watches it: its feed's messages, its recent executions, and who it is.

The node calls in at each step of an event (accepted, handed to N routes, each route's decision, each
action's end); this turns them into the live feed's messages (`postee.feed`, served as `/feed` and read
by the `/ui` dashboard and `postee events --follow`) and keeps the last executions for `GET
/executions`. Messages are only built while someone watches (`Feed.wanted`): without watchers this
costs a deque append per action run.

Messages (one JSON object each on `/feed`):
- `{"type": "event", "stage": "accepted", node, id, received_at, source, size, route, body}`: the
  event was accepted (`route` is set for a `/tenant` run; `body` goes only to clients that ask);
- `{"type": "event", "stage": "routed", node, id, source, routes, failed}`: the routes whose rule
  matched the event, and those whose rule failed on it; said when the router decided (or, for a
  `/tenant` run or without the rule book, once every route has);
- `{"type": "execution", node, route, action, action_type, event_id, status, attempts, started_at,
  duration, error}`: an action run ended, here or (on a controller) on a runner.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from postee.feed import EventRoutes, Feed
from postee.pipeline.action_actor import Execution
from postee.pipeline.events import Event
from postee.pipeline.route_actor import RouteOutcome

__all__ = ["RECENT_EXECUTIONS", "NodeWatch", "execution_entry", "execution_message"]

RECENT_EXECUTIONS = 1000
"""Action runs of this node kept for `GET /executions` (the controller keeps its runners' apart)."""
RECENT_ROUTES = 1000
"""Events whose routes are kept for `GET /events?bodies=0` (as many as `/events` keeps)."""


def execution_message(node: str, execution: Execution | Any) -> dict[str, Any]:
    """The feed's message for an action run on `node` (an `Execution`, or a runner's `ExecutionReport`)."""
    return {"type": "execution", "node": node, "route": execution.route, "action": execution.action,
            "action_type": execution.action_type, "event_id": execution.event_id,
            "status": "ok" if execution.ok else "failed", "attempts": execution.attempts,
            "started_at": execution.started_at, "duration": execution.duration, "error": execution.error}


def execution_entry(node: str, execution: Execution | Any) -> dict[str, Any]:
    """An action run as `GET /executions` lists it: where it ran (`node`), and what it said."""
    return {"node": node, "route": execution.route, "action": execution.action,
            "action_type": execution.action_type, "event_id": execution.event_id, "ok": execution.ok,
            "attempts": execution.attempts, "started_at": execution.started_at, "duration": execution.duration,
            "error": execution.error, "output": execution.output}


class NodeWatch:
    """The watchers' side of one node (see the module docstring)."""

    def __init__(self, feed: Feed, name: Callable[[], str]) -> None:
        """`name`: how the node names itself now (its role sets it once it knows)."""
        self.feed = feed
        self._name = name
        self.routes = EventRoutes()
        self.executions: collections.deque[Execution] = collections.deque(maxlen=RECENT_EXECUTIONS)
        self._routes_of: collections.OrderedDict[str, tuple[list[str], list[str]]] = collections.OrderedDict()
        """The last events' (matched, failed) routes, for `/events?bodies=0` (the dashboard's snapshot)."""

    def accepted(self, event: Event) -> None:
        if self.feed.wanted():
            message = {"type": "event", "stage": "accepted", "node": self._name(), "id": event.id,
                       "received_at": event.received_at, "source": event.source, "size": len(event.text),
                       "route": event.route}
            if self.feed.wants_bodies():  # only then: a queue must not hold bodies nobody reads
                message["body"] = event.body
            self.feed.publish(message)

    def routed(self, event: Event, routes: int, decisions: Mapping[str, Any] | None = None) -> None:
        """The router handed the event to `routes` routes, with their rules' `decisions` (`Router`), or
        None: each route decides, and their outcomes are tallied."""
        if decisions is not None:
            matched = [name for name, decision in decisions.items() if decision is True]
            failed = [name for name, decision in decisions.items() if isinstance(decision, Exception)]
            self._say_routed(event, matched, failed)
        elif routes == 0:
            self._say_routed(event, [], [])
        else:  # tallied whether watched or not: `/events?bodies=0` lists the routes later
            self.routes.expect(event.id, routes)

    def decided(self, event: Event, outcome: RouteOutcome) -> None:
        if not len(self.routes):
            return
        rule_failed = not outcome.matched and outcome.dropped is not None and outcome.dropped.startswith("error")
        tally = self.routes.decided(event.id, outcome.route, outcome.matched, rule_failed)
        if tally is not None:
            self._say_routed(event, *tally)

    def _say_routed(self, event: Event, matched: list[str], failed: list[str]) -> None:
        self._routes_of[event.id] = (matched, failed)
        while len(self._routes_of) > RECENT_ROUTES:
            self._routes_of.popitem(last=False)
        if self.feed.wanted():
            self.feed.publish({"type": "event", "stage": "routed", "node": self._name(), "id": event.id,
                               "source": event.source, "routes": matched, "failed": failed})

    def routes_of(self, event_id: str) -> dict[str, list[str]] | None:
        """The routes an event matched (and those whose rule failed), when known."""
        known = self._routes_of.get(event_id)
        return None if known is None else {"routes": known[0], "failed": known[1]}

    def executed(self, execution: Execution) -> None:
        self.executions.append(execution)
        if self.feed.wanted():
            self.feed.publish(execution_message(self._name(), execution))

    def execution_entries(self) -> list[dict[str, Any]]:
        name = self._name()
        return [with_step(execution_entry(name, execution)) for execution in list(self.executions)]

    def executions_json(self) -> str:
        return json.dumps(self.execution_entries(), ensure_ascii=False, default=str)


def with_step(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry of a handed-over step (its event id is `<event>~<route digest>~<step>`) also names the
    event it continues and the step, so `/executions` shows per event which step ran where and when."""
    event_id = entry.get("event_id")
    if isinstance(event_id, str) and event_id.count("~") == 2:
        origin, _, step = event_id.split("~")
        if step.isdigit():
            return {**entry, "origin_event_id": origin, "step": int(step)}
    return entry


def merged_executions_json(*lists: Iterable[dict[str, Any]]) -> str:
    """Several nodes' `/executions` entries as one list, oldest first."""
    merged = sorted((with_step(entry) for entries in lists for entry in entries), key=lambda e: e["started_at"])
    return json.dumps(merged, ensure_ascii=False, default=str)
