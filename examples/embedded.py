"""Postee embedded in a Trio application: a controller and two runners in one process.

Run it with `python examples/embedded.py`. It is the same pipeline the daemon runs (`postee.embed`),
with three parts swapped for in-process ones:

- the bus: `InMemoryBus` instead of NATS (each node gets its own client by name);
- the stores: SQLite in memory (a real file works too: leave `NodeParts.store` unset and give
  `NodeOptions.db_path`);
- the actions: a recorder, so the example needs no Slack or webhook to show what it would send.

Everything else is the daemon's: the controller cuts each runner's slice of the configuration and
serves it, runners bootstrap from it, route events, deduplicate, run their local actions and report
every event and execution upstream through their durable outbox.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import structlog
import trio

from actors.memory_transport import InMemoryBus
from postee.embed import (
    ControllerOptions,
    NodeOptions,
    NodeParts,
    RunnerOptions,
    lend,
    open_controller,
    open_runner,
    submit_event,
)
from postee.rego.library import TemplateLibrary
from postee.rego.pool import open_rego_pool
from postee.sim.parts import open_memory_store
from postee.sim.recording import Recordings, recording_factory

CONFIG = """
routes:
  - name: to-security-team          # runs on the controller: every event with a CVE
    input: contains(input.vuln, "CVE-")
    actions: [ticket]
    template: raw
  - name: kill-on-node              # runs where the event was seen, then the controller is told
    input: input.severity == "critical"
    actions: [kill-node-a, kill-node-b]
    template: raw
templates:
  - name: raw
    rego-package: postee.rawmessage.json
actions:
  - name: ticket
    type: webhook
    enable: true
    url: https://tickets.example.com/hook
  - name: kill-node-a
    type: exec
    enable: true
    runs-on: node-a
    exec-script: kill -9 "$POSTEE_EVENT_PID"
  - name: kill-node-b
    type: exec
    enable: true
    runs-on: node-b
    exec-script: kill -9 "$POSTEE_EVENT_PID"
"""


def options(directory: Path, name: str, cfgfile: str = "") -> NodeOptions:
    # No listeners (events come in process); a real deployment keeps the daemon's HTTP binds.
    return NodeOptions(cfgfile=cfgfile, http_bind="", https_bind=None, db_path=str(directory / f"{name}.db"))


async def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory(prefix="postee-embedded-") as name:
        await run_in(Path(name))


async def run_in(directory: Path) -> None:
    (directory / "cfg.yaml").write_text(CONFIG)
    bus, recordings = InMemoryBus(), Recordings()
    library = TemplateLibrary.load()

    async with open_rego_pool("regopy", isolation="thread", workers=1) as pool:
        def parts(name: str, store: object) -> NodeParts:
            return NodeParts(store=lend(store), rego=lend(pool), library=library, serve_http=False,
                             actions=recording_factory(name, recordings))

        stores = {name: await open_memory_store() for name in ("controller", "node-a", "node-b")}
        async with open_controller(ControllerOptions(options(directory, "controller", str(directory / "cfg.yaml"))),
                                   bus.connect("controller"), parts=parts("controller", stores["controller"])) as ctl, \
                open_runner(RunnerOptions("node-a", options(directory, "node-a")), bus.connect("node-a"),
                            parts=parts("node-a", stores["node-a"])) as node_a, \
                open_runner(RunnerOptions("node-b", options(directory, "node-b")), bus.connect("node-b"),
                            parts=parts("node-b", stores["node-b"])):
            await submit_event(node_a, json.dumps({"vuln": "CVE-2024-3094", "severity": "critical", "pid": 4242}))
            await submit_event(ctl, json.dumps({"vuln": "CVE-2021-44228", "severity": "high"}))
            with trio.fail_after(30):  # the runner's action, then both events through the controller's route
                while len(recordings.calls) < 3 or ctl.registry.runners.get("node-a", None) is None:
                    await trio.sleep(0.05)
        for store in stores.values():
            await store.aclose()

    for call in recordings.calls:
        print(f"{call.node:>10} ran {call.action:<12} for route {call.route:<16} ({call.result})")


if __name__ == "__main__":
    trio.run(main)
