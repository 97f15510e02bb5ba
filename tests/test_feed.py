"""The node's live feed (`postee.feed`, groundwork of issue #14): bounded per subscriber, never waits.

Unit tests of the broadcast, then a controller and a runner (on virtual time, `tests/roles/sim_helpers`)
whose feeds carry exactly the events and executions that happened, while a subscriber that never reads
loses messages (counted, announced) and slows nothing.
"""

from __future__ import annotations

import json

import trio

from postee.feed import Feed
from tests.roles.sim_helpers import open_deployment, settle, sim_event, submit


async def test_a_subscriber_gets_what_is_published_after_it_subscribed_in_order():
    feed = Feed()
    feed.publish({"type": "event", "id": "before"})
    with feed.subscribe() as subscription:
        for n in range(5):
            feed.publish({"type": "event", "id": n})
        assert [(await subscription.receive())["id"] for _ in range(5)] == [0, 1, 2, 3, 4]
    assert feed.subscribers == 0


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
            accepted = [m for m in seen if m["type"] == "event"]
            assert [m["id"] for m in accepted] == [e.id for e in events]  # in order, each once
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
