"""Build the actor tree for a configuration, validating everything before anything starts.

The tree (started downstream first, so a graceful stop drains upstream into downstream):

    pipeline (one-for-one)
    ├── actions (one-for-one): one ActionActor per enabled, local action
    ├── routes  (one-for-one): one RouteActor per route
    └── router: the intake queue, fanning events out to the routes

Templates and rules are compiled, and every template is tried on a sample event, before the tree
is returned: a configuration that cannot work is rejected with every problem named, and (on a
reload) the running pipeline stays in place.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import httpx
import structlog
import trio

from actors import MailboxStats, Supervisor
from postee import runtime
from postee.actions.base import Action, ActionConfigError, ActionSpec
from postee.actions.registry import build_action
from postee.config.model import Config
from postee.metrics import Metrics
from postee.pipeline.action_actor import ActionActor, Execution
from postee.pipeline.events import Event
from postee.pipeline.ledger import Ledger
from postee.pipeline.plan import CONTROLLER_SIDE, SideLink, plan_of
from postee.pipeline.rendering import RenderCache
from postee.pipeline.route_actor import DEFAULT_ROUTE_WINDOW, RouteActor, RouteJob, RouteOutcome, RouteServices
from postee.pipeline.router import DEFAULT_INTAKE_CAPACITY, Router
from postee.pipeline.rulebook import RuleBook
from postee.rego.engine import RegoError
from postee.rego.library import TemplateLibrary
from postee.rego.pool import RegoPool
from postee.rego.render import Evaluator, Template, TemplateSpec, check_template, load_template
from postee.rego.rules import build_rule
from postee.runtime import offload
from postee.store import Store
from postee.supervision import DEFAULT_STOP_GRACE, node_supervisor

log = structlog.get_logger("postee.pipeline")

ENV_RULES_ONE_BY_ONE = "POSTEE_BENCH_RULES_ONE_BY_ONE"
"""Set to 1, every route gets every event and evaluates its own rule (a worker call per route and event),
instead of the router asking the rule book once per event: `bench/routes.py` compares the two. Not a
mode to run in."""



class PipelineError(Exception):
    """The configuration cannot be run; `problems` names each template, rule or action at fault."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def runs_everything(spec: ActionSpec) -> bool:
    """Standalone mode: every enabled action runs here (Postee ignores `runs-on` without a controller)."""
    return True


@attrs.define(eq=False)
class Pipeline:
    config: Config
    router: Router
    routes: dict[str, RouteActor]
    actions: dict[str, ActionActor]
    supervisor: Supervisor
    renderer: RenderCache
    warnings: list[str] = attrs.field(factory=list)

    def submit(self, event: Event) -> bool:
        """Queue an event for every route; False when the intake queue is full (answer 503)."""
        return self.router.address.try_send(event)

    async def run_route(self, route: str, event: Event, *, timeout: float) -> RouteOutcome:
        """Run one route on `event` and wait for its actions (`POST /tenant/{route}`)."""
        from actors import ask

        return await ask(self.routes[route].address, lambda reply: RouteJob(event, reply), timeout=timeout)

    def mailboxes(self) -> Iterable[MailboxStats]:
        yield self.router.mailbox.stats()
        for actor in self.routes.values():
            yield actor.mailbox.stats()
        for actor in self.actions.values():
            yield actor.mailbox.stats()

    def idle(self) -> bool:
        """Nothing queued anywhere (used by tests and by the drain on shutdown)."""
        return all(stats.depth == 0 for stats in self.mailboxes())


def _where(entry: Any, section: str) -> str:
    """The entry as the loader names it in problems (`actions[9] (name: a-splunk)`); by name alone for
    an entry made in code."""
    return entry.where or f"{section} (name: {entry.name})"


