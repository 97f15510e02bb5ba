"""Accepted means durable: a node SIGKILLed under a steady load finishes, after a restart on the same
store, every event it answered 200, and does not run again an action whose outcome it had recorded.

The route is serialized and the sink slow, so a backlog of accepted events is queued when the kill
comes; with two actions per event, the kill usually falls between the first action's recorded
outcome and the second's. After the restart a sentinel event is sent: the route is serialized and
unfinished events are replayed before the listener opens, so once the sentinel reached the sink
every replayed delivery has too, and the counts can be checked.
"""

from __future__ import annotations

import json

import httpx
import trio

from tests.daemon.crash import (
    KeptState,
    Node,
    check_runs,
    free_port,
    kept_state,
    numbered_actions,
    serialized_route,
    sink_counts,
    steady_sender,
)
from tests.helpers.http_sink import Reply, open_http_sink

SENTINEL = -1
RATE = 40.0
"""Events per second sent: about three times what the serialized route gets through."""
KILL_AFTER_ACCEPTED = 50
KILL_AFTER_DELIVERED = 10


async def load_then_kill(client: httpx.AsyncClient, node: Node, sink, accepted: list[int], *,
                         action: str) -> None:
    """Send at a steady rate; SIGKILL the node once a backlog built up (enough accepted, some delivered)."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: steady_sender(client, f"{node.url}/", rate=RATE, accepted=accepted))
        with trio.fail_after(60):
            while not (len(accepted) >= KILL_AFTER_ACCEPTED
                       and sum(1 for r in sink.requests if r.path == f"/{action}") >= KILL_AFTER_DELIVERED):
                await trio.sleep(0.01)
        await node.kill()
        nursery.cancel_scope.cancel()


async def kill_under_load_and_restart(client: httpx.AsyncClient, node: Node, sink) -> tuple[list[int], KeptState]:
    """SIGKILL `node` under load (`load_then_kill`, on action b), read what its store kept, start it again.

    Returns the events it had accepted and the store's state right after the kill."""
    accepted: list[int] = []
    await load_then_kill(client, node, sink, accepted, action="b")
    kept = await trio.to_thread.run_sync(kept_state, node.db)
    node.start()
    await node.wait_ready(client)
    return accepted, kept


async def wait_for_sentinel(sink, *actions: str) -> None:
    with trio.fail_after(120):
        while not all(any(r.path == f"/{a}" and r.text == f"n={SENTINEL}" for r in sink.requests) for a in actions):
            await trio.sleep(0.05)


async def test_standalone_sigkill_loses_no_accepted_event(tmp_path):
    async with open_http_sink(default=Reply(200, delay=0.03)) as sink, httpx.AsyncClient(timeout=10) as client:
        (tmp_path / "cfg.yaml").write_text(serialized_route(["a", "b"]) + numbered_actions(sink.url, ["a", "b"]))
        node = Node(tmp_path, ["--cfgfile=cfg.yaml"], free_port())
        node.start()
        try:
            await node.wait_ready(client)
            accepted, kept = await kill_under_load_and_restart(client, node, sink)
            assert (await client.post(f"{node.url}/", content=json.dumps({"n": SENTINEL}).encode())).status_code == 200
            await wait_for_sentinel(sink, "a", "b")
            assert await node.stop() == 0, node.log()
        finally:
            await node.stop()
    # a graceful stop leaves nothing unfinished (no replay, no second run, at the next start)
    assert (await trio.to_thread.run_sync(kept_state, node.db)).unfinished == frozenset()
    counts = {action: sink_counts(sink.requests, action) for action in ("a", "b")}
    check_runs(accepted, counts, kept)
    assert kept.unfinished, "the kill found no backlog: the test did not exercise the replay"
    assert "replaying unfinished events" in node.log_path(2).read_text()


async def test_runner_sigkill_loses_no_accepted_event_and_reports_each_once(tmp_path):
    """A runner killed under load: after its restart every accepted event ran the runner's actions (once
    when recorded) and the controller's action exactly once (each event reported upstream once)."""
    async with open_http_sink(default=Reply(200, delay=0.03)) as sink, httpx.AsyncClient(timeout=10) as client:
        cfg = serialized_route(["a", "b", "c"]) + numbered_actions(sink.url, ["a", "b"], runs_on="runner-1") \
            + numbered_actions(sink.url, ["c"])
        (tmp_path / "controller").mkdir()
        (tmp_path / "controller" / "cfg.yaml").write_text(cfg)
        bus = f"--controller-url=nats://127.0.0.1:{free_port()}"
        controller = Node(tmp_path / "controller", ["--cfgfile=cfg.yaml", "--controller-mode", bus], free_port(),
                          name="controller")
        runner = Node(tmp_path / "runner", [bus, "--runner-name=runner-1"], free_port(), name="runner")
        controller.start()
        try:
            await controller.wait_ready(client)
            runner.start()
            await runner.wait_ready(client)
            accepted, kept = await kill_under_load_and_restart(client, runner, sink)
            sentinel = json.dumps({"n": SENTINEL}).encode()
            assert (await client.post(f"{runner.url}/", content=sentinel)).status_code == 200
            await wait_for_sentinel(sink, "a", "b", "c")
            assert await runner.stop() == 0, runner.log()
            assert await controller.stop() == 0, controller.log()
        finally:
            await runner.stop() if runner.process else None
            await controller.stop()
    counts = {action: sink_counts(sink.requests, action) for action in ("a", "b")}
    check_runs(accepted, counts, kept)
    controller_runs = sink_counts(sink.requests, "c")
    assert sorted(n for n in accepted if controller_runs[n] != 1) == []
    assert kept.unfinished, "the kill found no backlog: the test did not exercise the replay"
