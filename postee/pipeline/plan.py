"""A route's actions as steps across sides: which runs where, and what is left after a step (issue #16).

In controller/runner mode an action runs on the side its `runs-on` names (a runner), or on the
controller. A route whose actions live on several sides is *planned*: its steps are its actions in
list order, each with its side, numbered from 0 the same way on every side.

- **Serialized across sides** (`serialize-actions: true`, actions on more than one side, no
  aggregation): the side an event enters runs its first consecutive steps, then hands the event over
  (`Handover`) to the side of the next step, which runs its consecutive steps and hands over again,
  until the list is done. Each step starts after the previous one ended; each side takes events in the
  order they were handed to it, so every action sees the route's events in arrival order.
- **Dispatched** (`dispatch-to-runners: true`, on the controller): an event that enters at the
  controller runs the controller's actions there and hands each runner step to its runner, to run that
  step only.

A runner knows only its own actions, so the controller writes a serialized route's whole plan into
the runner's slice (`x-postee-plan`, see `postee.config.runner_slice`); everything a runner hands over
goes to the controller, which runs its steps or passes the event on to the runner of the next one.
A handed-over event is a *continuation*: the same event under an id of its own per route and step
(`continuation_id`), so each side records it, and drops a resent one, like any accepted event.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping, Sequence

import attrs

from postee.actions.base import ActionSpec
from postee.config.model import RouteConfig

CONTROLLER_SIDE = ""
"""The side of an action without `runs-on`."""


@attrs.frozen
class Step:
    action: str
    side: str
    """The runner that runs it (its `runs-on`), or `CONTROLLER_SIDE`."""


@attrs.frozen
class RoutePlan:
    route: str
    steps: tuple[Step, ...]
    serial: bool
    """Serialized across sides: steps run one after another, each side handing over to the next."""

    @property
    def sides(self) -> frozenset[str]:
        return frozenset(step.side for step in self.steps)

    def block(self, start: int, side: str, allowed: frozenset[str] | None = None) -> tuple[tuple[int, ...], int | None]:
        """The steps from `start` that run on `side` one after another, and the next step (elsewhere;
        None when the list is done). Steps on sides not `allowed` (None: all are) are passed over."""
        found: list[int] = []
        for index in range(start, len(self.steps)):
            step_side = self.steps[index].side
            if allowed is not None and step_side not in allowed:
                continue
            if step_side != side:
                return tuple(found), index
            found.append(index)
        return tuple(found), None

    def previous(self, step: int, allowed: frozenset[str] | None = None) -> int | None:
        """The step run before `step` (passing over sides not `allowed`); None: `step` is the first."""
        for index in range(step - 1, -1, -1):
            if allowed is None or self.steps[index].side in allowed:
                return index
        return None

    def resolve(self, step: int, action: str | None) -> int | None:
        """Where a handed-over `step` of `action` is in this plan: a reload may have moved or removed it
        while the event was on its way (None: the route has no such step any more)."""
        if 0 <= step < len(self.steps) and (action is None or self.steps[step].action == action):
            return step
        if action is None:
            return None
        return next((i for i, s in enumerate(self.steps) if s.action == action), None)

    def runner_steps(self) -> tuple[int, ...]:
        """The steps that run on a runner (what a controller dispatches)."""
        return tuple(i for i, step in enumerate(self.steps) if step.side != CONTROLLER_SIDE)


def allowed_sides(entered: str, *, all_runners: bool) -> frozenset[str] | None:
    """The sides whose steps run for an event that entered at `entered` (None: every side).

    An event that entered at a runner runs that runner's steps and the controller's, never another
    runner's (a runner's actions are its local response: kill a process there, ship its logs), as in
    Postee. One that entered at the controller runs the runners' steps too only with `all_runners`
    (`dispatch-to-runners`)."""
    if entered != CONTROLLER_SIDE:
        return frozenset({entered, CONTROLLER_SIDE})
    return None if all_runners else frozenset({CONTROLLER_SIDE})


def plan_of(route: RouteConfig, actions: Mapping[str, ActionSpec], *, from_slice: bool = True) -> RoutePlan | None:
    """The route's plan, or None when all its actions run on one side (nothing to plan).

    A runner's route carries its plan (`route.plan`, from its slice: `from_slice`); a controller's follows
    from its configuration's actions (an `x-postee-plan` in its own file is ignored).
    """
    if route.plan and from_slice:
        steps = tuple(Step(action, side) for action, side in route.plan)
    else:
        steps = tuple(Step(name, side_of(actions[name])) for name in route.actions if name in actions)
    if len({step.side for step in steps}) < 2:
        return None
    return RoutePlan(route.name, steps, serial=crosses_sides(route, steps))


def crosses_sides(route: RouteConfig, steps: Sequence[Step]) -> bool:
    """Whether the route runs serialized across sides (see the module docstring). An aggregating route
    does not: its sends are batches of several events, not one event's steps."""
    return (route.serialize_actions and not route.plugins.aggregates
            and len({step.side for step in steps}) > 1)


def side_of(spec: ActionSpec) -> str:
    return (spec.runs_on or "").strip()


def continuation_id(origin_id: str, route: str, step: int) -> str:
    """The id of event `origin_id` handed over at `step` of `route`: unique per route and step, the
    origin readable first (`/executions` shows it), the route as a short digest (any text is a name)."""
    digest = hashlib.sha256(route.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{origin_id}~{digest}~{step}"


@attrs.frozen
class Handover:
    """What is left of a route's plan for an event, for another side to run."""

    origin_id: str
    route: str
    step: int
    side: str
    """The side of `step` (where the event must go; a runner hands everything to the controller)."""
    only: bool
    """Run only `step` (a dispatch); else run on from it while the steps are on that side, then hand over."""
    text: str
    """The event's JSON text."""
    entered: str = CONTROLLER_SIDE
    """Where the event entered the plan: a runner (its steps and the controller's run), or the controller."""
    action: str = ""
    """The action of `step` (a reload on the receiving side may have moved it: it is found by name)."""
    returns_at: int | None = None
    """The step the receiving runner hands the event back at, when it entered at the controller (the
    controller then accepts that handover from that runner only: `postee.roles.handovers.expected_back`)."""

    @property
    def id(self) -> str:
        return continuation_id(self.origin_id, self.route, self.step)

    @property
    def outcome_key(self) -> str:
        """Where the handing side records that it handed over (its ledger's "action" for this step)."""
        return f"handover:{self.step}"


@attrs.frozen
class SideLink:
    """How a node of a controller/runner deployment takes part in plans: which side it is, and what
    records a handover durably for the side it goes to (a runner's outbox to its controller; a
    controller's store, from which the runner fetches its work)."""

    side: str
    hand_over: Callable[[Handover], Awaitable[None]]
