"""Run one simulation: build the deployment, drive events and faults from the seed, settle, check.

Determinism: everything a run does comes from its seed. The events, the fault schedule and the bus's
per-delivery fates come from `random.Random(seed)`; action attempts from a hash of the seed
(`scenario.action_plan`); ids from a counter and the wall clock from virtual time (`sim_runtime`);
nothing runs outside the event loop (`postee.sim.parts`). What is left is Trio's own scheduler,
which on purpose runs the tasks that became runnable together in a random order. The simulator seeds
that too: it switches on the deterministic mode Trio keeps for Hypothesis and pytest-trio
(`trio._core._run._ALLOW_DETERMINISTIC_SCHEDULING`: each batch is sorted by task creation, then
shuffled by `trio._core._run._r`), and seeds `_r` with the run's seed; so the seed also chooses the
interleaving, and a different seed gives a different one. (Private to Trio: checked at start, and the
simulator refuses to run, saying so, if a Trio release changes it.)
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import structlog
import trio
import trio.testing
import yaml

from postee.config import yamlio
from postee.rego.library import TemplateLibrary
from postee.roles.controller import Controller
from postee.runtime import use_runtime
from postee.sim.bus import NO_FAULTS, BusFaults, SimBus
from postee.sim.deployment import Deployment
from postee.sim.invariants import RouteFacts, check_all
from postee.sim.parts import open_sim_pool, sim_runtime
from postee.sim.recording import Call, Recordings
from postee.sim.scenario import (
    ALL_FAULTS,
    CONTROLLER,
    Fault,
    Scenario,
    action_plan,
    dump,
    generated_config,
    make_scenario,
    pace_of,
    reloaded_config,
    runner_names_of,
)
from postee.sim.trace import Trace

log = structlog.get_logger("postee.sim")

__all__ = ["SimOptions", "SimulationError", "simulate"]

BUS_FAULTS = BusFaults(loss=0.02, duplicate=0.02, delayed=0.1, delay=2.0)
STARTUP_TIMEOUT = 600.0
"""Virtual seconds every node has to become ready before the run starts."""
SETTLE_STEP = 5.0
SETTLE_LIMIT = 1800.0
"""Virtual seconds the system has to become quiet once the faults are over."""
RESUBMIT_INTERVAL = 1.0
"""Seconds before an event a node could not take (down, full, stopping) is posted again (a webhook client's
retry), doubling up to `RESUBMIT_MAX` while it is refused."""
RESUBMIT_MAX = 16.0


class SimulationError(Exception):
    """The simulation could not run (a bad option, a configuration that does not load, a Trio it cannot seed)."""


@attrs.frozen
class SimOptions:
    seed: int
    runners: int = 10
    events: int = 200
    faults: frozenset[str] = frozenset()
    duration: float = 120.0
    """Simulated seconds over which events arrive and faults happen (settling comes after)."""
    cfgfile: str | None = None
    engine: str | None = None

    def __attrs_post_init__(self) -> None:
        unknown = set(self.faults) - set(ALL_FAULTS)
        if unknown:
            raise SimulationError(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(ALL_FAULTS)}, all")
        if self.runners < 0 or self.events < 0 or self.duration <= 0:
            raise SimulationError("--runners and --events must be >= 0, --duration > 0")


@contextlib.contextmanager
def seeded_scheduler(seed: int) -> Iterator[None]:
    """Make Trio's batch order a function of `seed` (see the module docstring), for the block."""
    from trio._core import _run

    if not hasattr(_run, "_ALLOW_DETERMINISTIC_SCHEDULING") or not hasattr(_run, "_r"):
        raise SimulationError(f"this Trio ({trio.__version__}) has no seedable scheduler: runs would not repeat")
    saved_mode, saved_state = _run._ALLOW_DETERMINISTIC_SCHEDULING, _run._r.getstate()
    _run._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
    _run._r.seed(seed)
    try:
        yield
    finally:
        _run._ALLOW_DETERMINISTIC_SCHEDULING = saved_mode  # type: ignore[misc]
        _run._r.setstate(saved_state)


def simulate(options: SimOptions) -> dict[str, Any]:
    """Run the simulation; the result (see `postee sim --help`) as a JSON-ready dict."""
    started = time.perf_counter()
    rng = random.Random(options.seed)
    data, runners = _configuration(options)
    scenario = make_scenario(rng, runners, events=options.events, duration=options.duration, faults=options.faults)
    run = _Run(options, scenario, data, rng)
    with seeded_scheduler(options.seed):
        trio.run(run.main, clock=trio.testing.MockClock(autojump_threshold=0))
    if run.error is not None:
        raise run.error
    result = run.result
    result["wall_seconds"] = round(time.perf_counter() - started, 3)
    return result


