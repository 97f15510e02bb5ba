"""The node's live feed (`postee.feed`, groundwork of issue #14): bounded per subscriber, never waits.

Unit tests of the broadcast, then a controller and a runner (on virtual time, `tests/roles/sim_helpers`)
whose feeds carry exactly the events and executions that happened, while a subscriber that never reads
loses messages (counted, announced) and slows nothing.
"""

from __future__ import annotations

import json

import trio

from postee.feed import EventRoutes, Feed, wire
from postee.pipeline.events import parse_event
from postee.pipeline.route_actor import RouteOutcome
from postee.roles.watch import NodeWatch
from tests.roles.sim_helpers import open_deployment, settle, sim_event, submit


async def test_a_subscriber_gets_what_is_published_after_it_subscribed_in_order():
    feed = Feed()
    feed.publish({"type": "event", "id": "before"})
    with feed.subscribe() as subscription:
        for n in range(5):
            feed.publish({"type": "event", "id": n})
        assert [(await subscription.receive())["id"] for _ in range(5)] == [0, 1, 2, 3, 4]
    assert feed.subscribers == 0


async def test_a_message_is_encoded_once_for_all_its_clients_and_bodies_only_for_those_who_ask():
    feed = Feed()
    with feed.subscribe() as one, feed.subscribe() as other:
        feed.publish({"type": "event", "id": "e", "body": {"secret": "s3"}})
        first, second = await one.receive(), await other.receive()
    assert wire(first, False) is wire(second, False)  # the same text object: encoded once
    assert json.loads(wire(first, False)) == {"type": "event", "id": "e"}
    assert json.loads(wire(second, True))["body"] == {"secret": "s3"}


async def test_pending_messages_are_taken_together_with_a_dropped_notice_first():
    feed = Feed()
    with feed.subscribe(capacity=3) as subscription:
        for n in range(5):
            feed.publish({"type": "event", "id": n})
        assert subscription.receive_pending(2) == [{"type": "dropped", "count": 2}, {"type": "event", "id": 0}]
        assert subscription.receive_pending(10) == [{"type": "event", "id": 1}, {"type": "event", "id": 2}]
        assert subscription.receive_pending(10) == []