async def build_pipeline(
    config: Config,
    *,
    pool: RegoPool,
    store: Store,
    library: TemplateLibrary,
    metrics: Metrics | None = None,
    is_local: Callable[[ActionSpec], bool] = runs_everything,
    on_execution: Callable[[Execution], Any] | None = None,
    wall_clock: Callable[[], float] = runtime.wall_clock,
    http_client: httpx.AsyncClient | None = None,
    intake_capacity: int = DEFAULT_INTAKE_CAPACITY,
    mailbox_capacity: int | None = None,
    stop_grace: float = DEFAULT_STOP_GRACE,
    ledger: Ledger | None = None,
    action_factory: Callable[[ActionSpec], Action] = build_action,
    on_outcome: Callable[[Event, RouteOutcome], Any] | None = None,
    on_routed: Callable[[Event, int, Any], Any] | None = None,
    replacing: Pipeline | None = None,
    link: SideLink | None = None,
) -> Pipeline:
    """Validate and assemble the pipeline for `config`; raises PipelineError listing every problem.

    `wall_clock` gives the epoch times the store keeps and executions report (the runtime's; tests pass their own).
    `ledger` records the progress of accepted events (the node's; None: a bare pipeline records nothing).
    `action_factory` makes each local action from its spec (`build_action`; a simulation records instead);
    `on_outcome(event, outcome)` hears what each route decided for each event, and `on_routed(event, n,
    decisions)` how many routes it concerns and what their rules decided (`Router`), before any route
    has it. `replacing`: the pipeline a reload replaces; a serialized route of the new one waits for the
    old one's to drain (order is kept). `link`: the node's side in a controller/runner deployment, for
    routes whose actions run on several sides (`postee.pipeline.plan`); None: standalone.
    """
    problems: list[str] = []
    warnings: list[str] = []

    templates: dict[str, Evaluator] = {}
    used = {route.template for route in config.routes if route.template}
    for spec in config.templates:
        if spec.name not in used:
            continue
        try:
            template = await load_template(
                TemplateSpec(spec.name, spec.rego_package or None, spec.body or None, spec.url or None,
                             spec.legacy_scan_renderer or None),
                library,
                http_client,
            )
            await template.compile(pool)
        except RegoError as exc:
            problems.append(f"{_where(spec, 'templates')}: {exc}")
            continue
        templates[spec.name] = template
        try:
            await check_template(pool, template)
        except RegoError as exc:
            # Templates are written for one tool's events: a miss on the generic sample is worth a
            # warning, not a refusal to start.
            warnings.append(f"{_where(spec, 'templates')}: {exc}")

    rules = {}
    for route in config.routes:
        try:
            rule = build_rule(route.name, route.input, route.input_files)
            await rule.check(pool)
        except RegoError as exc:
            problems.append(f"{_where(route, 'routes')}: {exc}")
            continue
        rules[route.name] = rule

    action_objects = {}
    listed = {name for route in config.routes for name in route.actions}
    for spec in config.actions:
        # An action no route lists is never built: if it cannot work, the loader warned about it.
        if not spec.enable or not is_local(spec) or spec.name not in listed:
            continue
        try:
            # In a worker thread: some actions read files, write keys and build TLS contexts here.
            action_objects[spec.name] = await offload(action_factory, spec)
        except ActionConfigError as exc:  # every problem, each under the entry's path
            problems.extend(exc.lines(_where(spec, "actions")))
        except Exception as exc:  # and friends: report them all together
            problems.append(f"{_where(spec, 'actions')}: {exc}")
    if problems:
        raise PipelineError(problems)
    for warning in warnings:
        log.warning("template check", problem=warning)

    action_actors = {
        name: ActionActor(action, metrics=metrics, on_execution=on_execution, wall_clock=wall_clock,
                          **({"capacity": mailbox_capacity} if mailbox_capacity else {}))
        for name, action in action_objects.items()
    }
    renderer = RenderCache(pool, aqua_server=config.aqua_server, metrics=metrics)
    dispatching = link is not None and link.side == CONTROLLER_SIDE and config.dispatch_to_runners
    services = RouteServices(pool=pool, store=store, renderer=renderer, library=library, metrics=metrics,
                             wall_clock=wall_clock, ledger=ledger, on_outcome=on_outcome, link=link,
                             dispatching=dispatching)
    specs = {spec.name: spec for spec in config.actions}
    route_actors = {}
    for route in config.routes:
        local = [action_actors[name] for name in route.actions if name in action_actors]
        route_actors[route.name] = RouteActor(
            route,
            rule=rules[route.name],
            template=templates.get(route.template),
            actions=local,
            services=services,
            after=_drained_event(replacing, route.name) if route.serialize_actions else None,
            plan=plan_of(route, specs, from_slice=link.side != CONTROLLER_SIDE) if link is not None else None,
            **({"capacity": mailbox_capacity} if mailbox_capacity else {}),
        )
    # Rendered in the rules' worker call, for the routes that render what they match (local actions, or
    # a plan handing events over); a Rego template only (legacy renderers are Python, in this process).
    renders = {name: actor.template for name, actor in route_actors.items()
               if isinstance(actor.template, Template) and (actor.actions or actor.plan is not None)}
    renders_for = {name: actor.renders for name, actor in route_actors.items() if actor.plan is not None}
    rulebook = (None if os.environ.get(ENV_RULES_ONE_BY_ONE) == "1"
                else RuleBook(pool, rules, renders=renders, renderer=renderer, renders_for=renders_for))
    # The renders run in the router's decisions: as many at once as there are workers to run them.
    router = Router(list(route_actors.values()), capacity=intake_capacity, ledger=ledger, on_routed=on_routed,
                    rulebook=rulebook, window=max(DEFAULT_ROUTE_WINDOW, min(int(pool.limiter.total_tokens), 64)))

    actions_sup = node_supervisor("actions", metrics, stop_grace=stop_grace)
    for actor in action_actors.values():
        actions_sup.add(actor)
    routes_sup = node_supervisor("routes", metrics, stop_grace=stop_grace)
    for actor in route_actors.values():
        routes_sup.add(actor)
    root = node_supervisor("pipeline", metrics, stop_grace=stop_grace)
    root.add(actions_sup)
    root.add(routes_sup)
    root.add(router)
    return Pipeline(config=config, router=router, routes=route_actors, actions=action_actors, supervisor=root,
                    renderer=renderer, warnings=warnings)


def _drained_event(replacing: Pipeline | None, route: str) -> trio.Event | None:
    """What tells that the replaced pipeline's `route` finished its events (None: nothing to wait for)."""
    if replacing is None:
        return None
    actor = replacing.routes.get(route)
    return actor.drained if actor is not None and not actor.drained.is_set() else None


async def drain(pipeline: Pipeline, *, grace: float) -> None:
    """Stop the pipeline: no new events, queued ones flow through until `grace` seconds, then cancel."""
    with trio.CancelScope(shield=True):
        await pipeline.supervisor.stop(grace)
