"""Review of the last performance changes of issue #15 (6bc3864, 15432b3): renders made in the rules'
worker call, routes preparing an event without a task, mailboxes taking and sending without a trip
through the scheduler.

Seven were findings, fixed since (each test failed first): a cancelled receiver or sender taking a
message past its cancellation; the mailbox depth reading negative; a render that cannot be written
costing the event its rule decisions; renders sharing one timeout with the rules; renders capped by the
router's window below the workers; renders made for routes that drop the event. The others pin what the
changes must keep (same outcomes, errors and counters as the path without a rule book; a route whose
primed render was evicted renders by itself).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import pytest
import trio
import trio.testing

from actors import Actor, Mailbox
from postee.metrics import Metrics
from postee.pipeline.build import ENV_RULES_ONE_BY_ONE
from postee.pipeline.events import Event, parse_event
from postee.pipeline.plan import CONTROLLER_SIDE, SideLink
from postee.pipeline.rendering import RenderCache
from postee.pipeline.route_actor import RouteOutcome
from postee.pipeline.rulebook import RuleBook
from postee.rego.library import TemplateLibrary
from postee.rego.pool import open_rego_pool
from postee.rego.render import TemplateError, TemplateSpec, load_template, render_rego
from postee.rego.rules import build_rule
from tests.helpers.http_sink import open_http_sink
from tests.pipeline.conftest import running_pipeline
from tests.pipeline.rendering_helpers import indented, templates_and_hook

# -- helpers -------------------------------------------------------------------------------------------

SHOWN = """package postee.shown

title := sprintf("team %v", [input.team])
result := sprintf("n=%v", [input.n])
"""

CONFLICTS = """package postee.conflicts

title := "conflicts"
result = "small" { input.n > 6 }
result = "large" { input.n > 7 }
"""

KEYED = """package postee.keyed

title := "keyed"
result := {k: 1 | k := input.keys[_]}
"""
"""An object keyed by the event's values: with regorus, keys `1` and `"b"` come out as an int and a str,
which Go-style JSON (`as_text`) cannot sort: a `TypeError`, not a `TemplateError`."""


def slow_template(marker: int, size: int) -> str:
    """A template whose evaluation takes about `size` × 1.25 µs with regorus (linear, steady)."""
    return f"""package postee.slow{marker}

