"""A route finishes its events in an `actors.Lane`; a serialized route is that lane waiting for its actions."""

import json

import trio

from actors import Lane
from postee.pipeline.events import parse_event
from tests.helpers.http_sink import Reply, open_http_sink
from tests.pipeline.conftest import running_pipeline

EVENTS = 6


def two_hooks(sink_url: str, serialize: bool) -> str:
    return f"""
routes:
  - name: r
    actions: [first, second]
    template: t
    serialize-actions: {"true" if serialize else "false"}
templates:
  - name: t
    rego-package: postee.rawmessage.json
actions:
  - name: first
    type: webhook
    enable: true
    url: {sink_url}/first
  - name: second
    type: webhook
    enable: true
    url: {sink_url}/second
"""


async def test_a_serialized_route_is_a_lane_that_waits_for_each_action_in_turn(tmp_path):
    # Every answer is slow: were two sends in flight at once, the sink would see them overlap.
    async with open_http_sink(default=Reply(200, delay=0.05)) as sink:
        async with running_pipeline(tmp_path, two_hooks(sink.url, serialize=True)) as pipeline:
            route = pipeline.routes["r"]
            assert isinstance(route.lane, Lane)
            for n in range(EVENTS):
                assert pipeline.submit(parse_event(json.dumps({"n": n}).encode()))
            await sink.wait_for(2 * EVENTS, timeout=30)
            with trio.fail_after(10):
                while route.lane.handled < EVENTS:
                    await trio.sleep(0.01)
    order = [(request.path, json.loads(request.text)["n"]) for request in sink.requests]
    assert order == [(path, n) for n in range(EVENTS) for path in ("/first", "/second")]
    assert route.lane.handled == EVENTS and route.lane.failed == 0


async def test_an_unserialized_route_finishes_in_its_lane_without_waiting_for_actions(tmp_path):
    # The answers take longer than the whole test may: a lane that waited for them would time out.
    async with open_http_sink(default=Reply(200, delay=30)) as sink:
        cfg = two_hooks(sink.url, serialize=False).replace("url:", "timeout: 1s\n    retries: 0\n    url:")
        async with running_pipeline(tmp_path, cfg) as pipeline:
            route = pipeline.routes["r"]
            for n in range(EVENTS):
                assert pipeline.submit(parse_event(json.dumps({"n": n}).encode()))
            with trio.fail_after(10):
                while route.lane.handled < EVENTS:
                    await trio.sleep(0.01)
            await sink.wait_for(2 * EVENTS, timeout=10)
