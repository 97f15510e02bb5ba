"""The embedding API's runnable example keeps working (it is the README's), and the API's parts are the
daemon's own: a standalone node embedded with a real store file and the daemon's listeners."""

import json
import subprocess
import sys
from pathlib import Path

import httpx
import trio

from postee.embed import NodeOptions, NodeParts, open_standalone, submit_event
from postee.sim.recording import Recordings, recording_factory
from tests.daemon.helpers import webhook_route

ROOT = Path(__file__).resolve().parents[2]


def test_the_embedded_example_runs_a_controller_and_two_runners_in_one_process():
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "embedded.py")], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert "    node-a ran kill-node-a  for route kill-on-node     (ok)" in lines
    assert sum("controller ran ticket" in line for line in lines) == 2  # both events reached the controller




async def test_a_standalone_node_embedded_with_the_daemons_store_and_listeners(tmp_path):
    """Only the actions are replaced: the store is a SQLite file, Rego runs in threads, HTTP listens."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(webhook_route("https://hooks.example.com/x", route="all"))
    recordings = Recordings()
    options = NodeOptions(cfgfile=str(cfg), http_bind="127.0.0.1:0", https_bind=None, db_path=str(tmp_path / "db"),
                          rego_isolation="thread", rego_workers=1, environ={})
    async with open_standalone(options, parts=NodeParts(actions=recording_factory("node", recordings))) as node:
        assert await submit_event(node, json.dumps({"image": "in-process"})) is not None
        async with httpx.AsyncClient(base_url=node.urls[0]) as client:
            assert (await client.post("/", content=json.dumps({"image": "over-http"}))).status_code == 200
        with trio.fail_after(10):
            while len(recordings.calls) < 2:
                await trio.sleep(0.02)
        recent = json.loads(node.recent_events_json())
    assert (tmp_path / "db").exists()  # the daemon's store, a file
    assert {c.event_id for c in recordings.calls} == {e["id"] for e in recent} and len(recent) == 2
    assert sorted(e["event"]["image"] for e in recent) == ["in-process", "over-http"]