def _configuration(options: SimOptions) -> tuple[dict[str, Any], list[str]]:
    if options.cfgfile is None:
        names = [f"runner-{i}" for i in range(1, options.runners + 1)]
        return generated_config(names, pace=pace_of(options.duration, options.events)), names
    try:
        data = yamlio.safe_load(Path(options.cfgfile).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SimulationError(f"{options.cfgfile}: {exc}") from None
    if not isinstance(data, dict):
        raise SimulationError(f"{options.cfgfile}: not a Postee configuration (a YAML mapping)")
    return data, runner_names_of(data)


class _Run:
    """One run's state (see `simulate`)."""

    def __init__(self, options: SimOptions, scenario: Scenario, data: dict[str, Any], rng: random.Random) -> None:
        self.options = options
        self.scenario = scenario
        self.data = data
        self.rng = rng
        self.trace = Trace()
        self.recordings = Recordings(on_call=self._traced_call)
        self.bodies: dict[str, Any] = {}
        """Event id -> the event as accepted (routes' dedup keys are computed from it)."""
        self._background: trio.Nursery | None = None
        self.reload_version = 1
        self.posted: dict[int, str] = {}
        """Event number -> the id of the event as accepted."""
        self.refused = 0
        self._bodies: dict[int, bytes] = {}
        self.reloads: list[dict[str, Any]] = []
        self.result: dict[str, Any] = {}
        self.error: SimulationError | None = None
        self.t0 = 0.0

    def _traced_call(self, call: Call) -> None:
        self.trace.add("call", node=call.node, action=call.action, route=call.route, ev=call.event_id,
                       attempt=call.attempt, items=list(call.items), result=call.result, started=round(call.started, 6))

    async def main(self) -> None:
        with use_runtime(sim_runtime()):
            library = TemplateLibrary.load()
            bus = SimBus(random.Random(self.rng.getrandbits(64)), self.trace)
            async with open_sim_pool(self.options.engine) as pool, trio.open_nursery() as nursery:
                self._background = nursery
                await nursery.start(bus.serve)
                plan = action_plan(self.options.seed, self.scenario.failing_actions, self.scenario.pace)
                deployment = Deployment(bus=bus, pool=pool, library=library, recordings=self.recordings,
                                        trace=self.trace, plan=plan, runners=self.scenario.runners)
                deployment.cfgfile.write_text(dump(self.data))
                await deployment.open(nursery)
                try:
                    await self._run(deployment, bus)
                except SimulationError as exc:  # leaves trio.run as itself, not in an exception group
                    self.error = exc
                finally:
                    await deployment.stop_all()
                    await deployment.aclose()
                    nursery.cancel_scope.cancel()

    async def _run(self, deployment: Deployment, bus: SimBus) -> None:
        await self._start_all(deployment)
        self.t0 = trio.current_time()
        faults = self.options.faults
        bus.faults = BusFaults(
            loss=BUS_FAULTS.loss if "loss" in faults else 0.0,
            duplicate=BUS_FAULTS.duplicate if "duplicate" in faults else 0.0,
            delayed=BUS_FAULTS.delayed if "delay" in faults else 0.0,
            delay=BUS_FAULTS.delay,
        )
        async with trio.open_nursery() as drive:
            drive.start_soon(self._drive_events, deployment)
            drive.start_soon(self._inject_faults, deployment, bus)
        bus.faults = NO_FAULTS
        settled_at = await self._settle(deployment, bus)
        facts = self._facts(deployment)
        converged = self._converged(deployment)
        quiet = await self._quiet(deployment, bus)
        verdict, lost, duplicated = check_all(deployment, facts, self.recordings.calls, {}, converged, quiet,
                                              self.bodies)
        self.result = {
            "seed": self.options.seed,
            "trace_sha256": self.trace.sha256,
            "simulated_seconds": round(trio.current_time() - self.t0, 3),
            "settled_after": round(settled_at - self.t0, 3) if settled_at is not None else None,
            "wall_seconds": None,
            "runners": len(self.scenario.runners),
            "events": len(self.scenario.events),
            "accepted": len(self.posted),
            "refused_then_retried": self.refused,
            "lost": lost,
            "duplicated": duplicated,
            "redone_after_crash": verdict.redone_after_crash,
            "faults": sorted(faults),
            "injected": {
                "bus_lost": bus.lost, "bus_duplicated": bus.duplicated, "bus_delayed": bus.delayed,
                "crashes": sum(len(s.crashes) for s in deployment.slots.values()),
                "partitions": sum(1 for f in self.scenario.faults if f.kind == "partition"),
                "disconnects": sum(1 for f in self.scenario.faults if f.kind == "disconnect"),
                "reloads": len(self.reloads),
                "action_attempts_failed": sum(1 for c in self.recordings.calls if c.result != "ok"),
            },
            "action_calls": len(self.recordings.calls),
            "trace_entries": self.trace.entries,
            "checked": verdict.checked,
            "unchecked": verdict.unchecked,
            "invariants": verdict.invariants,
            "violation_counts": {k: v for k, v in verdict.counts.items() if v},
            "violations": verdict.violations,
            "reproduce": self._reproduce(),
        }
        if not all(verdict.invariants.values()):  # what happened last, to read next to the violations
            self.result["trace_tail"] = list(self.trace.last)

    def _reproduce(self) -> str:
        o = self.options
        faults = ",".join(sorted(o.faults)) if o.faults else "none"
        parts = [f"postee sim --seed {o.seed} --runners {o.runners} --events {o.events} --faults {faults}",
                 f"--duration {o.duration:g}"]
        if o.cfgfile:
            parts.append(f"--cfgfile {o.cfgfile}")
        if o.engine:
            parts.append(f"--rego-engine {o.engine}")
        return " ".join(parts) + " --json"

    # -- phases ------------------------------------------------------------------------------------
    async def _start_all(self, deployment: Deployment) -> None:
        """Start the controller, then every runner; `SimulationError` naming the node that could not start."""
        deployment.start(CONTROLLER)
        try:
            with trio.fail_after(STARTUP_TIMEOUT):
                await self._ready(deployment, CONTROLLER)
                for name in self.scenario.runners:
                    deployment.start(name)
                for name in self.scenario.runners:
                    await self._ready(deployment, name)
        except trio.TooSlowError:
            late = [name for name in deployment.slots if deployment.node(name) is None]
            raise SimulationError(f"not ready after {STARTUP_TIMEOUT:g} simulated seconds: {', '.join(late[:10])}") \
                from None

    @staticmethod
    async def _ready(deployment: Deployment, name: str) -> None:
        while deployment.node(name) is None:
            died = deployment.slots[name].died
            if died is not None:
                raise SimulationError(f"{name} could not start: {died}")
            await trio.sleep(0.1)

    async def _drive_events(self, deployment: Deployment) -> None:
        """Post each event at its time to its node; what a node cannot take is posted again later (in the
        background: the settling waits for it, and says so if it never happens)."""
        assert self._background is not None
        for event in self.scenario.events:
            await trio.sleep_until(self.t0 + event.at)
            if not await self._post(deployment, event):
                self._background.start_soon(self._post_until_accepted, deployment, event)

    async def _post(self, deployment: Deployment, event: Any) -> bool:
        from postee.pipeline.events import parse_event

        node = deployment.node(event.target)
        if node is None:
            self.trace.add("post", n=event.n, to=event.target, accepted=False)
            return False
        parsed = parse_event(self._bodies.setdefault(event.n, event.body()))
        accepted = await node.submit(parsed)
        self.trace.add("post", n=event.n, to=event.target, accepted=accepted, ev=parsed.id)
        if accepted:
            self.posted[event.n] = parsed.id
            self.bodies[parsed.id] = parsed.body
        return accepted

    async def _post_until_accepted(self, deployment: Deployment, event: Any) -> None:
        self.refused += 1
        delay = RESUBMIT_INTERVAL
        give_up = self.t0 + self.options.duration + SETTLE_LIMIT
        while trio.current_time() < give_up:  # a node dead for good: "events not accepted" at the end
            await trio.sleep(delay)
            if await self._post(deployment, event):
                return
            delay = min(delay * 2, RESUBMIT_MAX)

    async def _inject_faults(self, deployment: Deployment, bus: SimBus) -> None:
        async with trio.open_nursery() as ongoing:
            for fault in self.scenario.faults:
                await trio.sleep_until(self.t0 + fault.at)
                ongoing.start_soon(self._fault, deployment, bus, fault)

    async def _fault(self, deployment: Deployment, bus: SimBus, fault: Fault) -> None:
        if fault.kind == "partition":
            bus.partition(fault.node, fault.peer)
            await trio.sleep(fault.duration)
            bus.heal(fault.node, fault.peer)
        elif fault.kind == "disconnect":
            if deployment.slots[fault.node].role is None:
                return  # down already: it reconnects when it restarts
            bus.disconnect(fault.node)
            await trio.sleep(fault.duration)
            if deployment.slots[fault.node].role is not None:
                bus.connect(fault.node)
        elif fault.kind == "crash":
            await deployment.crash(fault.node)
            await trio.sleep(fault.duration)
            deployment.restart(fault.node)
        elif fault.kind == "reload":
            await self._reload(deployment)

    async def _reload(self, deployment: Deployment) -> None:
        """Change the controller's file and reload it: every slice changes, every runner must follow."""
        self.reload_version += 1
        self.data = reloaded_config(self.data, self.reload_version)
        deployment.cfgfile.write_text(dump(self.data))
        self.trace.add("reload", node=CONTROLLER)
        controller = deployment.controller
        node = deployment.node(CONTROLLER)
        if controller is None or node is None:
            self.reloads.append({"at": trio.current_time(), "ok": None, "message": "controller down: read at restart"})
            return
        ok, message = await node.reload()
        self.reloads.append({"at": trio.current_time(), "ok": ok, "message": message})
        self.trace.add("reloaded", ok=ok)

    async def _settle(self, deployment: Deployment, bus: SimBus) -> float | None:
        """Heal and restart everything, then wait until quiet twice in a row; when it was, or None."""
        for pair in sorted(bus.partitions, key=sorted):
            bus.heal(*sorted(pair), all_of_them=True)
        for name, slot in deployment.slots.items():
            if slot.role is None:
                deployment.restart(name)
            elif not bus.clients()[name].connected:
                bus.connect(name)
        deadline = trio.current_time() + SETTLE_LIMIT
        calm = 0
        while trio.current_time() < deadline:
            await trio.sleep(SETTLE_STEP)
            quiet, converged = await self._quiet(deployment, bus), self._converged(deployment)
            log.debug("settling", at=trio.current_time() - self.t0, busy=quiet[:5], behind=converged[:5])
            if not quiet and not converged:
                calm += 1
                if calm >= 2:
                    return trio.current_time()
            else:
                calm = 0
        return None

    async def _quiet(self, deployment: Deployment, bus: SimBus) -> list[dict[str, Any]]:
        """What is not quiet yet: nodes down, events not yet accepted, queues and outboxes not empty."""
        found: list[dict[str, Any]] = []
        pending = len(self.scenario.events) - len(self.posted)
        if pending:
            found.append({"problem": "events not accepted yet", "count": pending})
        if bus.in_flight():
            found.append({"problem": "messages in flight on the bus", "count": bus.in_flight()})
        for name, slot in deployment.slots.items():
            node = deployment.node(name)
            if node is None or node.pipeline is None:
                found.append({"problem": "node not running", "node": name})
                continue
            busy = [f"{s.name}={s.depth}" for s in node.pipeline.mailboxes() if s.depth]
            if busy:
                found.append({"problem": "mailboxes not empty", "node": name, "mailboxes": busy[:10]})
            store = slot.store
            unfinished = await store.intake_count()
            if unfinished:
                found.append({"problem": "unfinished events in the store", "node": name, "count": unfinished})
            outbox = await store.outbox_count()
            if outbox:
                found.append({"problem": "outbox not empty", "node": name, "count": outbox})
            queued = await store.aggregation_pending()
            if queued:
                found.append({"problem": "aggregation queues not empty", "node": name,
                              "queues": [q._asdict() for q in queued][:5]})
        return found

    def _converged(self, deployment: Deployment) -> list[dict[str, Any]]:
        """Every runner runs the slice of the controller's running configuration, and reports it."""
        controller = deployment.controller
        if not isinstance(controller, Controller) or controller.running is None:
            return [{"problem": "controller not running"}]
        found = []
        registry = controller.registry.runners
        for name in self.scenario.runners:
            runner = deployment.runner(name)
            wanted = controller.slice_version(name)
            runs = runner.current.version if runner is not None and runner.current is not None else None
            info = registry.get(name)
            reported = info.config_version if info is not None else None
            if runs != wanted or reported != wanted:
                found.append({"problem": "runner not on the current configuration", "runner": name, "wanted": wanted,
                              "runs": runs, "reported_to_controller": reported})
        return found

    def _facts(self, deployment: Deployment) -> dict[tuple[str, str], RouteFacts]:
        """Per (node, route): its local actions, and whether it serializes, aggregates, deduplicates."""
        facts = {}
        for name in deployment.slots:
            node = deployment.node(name)
            if node is None or node.pipeline is None:
                continue
            for route_name, actor in node.pipeline.routes.items():
                plugins = actor.route.plugins
                facts[(name, route_name)] = RouteFacts(
                    actions=tuple(a.action.name for a in actor.actions),
                    serialized=actor.route.serialize_actions,
                    aggregates=plugins.aggregates,
                    dedup_window=plugins.unique_message_timeout if plugins.deduplicates else None,
                    dedup_props=tuple(plugins.unique_message_props),
                    steps=tuple(step.action for step in actor.plan.steps)
                    if actor.plan is not None and actor.plan.serial else (),
                )
        return facts

