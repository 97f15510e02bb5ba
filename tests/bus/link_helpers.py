"""In-process controller and runner nodes over a real nats-server, for the bus tests of one link option."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import httpx
import trio

from postee.roles.controller import Controller
from postee.roles.launch import LinkOptions, run_controller, run_runner
from postee.roles.runner import Runner
from tests.roles.helpers import FAST_BACKOFF, node_options

#: One route mixing a runner action and a controller action (the controller's points nowhere).
MIXED_CFG = """
routes:
  - name: terminate-and-notify
    input: contains(input.SigMetadata.ID, "TRC-2")
    actions: [terminate-pod, notify]
    template: raw-json
templates:
  - name: raw-json
    rego-package: postee.rawmessage.json
actions:
  - name: terminate-pod
    type: exec
    enable: true
    runs-on: test-runner-1
    exec-script: |
      #!/bin/sh
      echo "terminating"
  - name: notify
    type: webhook
    enable: true
    url: http://127.0.0.1:9/
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@asynccontextmanager
async def controller_node(tmp_path: Path, link: LinkOptions, cfg_text: str = MIXED_CFG
                          ) -> AsyncIterator[tuple[Controller, httpx.AsyncClient]]:
    cfg = tmp_path / "controller.yaml"
    cfg.write_text(cfg_text)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(60):
            controller = await nursery.start(run_controller, node_options(tmp_path, "controller", str(cfg)), link)
        async with httpx.AsyncClient(base_url=controller.node.urls[0], timeout=10) as client:
            try:
                yield controller, client
            finally:
                controller.request_stop()
                with trio.fail_after(30):
                    await controller.node.stopped.wait()


@asynccontextmanager
async def runner_node(tmp_path: Path, link: LinkOptions, name: str = "test-runner-1"
                      ) -> AsyncIterator[tuple[Runner, httpx.AsyncClient]]:
    async with trio.open_nursery() as nursery:
        with trio.fail_after(120):
            runner = await nursery.start(partial(run_runner, node_options(tmp_path, name), link, name,
                                                 backoff=FAST_BACKOFF))
        async with httpx.AsyncClient(base_url=runner.node.urls[0], timeout=10) as client:
            try:
                yield runner, client
            finally:
                runner.request_stop()
                with trio.fail_after(30):
                    await runner.node.stopped.wait()
