"""A reload lets the old pipeline finish every event it holds, however long past the stop grace.

Those events were answered 200; cancelling them at the grace would leave them unrun until the next
restart. Only stopping the node bounds the drain (what is left then is replayed at the next start).
"""

import json

import trio

from postee.pipeline.events import parse_event
from postee.roles.node import Node
from tests.helpers.http_sink import Reply, open_http_sink
from tests.roles.helpers import node_options

EVENTS = 5


def slow_route(sink_url: str, name: str) -> str:
    return f"""
routes:
  - name: {name}
    serialize-actions: true
    actions: [hook]
    template: t
templates:
  - name: t
    rego-package: postee.rawmessage.json
actions:
  - name: hook
    type: webhook
    enable: true
    url: {sink_url}/hook
    timeout: 10s
"""


async def test_a_reload_drains_the_old_pipeline_past_the_stop_grace(tmp_path):
    async with open_http_sink(default=Reply(200, delay=1.0)) as sink:
        cfg = tmp_path / "cfg.yaml"
        cfg.write_text(slow_route(sink.url, "before"))
        node = Node(node_options(tmp_path, "node", str(cfg), stop_grace=1.0))
        async with trio.open_nursery() as nursery:
            with trio.fail_after(30):
                await nursery.start(node.run)
            for n in range(EVENTS):  # about EVENTS seconds of work at one second each, in order
                assert await node.submit(parse_event(json.dumps({"n": n}).encode()))
            old = node.pipeline
            cfg.write_text(slow_route(sink.url, "after"))
            ok, message = await node.reload()
            assert ok, message
            with trio.fail_after(30):
                await old.supervisor.wait_finished()  # the old pipeline's drain has ended
            assert sorted(json.loads(r.text)["n"] for r in sink.requests) == list(range(EVENTS))
            node.request_stop()
