"""RouteActor: one per route — rule, dedup, render, aggregate, hand over to the actions.

A route prepares several events at once (rule and render run in the Rego worker pool) but
finishes them one at a time in arrival order, so what its actions receive is in the order the
events came in, while the workers stay busy.

The finishing stage is an `actors.Lane`, the runtime's single-lane actor. With
`serialize-actions: true` the lane's handler also waits for each action to finish before starting
the next one (in the route's list order), so the lane takes the next event only when the last
action of this one is done: the strict order Postee promises. Without it the route hands the
delivery to every action actor and moves on; the actions send concurrently.

For an accepted event the route tells the node's ledger what it did (`postee.pipeline.ledger`): how
many actions it handed the event to (each records its outcome when it ends), and that it decided. On
an event replayed after a crash it skips the actions whose outcome was recorded, and those the event
was already queued for aggregation for; its dedup key does not make it a duplicate of itself. An
aggregate's items stay in the store until it is sent, so one being sent when the node died is sent
again after the restart.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import attrs
import structlog
import trio

from actors import Actor, Lane, MailboxClosed, Reply, ask
from postee import runtime
from postee.actions.base import Delivery
from postee.actions.retry import DeliveryReport
from postee.config.model import RouteConfig
from postee.metrics import Metrics
from postee.pipeline.action_actor import ActionActor, ActionJob
from postee.pipeline.events import SOURCE_WEBHOOK, Event
from postee.pipeline.ledger import Ledger
from postee.pipeline.plan import CONTROLLER_SIDE, Handover, RoutePlan, SideLink, allowed_sides
from postee.pipeline.rendering import RenderCache
from postee.pipeline.rulebook import Decision
from postee.rego.engine import RegoError
from postee.rego.library import TemplateLibrary
from postee.rego.pool import RegoPool
from postee.rego.render import Content, TemplateError, aggregate_items, aggregation_item
from postee.rego.rules import RouteRule
from postee.store import Store
from postee.store.errors import StoreError
from postee.values.eventkeys import dedup_key

log = structlog.get_logger("postee.route")

DEFAULT_ROUTE_MAILBOX = 64
DEFAULT_ROUTE_WINDOW = 4
"""Events a route prepares (rule + render) at the same time; they are finished in order."""


class _Prepared:
    """The result of preparing one event, filled in by its task; `done` is set when it is there."""

    __slots__ = ("content", "done", "outcome")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.outcome: RouteOutcome | None = None
        self.content: Content | None = None


@attrs.frozen
class RouteJob:
    """An event for the route; `done` (for `POST /tenant/{route}`) receives a `RouteOutcome`."""

    event: Event
    done: Reply[RouteOutcome] | None = None
    rule: Decision | None = None
    """The route's rule on the event, as the router's rule book decided it (None: the route asks)."""


@attrs.frozen
class RouteOutcome:
    route: str
    matched: bool
    dropped: str | None = None
    """Why nothing was sent: "duplicate", "aggregating", "error: ..." (None when sent)."""
    reports: tuple[DeliveryReport, ...] = ()
    checked_at: float | None = None
    """When the route's dedup key was checked (wall clock; None: the route does not dedup, or the
    event has no key): a duplicate is one whose key was recorded by another event before this."""
    handed: tuple[str, ...] | None = None
    """The local actions the event was handed to (a plan across sides runs only this side's steps);
    None when the route does not say (an aggregating route)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "matched": self.matched,
            "dropped": self.dropped,
            "actions": {r.action: {"ok": r.ok, "attempts": r.attempts, "error": str(r.error) if r.error else None}
                        for r in self.reports},
        }


@attrs.frozen
class RouteServices:
    """What every route shares."""

    pool: RegoPool
    store: Store
    renderer: RenderCache
    library: TemplateLibrary
    metrics: Metrics | None = None
    wall_clock: Callable[[], float] = runtime.wall_clock
    ledger: Ledger | None = None
    """Where accepted events' progress is recorded (None: nothing is, as in a bare pipeline)."""
    on_outcome: Callable[[Event, RouteOutcome], Any] | None = None
    """Hears what the route decided for each event (simulations, the live feed)."""
    link: SideLink | None = None
    """This node's side in a controller/runner deployment (None: standalone, nothing is planned)."""
    dispatching: bool = False
    """A controller with `dispatch-to-runners`: its events run their routes' runner steps too."""