title := "slow {marker}"
result := sprintf("%v", [count([x | x := numbers.range(1, {size})[_]; x % 7 == input.k])])
"""


def metric_samples(metrics: Metrics, name: str) -> dict[tuple[str, ...], float]:
    """Every `<name>_total` sample by its label values (zero samples left out)."""
    found = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == f"{name}_total" and sample.value:
                found[tuple(sample.labels.values())] = sample.value
    return found


class Outcomes:
    """Collects `on_outcome`; `wait(n)` returns once `n` outcomes came (bounded in time)."""

    def __init__(self) -> None:
        self.seen: list[tuple[Event, RouteOutcome]] = []
        self._changed = trio.Event()

    def __call__(self, event: Event, outcome: RouteOutcome) -> None:
        self.seen.append((event, outcome))
        self._changed.set()

    async def wait(self, count: int, timeout: float = 10) -> None:
        with trio.fail_after(timeout):
            while len(self.seen) < count:
                self._changed = trio.Event()
                await self._changed.wait()


# -- 1. mailboxes: cancellation, stats --------------------------------------------------------------------


async def test_a_cancelled_receiver_leaves_the_queued_message_in_the_mailbox():
    mailbox: Mailbox[str] = Mailbox(4, name="m")
    assert mailbox.address().try_send("queued")
    with trio.CancelScope() as scope:
        scope.cancel()
        await mailbox.receive()
    assert scope.cancelled_caught
    assert mailbox.stats().depth == 1
    assert mailbox.receive_nowait() == "queued"


class Forwarder(Actor[int]):
    """Hands each message on to another mailbox (a route handing deliveries to an action, say)."""

    def __init__(self, out) -> None:
        super().__init__(name="forwarder", capacity=8)
        self.out = out

    async def handle(self, message: int) -> None:
        await self.out.send(message)


async def test_an_actor_cancelled_while_its_send_completes_loses_no_message_across_a_restart(autojump_clock):
    sink: Mailbox[int] = Mailbox(1, name="sink")
    out = sink.address()
    assert out.try_send(0)  # the sink is full: the forwarder's first send waits
    forwarder = Forwarder(out)
    for message in (1, 2, 3):
        assert forwarder.address.try_send(message)
    scope = trio.CancelScope()

    async def first_run() -> None:
        with scope:
            await forwarder.run()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(first_run)
        await trio.testing.wait_all_tasks_blocked()  # took 1, waits for room in the sink
        assert sink.receive_nowait() == 0  # room: its send of 1 completes...
        scope.cancel()  # ...and before it runs again, it is cancelled (a sibling crashed, a supervisor stops it)
    received = [sink.receive_nowait()]
    async with trio.open_nursery() as nursery:  # restarted: the same actor, the same mailbox
        await nursery.start(forwarder.run)
        with trio.move_on_after(5):
            while len(received) < 3:
                received.append(await sink.receive())
        forwarder.begin_stop()
    assert received == [1, 2, 3]


async def test_mailbox_depth_is_never_negative_while_blocked_senders_resume(autojump_clock):
    mailbox: Mailbox[int] = Mailbox(1, name="depth")
    addr = mailbox.address()
    assert addr.try_send(0)
    depths = []
    async with trio.open_nursery() as nursery:
        for n in (1, 2, 3, 4):
            nursery.start_soon(addr.send, n)
            await trio.testing.wait_all_tasks_blocked()
        received = []
        for _ in range(5):
            received.append(await mailbox.receive())
            depths.append(mailbox.stats().depth)
    assert received == [0, 1, 2, 3, 4]  # FIFO holds
    assert min(depths) >= 0, depths


# -- 2. renders in the rules' call -------------------------------------------------------------------------


async def test_a_render_that_cannot_be_written_does_not_cost_the_event_its_rule_decisions():
    async with open_rego_pool("regorus", isolation="thread", workers=1) as pool:
        library = TemplateLibrary.load()
        keyed = await load_template(TemplateSpec("keyed", body=KEYED), library)
        shown = await load_template(TemplateSpec("shown", body=SHOWN), library)
        rules = {"keyed": build_rule("keyed", "input.n > 0"), "shown": build_rule("shown", 'input.team == "a"')}
        renderer = RenderCache(pool)
        rulebook = RuleBook(pool, rules, renders={"keyed": keyed, "shown": shown}, renderer=renderer)
        event = parse_event(json.dumps({"team": "a", "n": 1, "keys": [1, "b"]}).encode())
        with pytest.raises(TypeError):  # what the route meets rendering alone: its own "internal" error
            await render_rego(pool, keyed, event.body, "", event.text)
        calls = pool.stats.calls
        decisions = await rulebook.decide(event, list(rules))
        assert decisions == {"keyed": True, "shown": True}
        assert pool.stats.calls == calls + 1
        assert renderer.ready(keyed, event.id) is None  # left to the route, which meets the same error
        assert renderer.ready(shown, event.id) is not None


async def test_renders_that_each_fit_the_timeout_do_not_time_the_rules_call_out():
    library = TemplateLibrary.load()
    size = 40_000  # ~50 ms a render with regorus
    templates = [await load_template(TemplateSpec(f"slow{i}", body=slow_template(i, size)), library)
                 for i in range(8)]
    event = parse_event(b'{"k": 1, "team": "a"}')
    async with open_rego_pool("regorus", isolation="thread", workers=1) as pool:  # measure one render
        await render_rego(pool, templates[0], event.body, "", event.text)  # compiled
        took = []
        for _ in range(3):
            start = time.perf_counter()
            await render_rego(pool, templates[0], event.body, "", event.text)
            took.append(time.perf_counter() - start)
        one = statistics.median(took)
    async with open_rego_pool("regorus", isolation="thread", workers=2, timeout=2.5 * one) as pool:
        for template in templates:  # each alone: well within the timeout (and compiled in the thread)
            await render_rego(pool, template, event.body, "", event.text)
        rules = {f"route{i}": build_rule(f"route{i}", f'input.team == "a"; {i} >= 0') for i in range(8)}
        renderer = RenderCache(pool)
        rulebook = RuleBook(pool, rules, renderer=renderer,
                            renders={f"route{i}": template for i, template in enumerate(templates)})
        timeouts = pool.stats.timeouts
        decisions = await rulebook.decide(event, list(rules))
        assert pool.stats.timeouts == timeouts
        assert decisions == dict.fromkeys(rules, True)


async def test_the_renders_of_many_routes_use_every_worker(tmp_path):
    size = 20_000  # ~25 ms a render
    routes = "".join(f"""
  - name: r{i}
    input: input.k == 1
    actions: [hook]
    template: slow{i}""" for i in range(8))
    templates = {f"slow{i}": slow_template(i, size) for i in range(8)}
    outcomes = Outcomes()
    async with open_http_sink() as sink:
        cfg = f"""
