"""A reload keeps a serialized route's order: the new pipeline's route waits for the old one's events.

Found by the simulator (`postee sim --seed 2 --runners 20 --events 200 --faults all`, and seed 4): on a reload the
old pipeline drains in the background while the new one takes new events, so a serialized route ran
a new event while an older one was still on its (slow, retried) actions.
"""

import json

import pytest
import trio

from postee.embed import NodeOptions, open_standalone
from postee.pipeline.events import parse_event
from postee.rego.library import TemplateLibrary
from postee.runtime import use_runtime
from postee.sim.parts import open_memory_store, open_sim_pool, sim_parts, sim_runtime
from postee.sim.recording import Conduct, Recordings
from postee.store.errors import StoreError
from postee.store.sqlite import SqliteStore

SLOW = 3.0


def config(version: int, *, dedup: bool = False) -> str:
    """Route `ordered` serialized (deduplicating by `n` when `dedup`), `loose` not; template version `version`."""
    plugins = "\n    plugins:\n      unique-message-props: [n]" if dedup else ""
    return f"""
routes:
  - name: ordered
    serialize-actions: true
    actions: [first, second]
    template: t{version}{plugins}
  - name: loose
    actions: [third]
    template: t{version}
templates:
  - name: t{version}
    body: |
      package sim.v{version}
      title := "v{version}"
      result := sprintf("sim#%v", [input.n])
actions:
  - name: first
    type: webhook
    enable: true
    url: http://sim.invalid/first
  - name: second
    type: webhook
    enable: true
    url: http://sim.invalid/second
  - name: third
    type: webhook
    enable: true
    url: http://sim.invalid/third
"""


def slow_before_reload(node: str, action: str, event_id: str, attempt: int) -> Conduct:
    return Conduct(delay=SLOW if action == "first" and trio.current_time() < 1 else 0.0)


@pytest.mark.parametrize("reloads", [1, 2])
async def test_events_after_a_reload_wait_for_the_old_pipelines_serialized_route(autojump_clock, tmp_path, reloads):
    """Two reloads in a row (found by `postee sim --seed 17 --runners 20 --events 200 --faults all`): the
    pipeline in between never got an event, and its route said "drained" without waiting for the one it
    replaced, so the third pipeline's route ran a new event while the first one's was still running."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(config(1))
    recordings = Recordings()
    with use_runtime(sim_runtime()):
        async with open_sim_pool() as pool:
            store = await open_memory_store()
            parts = sim_parts("node", store=store, pool=pool, library=TemplateLibrary.load(), recordings=recordings,
                              plan=slow_before_reload)
            options = NodeOptions(cfgfile=str(cfg), https_bind=None, db_path=str(tmp_path / "db"), environ={})
            async with open_standalone(options, parts=parts) as node:
                for n in range(3):  # each takes SLOW seconds on `first`, in order
                    assert await node.submit(parse_event(json.dumps({"n": n})))
                await trio.sleep(0.5)
                for version in range(2, 2 + reloads):
                    cfg.write_text(config(version))
                    ok, message = await node.reload()
                    assert ok, message
                for n in range(3, 6):  # fast now: without the fix they overtake 1 and 2
                    assert await node.submit(parse_event(json.dumps({"n": n})))
                with trio.fail_after(60):
                    while len([c for c in recordings.calls if c.route == "ordered"]) < 12:
                        await trio.sleep(0.5)
            await store.aclose()
    ordered = [c for c in recordings.calls if c.route == "ordered"]
    assert [(c.items[0], c.action) for c in ordered] == [
        (n, action) for n in range(6) for action in ("first", "second")
    ]
    for earlier, later in zip(ordered, ordered[1:], strict=False):
        assert later.started >= earlier.ended  # one after another, never overlapping
    assert sorted(c.items[0] for c in recordings.calls if c.route == "loose") == list(range(6))


class StoreFailingOnce(SqliteStore):
    """An in-loop store whose next dedup check fails when told (a disk error at the wrong moment)."""

    fail_next = False

    async def dedup_seen(self, *args, **kwargs):
        if self.fail_next:
            self.fail_next = False
            raise StoreError("disk I/O error (injected)")
        return await super().dedup_seen(*args, **kwargs)


async def test_a_replaced_route_that_crashes_while_draining_does_not_hold_its_successor(autojump_clock, tmp_path):
    """Found in review: the new route waited for the old one's `drained`, which a crash during the drain
    never set (a stopping supervisor does not restart), so the route, then the router, then intake stopped
    for good. The drain now releases the successor however it ends; the crashed route's event stays
    recorded for the next start."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(config(1, dedup=True))
    recordings = Recordings()
    with use_runtime(sim_runtime()):
        async with open_sim_pool() as pool:
            store = await StoreFailingOnce.open(":memory:", in_loop=True)
            parts = sim_parts("node", store=store, pool=pool, library=TemplateLibrary.load(), recordings=recordings,
                              plan=slow_before_reload)
            options = NodeOptions(cfgfile=str(cfg), https_bind=None, db_path=str(tmp_path / "db"), environ={})
            async with open_standalone(options, parts=parts) as node:
                for n in range(2):
                    assert await node.submit(parse_event(json.dumps({"n": n})))
                await trio.sleep(0.5)  # event 0 is on its (slow) action, event 1 waits in the old route
                cfg.write_text(config(2, dedup=True))
                store.fail_next = True  # the old route's check of event 1 fails: its lane crashes while draining
                ok, message = await node.reload()
                assert ok, message
                for n in range(2, 5):
                    assert await node.submit(parse_event(json.dumps({"n": n})))
                with trio.fail_after(60):
                    while {2, 3, 4} - {c.items[0] for c in recordings.calls if c.action == "first"}:
                        await trio.sleep(0.5)
                assert await store.intake_count() >= 1  # event 1: unfinished, replayed at the next start
            await store.aclose()
    assert [c.items[0] for c in recordings.calls if c.action == "first"] == [0, 2, 3, 4]
