"""`dispatch-to-runners: true`: an event that reaches the controller runs the route's `runs-on` actions on
their runners (issue #16). Real `postee` processes, the controller's embedded nats-server.

- with the runner up, each event runs the runner's action once, and the controller's own once;
- with the runner down, the work waits in the controller's store, and runs once the runner is back;
- past `runner-dispatch-ttl` it is recorded expired (`/executions`, `postee_dispatch_expired_total`) and
  never runs, even when the runner comes back.
"""

from __future__ import annotations

import collections
import json
import re
import sqlite3
from pathlib import Path

import httpx
import trio

from tests.bus.test_crash_safety import wait_for
from tests.bus.test_cross_side_order import RUNNER, Deployment
from tests.helpers.http_sink import open_http_sink
from tests.roles.test_memory_bus import tracee

NUMBER = re.compile(rb"n=(\d+)")

CONFIG = """
dispatch-to-runners: true
{ttl}
routes:
  - name: dispatched
    input: contains(input.SigMetadata.ID, "TRC-2")
    actions: [on-runner, on-controller]
    template: raw-json
templates:
  - name: raw-json
    rego-package: postee.rawmessage.json
actions:
  - name: on-runner
    type: http
    enable: true
    runs-on: {runner}
    url: "{sink}/runner"
    body-content: "n=event.input.n"
  - name: on-controller
    type: http
    enable: true
    url: "{sink}/controller"
    body-content: "n=event.input.n"
"""


def counts(sink, path: str) -> collections.Counter[int]:
    return collections.Counter(int(NUMBER.search(r.body).group(1)) for r in sink.requests if r.path == path)


def write_config(tmp_path: Path, sink, ttl: str = "") -> Path:
    config = tmp_path / "cfg.yaml"
    config.write_text(CONFIG.format(runner=RUNNER, sink=sink.url, ttl=f"runner-dispatch-ttl: {ttl}" if ttl else ""))
    return config


async def post(client: httpx.AsyncClient, url: str, events: range) -> None:
    for n in events:
        response = await client.post(f"{url}/", content=tracee("TRC-2", n))
        assert response.status_code == 200


def api_key(db: Path) -> str:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        return conn.execute("SELECT value FROM kv WHERE key = 'api_key'").fetchone()[0]


async def test_an_event_at_the_controller_runs_the_runners_action_once_also_after_the_runner_was_down(tmp_path):
    async with open_http_sink() as sink, httpx.AsyncClient(timeout=10) as client:
        deployment = Deployment(tmp_path, write_config(tmp_path, sink))
        try:
            await deployment.start_controller(client)
            await deployment.start_runner(client)
            await post(client, deployment.controller_url, range(5))
            assert await wait_for(lambda: len(counts(sink, "/runner")) == 5, timeout=30), deployment.logs()
            assert deployment.runner is not None and await deployment.runner.stop() == 0
            # the runner is down: the controller runs its own action and keeps the runner's
            await post(client, deployment.controller_url, range(5, 8))
            assert await wait_for(lambda: len(counts(sink, "/controller")) == 8, timeout=30), deployment.logs()
            assert len(counts(sink, "/runner")) == 5
            await deployment.start_runner(client)
            assert await wait_for(lambda: len(counts(sink, "/runner")) == 8, timeout=30), deployment.logs()
            for node in (deployment.runner, deployment.controller):  # a stop drains: nothing runs after it
                assert node is not None and await node.stop() == 0, deployment.logs()
            assert counts(sink, "/runner") == collections.Counter(range(8))
            assert counts(sink, "/controller") == collections.Counter(range(8))
        finally:
            deployment.kill_all()


async def test_work_for_a_runner_down_past_the_ttl_is_recorded_expired_and_never_runs(tmp_path):
    async with open_http_sink() as sink, httpx.AsyncClient(timeout=10) as client:
        deployment = Deployment(tmp_path, write_config(tmp_path, sink, ttl="2s"))
        try:
            await deployment.start_controller(client)
            await post(client, deployment.controller_url, range(2))
            key = api_key(deployment.controller_db)

            async def expired() -> list[dict]:
                answer = await client.get(f"{deployment.controller_url}/executions",
                                          headers={"Authorization": f"Bearer {key}"})
                assert answer.status_code == 200
                return [e for e in json.loads(answer.text) if "expired" in (e.get("error") or "")]

            found: list[dict] = []
            with trio.fail_after(30):
                while len(found) < 2:
                    found = await expired()
                    await trio.sleep(0.2)
            assert {(e["node"], e["route"], e["action"]) for e in found} == {(RUNNER, "dispatched", "on-runner")}
            metrics = (await client.get(f"{deployment.controller_url}/metrics")).text
            assert f'postee_dispatch_expired_total{{route="dispatched",runner="{RUNNER}"}} 2.0' in metrics
            await deployment.start_runner(client)
            # a step dispatched now reaches the runner behind where the expired ones were: they are gone
            await post(client, deployment.controller_url, range(2, 3))
            assert await wait_for(lambda: len(counts(sink, "/runner")) >= 1, timeout=30), deployment.logs()
            for node in (deployment.runner, deployment.controller):  # a stop drains: nothing runs after it
                assert node is not None and await node.stop() == 0, deployment.logs()
            assert counts(sink, "/runner") == collections.Counter([2])
            assert counts(sink, "/controller") == collections.Counter(range(3))
        finally:
            deployment.kill_all()