routes:{routes}
{templates_and_hook(sink.url, templates)}"""
        async with running_pipeline(tmp_path, cfg, workers=8, on_outcome=outcomes) as pipeline:
            limiter = pipeline.renderer.pool.limiter
            busiest = 0
            async with trio.open_nursery() as nursery:
                async def sample() -> None:
                    nonlocal busiest
                    for _ in range(100_000):  # cancelled once every outcome is in
                        busiest = max(busiest, limiter.borrowed_tokens)
                        await trio.sleep(0.001)

                nursery.start_soon(sample)
                for _ in range(12):
                    await pipeline.router.address.send(parse_event(b'{"k": 1}'))
                await outcomes.wait(12 * 8, timeout=30)
                nursery.cancel_scope.cancel()
    assert [o.dropped for _, o in outcomes.seen] == [None] * (12 * 8)
    assert busiest >= 7, busiest


async def test_a_primed_render_evicted_before_its_route_reads_it_is_rendered_by_the_route(tmp_path):
    """The cache keeps one entry: the second template primed for an event evicts the first before its
    route reads it; that route renders by itself, to the same content."""
    outcomes = Outcomes()
    async with open_http_sink() as sink:
        cfg = f"""
routes:
  - name: a
    input: input.team == "a"
    actions: [hook]
    template: shown
  - name: b
    input: input.n > 5
    actions: [hook]
    template: conflicts
{templates_and_hook(sink.url, {"shown": SHOWN, "conflicts": CONFLICTS})}"""
        async with running_pipeline(tmp_path, cfg, on_outcome=outcomes) as pipeline:
            pipeline.renderer.size = 1
            pool = pipeline.renderer.pool
            events = [parse_event(json.dumps({"team": "a", "n": n}).encode()) for n in (7, 8)]
            calls = pool.stats.calls
            for event in events:
                await pipeline.router.address.send(event)
            await outcomes.wait(4)
            await sink.wait_for(3)
            assert pool.stats.calls > calls + len(events)  # the routes rendered again: evicted
            library = TemplateLibrary.load()
            shown = await load_template(TemplateSpec("shown", body=SHOWN), library)
            expected = sorted([(await render_rego(pool, shown, e.body, "", e.text)).description for e in events]
                              + ["small"])
            with pytest.raises(TemplateError) as conflict:
                conflicts = await load_template(TemplateSpec("conflicts", body=CONFLICTS), library)
                await render_rego(pool, conflicts, events[1].body, "", events[1].text)
    by_route = {(event.id, outcome.route): outcome for event, outcome in outcomes.seen}
    assert by_route[(events[1].id, "b")].dropped == f"error: {conflict.value}"
    assert sorted(r.body.decode() for r in sink.requests) == expected


# -- 3. routes preparing at once: same outcomes, errors and counters as the path without a rule book -------

EQUIVALENCE_EVENTS = [
    {"team": "a", "n": 8},  # conflicts fails
    {"team": "a", "n": 1},
    {"team": "b", "n": 7},
    {"team": "a", "n": 1},  # a duplicate for `dedup`
    {"team": "c", "n": 0},
]


def equivalence_config(sink_url: str) -> str:
    return f"""
