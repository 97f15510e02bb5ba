"""Real `postee` processes to kill: spawn, SIGKILL, restart on the same store, and read what it kept.

Each process runs in its own session (process group), so a SIGKILL of the group takes the node and
its Rego worker processes down together, as the OOM killer would, and nothing is left behind. Logs
go to a file, never to a pipe nobody reads (a full pipe would stall the node).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import attrs
import httpx
import trio

from tests.daemon.helpers import wait_until_ready

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def numbered_actions(sink_url: str, names: list[str], *, runs_on: str = "") -> str:
    """`http` actions posting `n=<the event's n>` to `<sink>/<name>`."""
    lines = []
    for name in names:
        lines += [f"  - name: {name}", "    type: http", "    enable: true", f"    url: {sink_url}/{name}",
                  "    method: POST", '    body-content: "n=event.input.n"']
        if runs_on:
            lines.append(f"    runs-on: {runs_on}")
    return "\n".join(lines) + "\n"


def serialized_route(actions: list[str]) -> str:
    return f"""
routes:
  - name: r
    serialize-actions: true
    actions: [{", ".join(actions)}]
    template: raw
templates:
  - name: raw
    rego-package: postee.rawmessage.json
actions:
"""


@attrs.define
class Node:
    """One `postee` process (re)startable on the same store and ports."""

    workdir: Path
    args: list[str]
    port: int
    name: str = "node"
    process: subprocess.Popen | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db(self) -> Path:
        return self.workdir / "db" / "webhooks.db"

    def log_path(self, start: int | None = None) -> Path:
        return self.workdir / f"{self.name}-{self.starts if start is None else start}.log"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTEE_", "AQUAALERT_"))}
        env["PATH_TO_DB"] = str(self.db)
        with open(self.log_path(), "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "postee", f"--url=127.0.0.1:{self.port}", "--tls=off", "--rego-workers=1",
                 "--rego-engine=regorus", *self.args],
                env=env, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def log(self) -> str:
        return "\n".join(self.log_path(i).read_text(errors="replace")[-3000:] for i in range(1, self.starts + 1))

    async def wait_ready(self, client: httpx.AsyncClient) -> None:
        assert self.process is not None
        await wait_until_ready(self.process, client, self.url, timeout=READY_TIMEOUT,
                               log=lambda: f"{self.name}:\n{self.log()}")

    async def kill(self) -> None:
        """SIGKILL the node's whole process group (the node and its workers) and reap the node."""
        assert self.process is not None
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        await trio.to_thread.run_sync(self.process.wait, STOP_TIMEOUT)

    async def stop(self) -> int:
        """SIGTERM, wait for a clean exit (SIGKILL of the group if it does not come); the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await trio.to_thread.run_sync(self.process.wait, STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                await self.kill()
        try:  # anything of its group still alive (a stray worker) goes too
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return self.process.returncode


async def steady_sender(client: httpx.AsyncClient, url: str, *, rate: float, accepted: list[int],
                        first: int = 0, workers: int = 2, limit: int = 1000) -> None:
    """POST `{"n": i}` for i = first, first+1, ... at `rate` per second over `workers` connections, until
    cancelled or `limit` events; every i answered 200 goes into `accepted`. A refused or failed request is
    not retried (the node may be dead): only 200s are promises."""
    next_n = first
    start = trio.current_time()

    async def worker() -> None:
        nonlocal next_n
        while next_n < first + limit:
            n = next_n
            next_n += 1
            await trio.sleep_until(start + (n - first) / rate)
            try:
                response = await client.post(url, content=json.dumps({"n": n}).encode())
            except httpx.TransportError:
                continue
            if response.status_code == 200:
                accepted.append(n)

    async with trio.open_nursery() as nursery:
        for _ in range(workers):
            nursery.start_soon(worker)


def sink_counts(requests: list, action: str) -> Counter[int]:
    """How many times the sink got `n=<i>` on `/<action>`, by i."""
    return Counter(int(r.text.split("=", 1)[1]) for r in requests if r.path == f"/{action}")


@attrs.frozen
class KeptState:
    """What a killed node's store holds: its unfinished events (by `n`) and their recorded outcomes."""

    unfinished: frozenset[int]
    recorded: dict[int, frozenset[str]]
    """n -> the actions whose outcome was recorded before the kill."""


def kept_state(db: Path) -> KeptState:
    """Read the store of a dead node (no intake table, as before durable intake: nothing kept)."""
    conn = sqlite3.connect(db)
    try:
        try:
            rows = conn.execute("SELECT event_id, body FROM intake").fetchall()
            outcomes = conn.execute("SELECT event_id, action FROM outcomes").fetchall()
        except sqlite3.OperationalError:
            return KeptState(frozenset(), {})
    finally:
        conn.close()
    by_id = {event_id: json.loads(body)["n"] for event_id, body in rows}
    recorded: dict[int, set[str]] = {}
    for event_id, action in outcomes:
        if event_id in by_id:
            recorded.setdefault(by_id[event_id], set()).add(action)
    return KeptState(frozenset(by_id.values()), {n: frozenset(a) for n, a in recorded.items()})


def check_runs(accepted: list[int], counts: dict[str, Counter[int]], kept: KeptState) -> None:
    """Every accepted event ran each action at least once; exactly once when the event had finished
    before the kill, or when that action's outcome had been recorded."""
    for action, counted in counts.items():
        lost = sorted(n for n in accepted if counted[n] == 0)
        assert not lost, f"accepted (200) but action {action} never ran: {lost}"
        twice = sorted(n for n in accepted if counted[n] > 1
                       and (n not in kept.unfinished or action in kept.recorded.get(n, ())))
        assert not twice, f"action {action} ran again although its outcome was recorded: {twice}"