async def test_bodies_are_attached_only_while_someone_reads_them_and_a_queue_holds_a_bounded_amount():
    from postee.feed import BODY_BUDGET

    feed = Feed()
    watch = NodeWatch(feed, lambda: "n")
    event = parse_event(b'{"image": "a"}')
    with feed.subscribe() as plain:
        watch.accepted(event)
        assert "body" not in (await plain.receive())  # nobody asked: the queue holds no body
        with feed.subscribe(bodies=True, capacity=10_000) as reader:
            watch.accepted(event)
            assert (await reader.receive())["body"] == {"image": "a"}
            big = {"type": "event", "id": "big", "size": BODY_BUDGET // 3, "body": {"pad": "..."}}
            for _ in range(5):
                feed.publish(big)
            assert reader.pending() == 3 and reader.dropped == 2  # the 4th would pass the budget
            assert plain.body_chars <= BODY_BUDGET and plain.dropped > 0  # bodies it holds count too
            await reader.receive()  # taken: room for one more
            feed.publish(big)
            assert reader.pending() == 3


async def test_subscribers_and_drops_are_counted_for_metrics():
    from postee.metrics import Metrics

    metrics = Metrics()
    feed = Feed(on_drop=metrics.feed_dropped.inc, on_subscribers=metrics.feed_subscribers.set)
    with feed.subscribe(capacity=1), feed.subscribe():
        assert "postee_feed_subscribers 2.0" in metrics.render().decode()
        for n in range(4):
            feed.publish({"type": "event", "id": n})
    text = metrics.render().decode()
    assert "postee_feed_subscribers 0.0" in text and "postee_feed_dropped_messages_total 3.0" in text


async def test_a_full_subscriber_loses_the_newest_and_is_told_how_many():
    feed = Feed()
    with feed.subscribe(capacity=3) as slow, feed.subscribe() as fast:
        for n in range(10):
            feed.publish({"type": "event", "id": n})  # never waits, whoever is slow
        assert [(await slow.receive())] == [{"type": "dropped", "count": 7}]
        assert [(await slow.receive())["id"] for _ in range(3)] == [0, 1, 2]
        assert [(await fast.receive())["id"] for _ in range(10)] == list(range(10))
        assert slow.dropped_total == 7 and fast.dropped_total == 0


async def test_a_filter_is_applied_before_queueing():
    feed = Feed()
    with feed.subscribe(capacity=2, accept=lambda m: m["type"] == "execution") as executions:
        for n in range(5):
            feed.publish({"type": "event", "id": n})
        feed.publish({"type": "execution", "id": "x"})
        assert await executions.receive() == {"type": "execution", "id": "x"}
        assert executions.dropped_total == 0  # the events it does not want took no room


async def test_closing_the_feed_ends_its_readers_after_what_is_queued():
    feed = Feed()
    with feed.subscribe() as subscription:
        feed.publish({"type": "event", "id": 1})
        feed.close()
        assert [m async for m in subscription] == [{"type": "event", "id": 1}]


async def test_nothing_is_built_when_nobody_listens():
    feed = Feed()
    assert not feed.wanted()
    with feed.subscribe():
        assert feed.wanted()


def test_an_events_routes_are_said_once_every_route_decided_and_failures_apart():
    feed = Feed()
    watch = NodeWatch(feed, lambda: "node-a")
    event, other = parse_event(b'{"image": "a"}'), parse_event(b'{"image": "b"}')
    with feed.subscribe() as subscription:
        watch.routed(event, 4)  # no decisions from the router (a tenant run): the routes' outcomes are tallied
        watch.routed(other, 0)  # no route at all: said at once
        watch.decided(event, RouteOutcome("r1", matched=True))
        watch.decided(event, RouteOutcome("r2", matched=True, dropped="error: template failed"))  # its rule matched
        watch.decided(event, RouteOutcome("r4", matched=False, dropped="error: divide by zero"))  # its rule failed
        assert subscription.pending() == 1
        watch.decided(event, RouteOutcome("r3", matched=False))
        said = [dict(subscription._queue.popleft()) for _ in range(2)]
    assert said == [
        {"type": "event", "stage": "routed", "node": "node-a", "id": other.id, "source": "webhook", "routes": [],
         "failed": []},
        {"type": "event", "stage": "routed", "node": "node-a", "id": event.id, "source": "webhook",
         "routes": ["r1", "r2"], "failed": ["r4"]},
    ]
    assert watch.routes_of(event.id) == {"routes": ["r1", "r2"], "failed": ["r4"]}  # for `/events?bodies=0`
    assert len(watch.routes) == 0


def test_routes_are_tallied_without_watchers_too_and_the_tally_is_bounded():
    watch = NodeWatch(Feed(), lambda: "n")  # nobody subscribed: nothing published, the routes still kept
    event = parse_event(b"{}")
    watch.routed(event, 2)
    watch.decided(event, RouteOutcome("a", matched=True))
    watch.decided(event, RouteOutcome("b", matched=False))
    assert len(watch.routes) == 0 and watch.routes_of(event.id) == {"routes": ["a"], "failed": []}
    routes = EventRoutes(limit=3)
    for n in range(5):
        routes.expect(f"e{n}", 2)  # routes stopped by a reload never decide: the oldest are forgotten
    assert len(routes) == 3 and routes.decided("e0", "r", True, False) is None
    assert routes.decided("e4", "r", True, False) is None and routes.decided("e4", "s", False, False) == (["r"], [])


CONFIG = """
routes:
  - name: both
    actions: [on-runner, on-controller]
    template: raw
templates:
  - name: raw
    rego-package: postee.rawmessage.json
actions:
  - name: on-runner
    type: webhook
    enable: true
    runs-on: runner-1
    url: http://127.0.0.1:9/runner
  - name: on-controller
    type: webhook
    enable: true
    url: http://127.0.0.1:9/controller
"""


async def test_the_controllers_feed_shows_every_event_and_execution_and_a_stuck_reader_slows_nothing(
        autojump_clock, tmp_path):
    async with open_deployment(tmp_path) as sim, sim.controller(CONFIG) as controller, \
            sim.runner("runner-1") as runner:
        node = controller.node
        with node.feed.subscribe() as watcher, node.feed.subscribe(capacity=2) as stuck, \
                runner.node.feed.subscribe(accept=lambda m: m["type"] == "execution") as on_runner:
            events = [await submit(runner, sim_event(n)) for n in range(6)]
            await settle(lambda: len(sim.calls(action="on-controller")) == 6
                         and len(json_executions(controller)) == 6)
            seen: list[dict] = []
            with trio.move_on_after(1):
                while True:
                    seen.append(dict(await watcher.receive()))
            accepted = [m for m in seen if m["type"] == "event" and m["stage"] == "accepted"]
            assert [m["id"] for m in accepted] == [e.id for e in events]  # in order, each once
            routed = [m for m in seen if m["type"] == "event" and m["stage"] == "routed"]
            assert [(m["id"], m["routes"]) for m in routed] == [(e.id, ["both"]) for e in events]
            assert {m["source"] for m in accepted} == {"runner-1"} and {m["node"] for m in accepted} == {"controller"}
            executions = [m for m in seen if m["type"] == "execution"]
            assert sorted((m["node"], m["action"], m["event_id"]) for m in executions) == sorted(
                [("controller", "on-controller", e.id) for e in events]
                + [("runner-1", "on-runner", e.id) for e in events])
            assert all(m["status"] == "ok" and m["attempts"] == 1 for m in executions)
            # the stuck reader read nothing and lost all but two: the pipeline did not wait for it
            assert stuck.pending() == 2 and stuck.dropped_total == len(seen) - 2
            assert (await stuck.receive()) == {"type": "dropped", "count": len(seen) - 2}
            # the runner's own feed: its executions, under its name
            runner_executions = [dict(await on_runner.receive()) for _ in range(6)]
            assert {(m["node"], m["action"]) for m in runner_executions} == {("runner-1", "on-runner")}


def json_executions(controller) -> list:
    return json.loads(controller.registry.executions_json())


async def test_the_controllers_feed_says_when_a_runner_comes_up_goes_stale_then_gone(autojump_clock, tmp_path):
    """States follow from heartbeat times (5 s): stale after 3 missed intervals, gone after 12."""
    async with open_deployment(tmp_path) as sim, sim.controller(CONFIG) as controller:
        with controller.node.feed.subscribe(accept=lambda m: m["type"] == "runner") as watcher:
            async with sim.runner("runner-1"):
                up = await watcher.receive()
                assert (up["name"], up["state"], up["config_current"]) == ("runner-1", "up", True)
                assert up["config_version"] == controller.slice_version("runner-1")
                stopped_at = trio.current_time()
            with trio.fail_after(120):
                stale = await watcher.receive()
                stale_after = trio.current_time() - stopped_at
                gone = await watcher.receive()
                gone_after = trio.current_time() - stopped_at
            assert (stale["state"], gone["state"]) == ("stale", "gone")
            # its last beat was at most one interval before it stopped; the feed looks every second
            assert 10 <= stale_after <= 17 and 55 <= gone_after <= 62