routes:
  - name: plain
    input: input.team == "a"
    actions: [hook]
    template: shown
  - name: nobody
    input: input.team == "zzz"
    actions: [hook]
    template: shown
  - name: failing-rule
    input: to_number(input.team) > 0
    actions: [hook]
    template: shown
  - name: failing-template
    input: input.n > 5
    actions: [hook]
    template: conflicts
  - name: no-actions
    input: input.n >= 0
    template: shown
  - name: everything
    actions: [hook]
    template: shown
  - name: dedup
    input: input.team == "a"
    actions: [hook]
    template: shown
    plugins:
      unique-message-props: [team, n]
  - name: aggregate
    actions: [hook]
    template: shown
    plugins:
      aggregate-message-number: 2
{templates_and_hook(sink_url, {"shown": SHOWN, "conflicts": CONFLICTS})}"""


async def run_equivalence(tmp_path: Path, db: str) -> tuple[list, dict, dict, list[str]]:
    outcomes = Outcomes()
    metrics = Metrics()
    async with open_http_sink() as sink:
        async with running_pipeline(tmp_path, equivalence_config(sink.url), db=db, metrics=metrics,
                                 on_outcome=outcomes) as pipeline:
            events = [parse_event(json.dumps(body).encode()) for body in EQUIVALENCE_EVENTS]
            for event in events:
                await pipeline.router.address.send(event)
            await outcomes.wait(len(events) * len(pipeline.routes))
            counters = {name: (route.processed, route.matched) for name, route in pipeline.routes.items()}
        bodies = sorted(r.body.decode() for r in sink.requests)
    index = {event.id: i for i, event in enumerate(events)}
    seen = sorted((index[event.id], o.route, o.matched, o.dropped) for event, o in outcomes.seen)
    samples = {name: metric_samples(metrics, name)
               for name in ("postee_route_matches", "postee_route_errors", "postee_renders")}
    return seen, counters, samples, bodies


async def test_routes_decide_count_and_fail_as_without_the_rule_book(tmp_path, monkeypatch):
    """Every kind of decision (match, no match, a rule's error, a template's error, no actions, no rule,
    dedup, aggregation): the same outcomes and error texts, counters, metrics and deliveries whether the
    router decided and rendered (routes preparing at once) or each route asked its own rule and rendered."""
    monkeypatch.delenv(ENV_RULES_ONE_BY_ONE, raising=False)
    with_book = await run_equivalence(tmp_path, "with.sqlite")
    monkeypatch.setenv(ENV_RULES_ONE_BY_ONE, "1")
    alone = await run_equivalence(tmp_path, "alone.sqlite")
    seen, counters, samples, bodies = with_book
    assert seen == alone[0]
    assert counters == alone[1]
    assert samples == alone[2]
    assert bodies == alone[3]
    dropped = {(i, route): d for i, route, _, d in seen}
    assert dropped[(0, "failing-template")].startswith("error: template 'conflicts'")
    assert dropped[(0, "failing-rule")].startswith("error: ") and "could not parse" in dropped[(0, "failing-rule")]
    assert dropped[(3, "dedup")] == "duplicate" and dropped[(1, "dedup")] is None
    assert dropped[(0, "no-actions")] == "no local actions"


# -- 4. renders for routes that do not render what they match -------------------------------------------


async def test_an_event_a_route_leaves_to_its_runner_is_not_rendered_for_it(tmp_path):
    outcomes = Outcomes()
    metrics = Metrics()
    handed = []

    async def hand_over(handover) -> None:
        handed.append(handover)

    async with open_http_sink() as sink:
        cfg = f"""
routes:
  - name: mixed
    input: input.team == "a"
    actions: [ship, audit]
    serialize-actions: true
    template: shown
templates:
  - name: shown
    body: |
{indented(SHOWN, 6)}
actions:
  - name: ship
    type: webhook
    enable: true
    runs-on: r1
    url: {sink.url}/ship
  - name: audit
    type: webhook
    enable: true
    url: {sink.url}/audit
"""
        async with running_pipeline(tmp_path, cfg, metrics=metrics, on_outcome=outcomes,
                                 link=SideLink(CONTROLLER_SIDE, hand_over),
                                 is_local=lambda spec: not spec.runs_on) as pipeline:
            pool = pipeline.renderer.pool
            calls = pool.stats.calls
            reported = parse_event(b'{"team": "a", "n": 1}', source="r1")  # entered at runner r1
            await pipeline.router.address.send(reported)
            await outcomes.wait(1)
    assert [o.dropped for _, o in outcomes.seen] == ["runs from runner 'r1'"]
    assert not handed
    assert pool.stats.calls == calls + 1
    assert metric_samples(metrics, "postee_renders") == {}
