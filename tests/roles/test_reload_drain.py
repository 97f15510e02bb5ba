"""A reload lets the old pipeline finish every event it holds, however long past the stop grace.

Those events were answered 200; cancelling them at the grace would leave them unrun until the next
restart. Only stopping the node bounds the drain (what is left then is replayed at the next start).

A standalone node on Trio's virtual clock (`tests/roles/sim_helpers.py`): its action is a recorder told
to take one second per event, so the drain's length is exact and costs no real time.
"""

import trio

from postee.sim.recording import Conduct
from tests.roles.sim_helpers import open_deployment, sim_event, submit

EVENTS = 5
SECONDS_PER_EVENT = 1.0
STOP_GRACE = 1.0


def slow_route(name: str) -> str:
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
    url: http://127.0.0.1:9/hook
    timeout: 10s
"""


def one_second_each(node: str, action: str, event_id: str, attempt: int) -> Conduct:
    return Conduct(delay=SECONDS_PER_EVENT)


async def test_a_reload_drains_the_old_pipeline_past_the_stop_grace(autojump_clock, tmp_path):
    async with open_deployment(tmp_path, plan=one_second_each) as sim, \
            sim.standalone("node", slow_route("before"), stop_grace=STOP_GRACE) as node:
        for n in range(EVENTS):  # EVENTS seconds of work at one second each, in order
            await submit(node, sim_event(n))
        old = node.pipeline
        (tmp_path / "node.yaml").write_text(slow_route("after"))
        reloaded_at = trio.current_time()
        ok, message = await node.reload()
        assert ok, message
        with trio.fail_after(EVENTS * SECONDS_PER_EVENT * 2):
            await old.supervisor.wait_finished()  # the old pipeline's drain has ended
        calls = sim.calls(action="hook")
        assert [c.items for c in calls] == [(n,) for n in range(EVENTS)]  # each once, in order
        assert all(c.route == "before" and c.result == "ok" and c.attempt == 1 for c in calls)
        # the drain went on until the last event was done, far past the grace a stop would give it
        assert calls[-1].ended - reloaded_at >= EVENTS * SECONDS_PER_EVENT - SECONDS_PER_EVENT > STOP_GRACE