Work = tuple[ActionActor, Delivery, Callable[[DeliveryReport], Awaitable[None]] | None]
"""One delivery to hand over: the action, what to send, and what records its outcome."""


class RouteActor(Actor[RouteJob]):
    def __init__(
        self,
        route: RouteConfig,
        *,
        rule: RouteRule,
        template: Any,  # postee.rego.render.Template
        actions: Sequence[ActionActor],
        services: RouteServices,
        capacity: int = DEFAULT_ROUTE_MAILBOX,
        window: int = DEFAULT_ROUTE_WINDOW,
        after: trio.Event | None = None,
        plan: RoutePlan | None = None,
    ) -> None:
        """`after`: the `drained` event of the same serialized route in the pipeline a reload replaces: its
        events go first (only the event is kept, not the old route: a route idle for days must not keep a
        chain of replaced pipelines alive). `plan`: the route's steps across sides, when it has any and the
        node has a side (`services.link`)."""
        super().__init__(name=f"route:{route.name}", capacity=capacity)
        self.route = route
        self.after = after
        self.drained = trio.Event()
        """Set once the route has finished every event it took and stopped (a drain after a reload); the
        node also sets it when the drain ends otherwise (a crash while stopping), so no successor waits forever."""
        self.rule = rule
        self.template = template
        self.actions = list(actions)
        self.by_name = {actor.action.name: actor for actor in self.actions}
        self.plan = plan if services.link is not None else None
        self.services = services
        self.window = window
        self.matched = 0
        self.processed = 0
        self.skipped = 0
        """Events the router decided this route's rule does not match (they skip its stages)."""
        self.lane: Lane[tuple[RouteJob, _Prepared]] | None = None
        """The finishing stage (see `run`), made anew at every (re)start."""

    # -- lifecycle -----------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        """Prepare up to `window` events at once, finish them strictly in arrival order.

        Preparing (the rule, then the render) is Rego work in the worker pool and is what takes
        time; running several at once keeps every worker busy. Finishing (dedup, aggregation,
        handing over to the actions) is the route's `Lane`: one event at a time in arrival order,
        so actions see events in the order they came. In a serialized route the lane's handler also
        waits for each action in turn, so the lane is what serializes the route.
        """
        timeout = self.route.plugins.aggregate_message_timeout
        lane = self.lane = Lane(self._finish_job, name=f"{self.name}:finish", capacity=max(self.window - 1, 0))
        async with trio.open_nursery() as timers:
            if timeout > 0 and self.actions:
                timers.start_soon(self._flush_periodically, timeout)
            async with trio.open_nursery() as stages:
                await stages.start(lane.run)
                task_status.started(self.address)
                async for job in self.mailbox:
                    prepared = _Prepared()
                    if job.rule is None or not self._prepared_at_once(job.event, job.rule, prepared):
                        stages.start_soon(self._prepare_into, job.event, job.rule, prepared)
                    await lane.address.send((job, prepared))
                lane.begin_stop()  # the lane finishes what it holds, then its run returns
            timers.cancel_scope.cancel()
        if self.after is not None:
            # Never given an event (two reloads in a row): what the replaced route still runs is what
            # "drained" must cover, or the route replacing this one would not wait for it.
            await self.after.wait()
            self.after = None
        self.drained.set()

    def _prepared_at_once(self, event: Event, decision: Decision, prepared: _Prepared) -> bool:
        """Prepare without a task of its own when nothing is left to wait for: the router decided, and the
        route stops there or its content is rendered already (the rule book renders the templates of the
        routes an event matched in the rules' own worker call). False: a task must do it."""
        counted = False
        try:
            rendered = None
            if decision is True and self.renders(event):
                rendered = self.services.renderer.ready(self.template, event.id)
                if rendered is None:
                    return False
            self.processed += 1
            counted = True
            outcome = self._decided(event, decision)
            if outcome is None:
                assert rendered is not None
                content, error = rendered
                if error is not None:
                    outcome = self._failed("render", event, error)
                prepared.content = content
            prepared.outcome = outcome
        except Exception as exc:  # a bug: reported for this event, the route goes on
            self.processed += not counted
            prepared.outcome = self._failed("internal", event, exc)
        prepared.done.set()
        return True

    async def _prepare_into(self, event: Event, decision: Decision | None, prepared: _Prepared) -> None:
        try:
            prepared.outcome, prepared.content = await self.prepare(event, decision)
        except Exception as exc:  # a bug: reported for this event, the route goes on
            prepared.outcome = self._failed("internal", event, exc)
        finally:
            prepared.done.set()

    async def _finish_job(self, item: tuple[RouteJob, _Prepared]) -> None:
        """The lane's handler: wait for the event's preparation, then finish it (and answer `/tenant`)."""
        job, prepared = item
        if self.after is not None:
            # Serialized across a reload: the replaced pipeline's route finishes its events first (it
            # drains with no deadline but the node's stop, each action bounded by its own budget).
            await self.after.wait()
            self.after = None
        if not prepared.done.is_set():  # (a set Event's wait still yields to the scheduler)
            await prepared.done.wait()
        try:
            outcome = prepared.outcome
            if outcome is None:
                assert prepared.content is not None
                outcome = await self.finish(job.event, prepared.content, wait=job.done is not None)
        except Exception as exc:  # a bug: the caller hears of it, the lane crashes and the route restarts
            if job.done is not None:
                job.done.fail(exc)
            raise
        if self.services.on_outcome is not None:
            self.services.on_outcome(job.event, outcome)
        if self.services.ledger is not None:
            await self.services.ledger.route_decided(job.event.id)
        if job.done is not None:
            job.done.send(outcome)

    # -- the steps -----------------------------------------------------------------------------
    def skip(self, event: Event) -> None:
        """The router decided the event does not concern this route: count it and tell who listens,
        without the event going through the route's stages. Said at once: a route's "no match" for an
        event may be heard before its outcome for an earlier event still in its stages."""
        self.processed += 1
        self.skipped += 1
        if self.services.on_outcome is not None:
            self.services.on_outcome(event, RouteOutcome(self.route.name, matched=False))

    async def process(self, event: Event, *, wait: bool = False) -> RouteOutcome:
        """Both steps for one event (what the route does, without the window)."""
        outcome, content = await self.prepare(event)
        if outcome is not None:
            return outcome
        assert content is not None
        return await self.finish(event, content, wait=wait)

    async def prepare(self, event: Event,
                      decision: Decision | None = None) -> tuple[RouteOutcome | None, Content | None]:
        """Rule and render: an outcome when the route stops here, else the content to finish with.
        `decision`: the route's rule on the event, decided by the router (None: evaluated here)."""
        services = self.services
        self.processed += 1
        if decision is None:  # not decided by the router (a tenant run, or no rule book)
            try:
                decision = await self.rule.matches(services.pool, event.body, event.text)
            except RegoError as exc:
                decision = exc
        outcome = self._decided(event, decision)
        if outcome is not None:
            return outcome, None
        try:
            content = await services.renderer.render(self.template, event.id, event.body, event.text)
        except TemplateError as exc:
            return self._failed("render", event, exc), None
        return None, content

    def _decided(self, event: Event, decision: Decision) -> RouteOutcome | None:
        """Count the rule's decision; the outcome when the route stops there, None when it renders."""
        name = self.route.name
        if isinstance(decision, RegoError):
            return self._failed("rule", event, decision)
        if not decision:
            return RouteOutcome(name, matched=False)
        self.matched += 1
        if self.services.metrics is not None:
            self.services.metrics.route_matches.labels(name).inc()
        entered_elsewhere = self._entered_elsewhere(event)
        if entered_elsewhere is not None:
            return RouteOutcome(name, matched=True, dropped=entered_elsewhere)
        if not self.actions and not self._hands_over(event):
            return RouteOutcome(name, matched=True, dropped="no local actions")
        return None

    def renders(self, event: Event) -> bool:
        """Whether a match of `event` is rendered here (`_decided`'s None, without counting it)."""
        return self._entered_elsewhere(event) is None and bool(self.actions or self._hands_over(event))

    async def finish(self, event: Event, content: Content, *, wait: bool = False) -> RouteOutcome:
        """Dedup, then aggregate or hand over to the actions. Called in arrival order."""
        services, name = self.services, self.route.name
        plugins = self.route.plugins
        checked_at = None
        if plugins.deduplicates and not event.continues:  # decided where the event entered
            key = dedup_key(event.body, plugins.unique_message_props)
            if key is not None:
                checked_at = services.wall_clock()
                if await services.store.dedup_seen(name, key, plugins.unique_message_timeout, checked_at, event.id):
                    log.info("duplicate event dropped", route=name, event_id=event.id, key=key)
                    if services.metrics is not None:
                        services.metrics.dedup_drops.labels(name).inc()
                    return RouteOutcome(name, matched=True, dropped="duplicate", checked_at=checked_at)
        actors, handovers = self._steps(event)
        if plugins.aggregates and not (self.plan is not None and self.plan.serial):
            outcome = await self._aggregate(event, content, wait, actors, handovers)
            return attrs.evolve(outcome, checked_at=checked_at)
        delivery = Delivery(content=content.as_map(), event=event.body, route=name, event_id=event.id)
        work = [(actor, delivery, self._recorder(event.id, actor)) for actor in actors]
        if services.ledger is not None:
            services.ledger.handed(event.id, len(work) + len(handovers))
        reports = await self._dispatch(work, wait=wait)
        await self._hand_over(event, handovers)  # in a serialized plan, once this side's steps ended
        return RouteOutcome(name, matched=True, reports=reports, checked_at=checked_at,
                            handed=tuple(actor.action.name for actor in actors))

    # -- plans across sides (postee.pipeline.plan) -----------------------------------------------------
    def _entered_elsewhere(self, event: Event) -> str | None:
        """Why this side does not run a serialized plan for `event`, reported by the runner it entered at:
        that runner runs the plan from its first step and hands the event over when it is this side's turn."""
        plan, link = self.plan, self.services.link
        if plan is None or link is None or not plan.serial or event.continues:
            return None
        if event.source not in (link.side, SOURCE_WEBHOOK) and event.source in plan.sides:
            return f"runs from runner {event.source!r}"
        return None

    def _hands_over(self, event: Event) -> bool:
        plan = self.plan
        if plan is None:
            return False
        return plan.serial or (self.services.dispatching and not event.continues and event.source == SOURCE_WEBHOOK
                               and bool(plan.runner_steps()))

    def _entered(self, event: Event) -> str:
        """Where `event` entered the plan: the runner it came in at, or the controller."""
        link = self.services.link
        assert link is not None
        if event.continues:
            return event.entered if event.entered is not None else CONTROLLER_SIDE
        if link.side == CONTROLLER_SIDE and event.source != SOURCE_WEBHOOK:
            return event.source  # reported by a runner (with no step in this route: it runs none of theirs)
        return link.side

    def _allowed(self, event: Event) -> frozenset[str] | None:
        link = self.services.link
        assert link is not None
        # A runner continuing an event that entered at the controller: the controller dispatches.
        all_runners = self.services.dispatching or (link.side != CONTROLLER_SIDE and event.continues)
        return allowed_sides(self._entered(event), all_runners=all_runners)

    def _steps(self, event: Event) -> tuple[list[ActionActor], list[Handover]]:
        """This side's actions for `event`, in order, and what it hands over after them (those that
        ran, or were handed over, before a restart are left out)."""
        plan, link = self.plan, self.services.link
        if plan is None or link is None:
            return self._to_run(event.id), []
        start = 0
        if event.continues:
            found = plan.resolve(event.step or 0, event.step_action)
            if found is None:
                log.error("handed-over event names a step the route does not have (any more); dropped",
                          route=self.route.name, event_id=event.id, step=event.step, action=event.step_action)
                return [], []
            start = found
        if event.only_step:
            names = [plan.steps[start].action]
            handovers = []
        elif plan.serial:
            steps, after = plan.block(start, link.side, self._allowed(event))
            names = [plan.steps[i].action for i in steps]
            handovers = [] if after is None else [self._handover(event, after, only=False)]
        elif self.services.dispatching and not event.continues and event.source == SOURCE_WEBHOOK:
            # only what entered here: a runner's own event ran its steps there (and reported it here)
            names = [actor.action.name for actor in self.actions]
            handovers = [self._handover(event, i, only=True) for i in plan.runner_steps()]
        else:
            return self._to_run(event.id), []
        actors = [self.by_name[name] for name in names if name in self.by_name]
        ledger = self.services.ledger
        if ledger is not None:
            actors = [a for a in actors if not ledger.recorded(event.id, self.route.name, a.action.name)]
            handovers = [h for h in handovers if not ledger.recorded(event.id, self.route.name, h.outcome_key)]
        return actors, handovers

    def _handover(self, event: Event, step: int, *, only: bool) -> Handover:
        plan = self.plan
        assert plan is not None
        side, entered = plan.steps[step].side, self._entered(event)
        returns_at = None
        if not only and entered == CONTROLLER_SIDE and side != CONTROLLER_SIDE:
            returns_at = plan.block(step, side, self._allowed(event))[1]
        return Handover(origin_id=event.origin_id or event.id, route=self.route.name, step=step, side=side,
                        only=only, text=event.text, entered=entered, action=plan.steps[step].action,
                        returns_at=returns_at)

    async def _hand_over(self, event: Event, handovers: Sequence[Handover]) -> None:
        """Record each handover durably where it goes; the event is finished here once they are recorded.
        One that cannot be recorded leaves the event unfinished: it is handed over again at the next start."""
        link, ledger, metrics = self.services.link, self.services.ledger, self.services.metrics
        for handover in handovers:
            assert link is not None
            try:
                await link.hand_over(handover)
            except Exception as exc:
                log.error("event not handed over; it will be at the next start", route=self.route.name,
                          event_id=event.id, step=handover.step, side=handover.side or "controller",
                          error=f"{type(exc).__name__}: {exc}")
                continue
            if metrics is not None:
                metrics.handovers.labels(self.route.name, handover.side or "controller").inc()
            if ledger is not None and ledger.tracks(event.id):
                await ledger.action_done(event.id, self.route.name, handover.outcome_key, True)

    def _to_run(self, event_id: str) -> list[ActionActor]:
        """The route's actions, but those that already ran for this event before a restart."""
        ledger, name = self.services.ledger, self.route.name
        if ledger is None:
            return self.actions
        return [actor for actor in self.actions if not ledger.recorded(event_id, name, actor.action.name)]

    def _recorder(self, event_id: str, actor: ActionActor) -> Callable[[DeliveryReport], Awaitable[None]] | None:
        """What records the action's outcome for an accepted event (None for a `/tenant` run)."""
        ledger = self.services.ledger
        if ledger is None or not ledger.tracks(event_id):
            return None
        route, action = self.route.name, actor.action.name

        async def record(report: DeliveryReport) -> None:
            await ledger.action_done(event_id, route, action, report.ok)

        return record

    def _failed(self, stage: str, event: Event, exc: Exception) -> RouteOutcome:
        log.error(f"route {stage} failed", route=self.route.name, event_id=event.id, error=str(exc))
        if self.services.metrics is not None:
            self.services.metrics.route_errors.labels(self.route.name, stage).inc()
        return RouteOutcome(self.route.name, matched=stage != "rule", dropped=f"error: {exc}")

    async def _dispatch(self, work: Sequence[Work], *, wait: bool) -> tuple[DeliveryReport, ...]:
        """Hand deliveries to action actors: one after another when serialized, else all at once."""
        if self.route.serialize_actions:
            reports = []
            for actor, delivery, on_done in work:
                report = await self._ask(actor, delivery, on_done)
                if report is not None:
                    reports.append(report)
            return tuple(reports)
        if not wait:
            for actor, delivery, on_done in work:
                try:
                    await actor.address.send(ActionJob(delivery, on_done=on_done))
                except MailboxClosed:
                    log.error("action is stopped; delivery left for a replay at the next start",
                              action=actor.action.name, route=self.route.name, event_id=delivery.event_id)
            return ()
        results: list[DeliveryReport | None] = [None] * len(work)

        async def one(i: int, actor: ActionActor, delivery: Delivery, on_done: Any) -> None:
            results[i] = await self._ask(actor, delivery, on_done)

        async with trio.open_nursery() as nursery:
            for i, (actor, delivery, on_done) in enumerate(work):
                nursery.start_soon(one, i, actor, delivery, on_done)
        return tuple(r for r in results if r is not None)

    async def _ask(self, actor: ActionActor, delivery: Delivery,
                   on_done: Callable[[DeliveryReport], Awaitable[None]] | None) -> DeliveryReport | None:
        try:
            return await ask(actor.address, lambda reply: ActionJob(delivery, reply, on_done),
                             timeout=actor.budget + 5)
        except Exception as exc:  # the action actor crashed or timed out: report, keep the route going
            log.error("action did not complete", action=actor.action.name, route=self.route.name,
                      event_id=delivery.event_id, error=f"{type(exc).__name__}: {exc}")
            return None

    # -- aggregation ---------------------------------------------------------------------------
    async def _aggregate(self, event: Event, content: Content, wait: bool, actors: Sequence[ActionActor],
                         handovers: Sequence[Handover] = ()) -> RouteOutcome:
        """Queue the content per action; send an aggregate when `aggregate-message-number` is reached.

        For an accepted event the push records "queued" as its outcome for the action, so a replay
        skips the actions it was queued for already. The aggregate's items stay in the store until
        it is sent (see `_take`).
        """
        plugins, store, name = self.route.plugins, self.services.store, self.route.name
        ledger = self.services.ledger
        tracked = ledger is not None and ledger.tracks(event.id)
        # The package travels with each queued item: the timeout path has no content to read it from.
        record = {"aggregation_pkg": content.aggregation_pkg, "item": aggregation_item(content)}
        if handovers and ledger is not None:
            ledger.handed(event.id, len(handovers))
        await self._hand_over(event, handovers)  # a dispatched runner step aggregates on its runner
        work = []
        for actor in actors:
            count = await store.aggregation_push(name, actor.action.name, record,
                                                 event_id=event.id if tracked else None)
            if self.services.metrics is not None:
                self.services.metrics.aggregated.labels(name, actor.action.name).inc()
            n = plugins.aggregate_message_number
            if n > 0 and count >= n:
                taken = await self._take(actor, n, event.id)
                if taken is not None:
                    work.append(taken)
        if not work:
            return RouteOutcome(name, matched=True, dropped="aggregating")
        reports = await self._dispatch(work, wait=wait)
        return RouteOutcome(name, matched=True, reports=reports)

    async def _take(self, actor: ActionActor, limit: int | None, event_id: str) -> Work | None:
        """Take up to `limit` queued items as one aggregate delivery for `actor`.

        The items stay in the store, out of the queue, until the action ended (sent or failed); if
        the node dies first they go back to the queue at the next start and are sent again.
        """
        store, name = self.services.store, self.route.name
        taker = f"{name}:{actor.action.name}:{runtime.new_id()}"
        records = await store.aggregation_take(name, actor.action.name, limit, taker)
        if not records:
            return None
        delivery = await self._aggregated_delivery(records, event_id)
        if delivery is None:  # could not be rendered: the items are dropped (and said so)
            await store.aggregation_delivered(taker)
            return None

        async def delivered(report: DeliveryReport) -> None:
            try:
                await store.aggregation_delivered(taker)
            except StoreError as exc:
                log.error("sent aggregate not forgotten; a restart may send its items again", route=name,
                          action=actor.action.name, error=str(exc))

        return actor, delivery, delivered

    async def _aggregated_delivery(self, records: Sequence[Mapping[str, Any]], event_id: str) -> Delivery | None:
        if not records:
            return None
        package = records[0].get("aggregation_pkg")
        items = [r["item"] for r in records]
        try:
            if package:
                merged = await aggregate_items(self.services.pool, package, self.services.library, items)
                content = merged.as_map()
            else:
                content = concatenate(items)
        except TemplateError as exc:
            log.error("aggregation failed; items dropped", route=self.route.name, count=len(items), error=str(exc))
            if self.services.metrics is not None:
                self.services.metrics.route_errors.labels(self.route.name, "aggregate").inc()
            return None
        return Delivery(content=content, event={}, route=self.route.name, event_id=event_id)

    async def _flush_periodically(self, interval: float) -> None:
        """`aggregate-message-timeout`: every interval, send what each action has queued."""
        while True:
            await trio.sleep(interval)
            await self.flush()

    async def flush(self) -> None:
        """Send every action what it has queued (Postee sent the timeout batch to every action too)."""
        work = []
        for actor in self.actions:
            taken = await self._take(actor, None, f"aggregate:{self.route.name}")
            if taken is not None:
                work.append(taken)
        if work:
            await self._dispatch(work, wait=False)


def concatenate(items: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Aggregate without an aggregation package: first title, descriptions one after another."""
    descriptions = []
    for item in items:
        description = item.get("description", "")
        descriptions.append(description if isinstance(description, str) else json.dumps(description))
    title = str(items[0].get("title", ""))
    return {"title": f"{title} (+{len(items) - 1} more)" if len(items) > 1 else title,
            "description": "\n\n".join(descriptions), "url": str(items[0].get("url", ""))}
