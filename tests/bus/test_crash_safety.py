"""The embedded nats-server never outlives its controller, and a restarted controller copes with one that did.

* The child dies with its parent (Linux parent-death signal), even when the controller is SIGKILLed.
* A leftover server named by the pid file beside the store (from a previous life) is stopped on start;
  anything else the pid file might name (a reused pid) is left alone, and so is the server of another
  controller that is still running with the same store.
* End to end, with real `postee` processes: a runner receives events at a steady rate while its
  controller is SIGKILLed and restarted on the same ports and store; every event runs the runner
  action exactly once and the controller action exactly once (at least once for an action under way
  at the instant of the SIGKILL: its outcome could not be recorded), and no nats-server is left.
"""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from postee.bus.server import NatsServer, NatsServerConfigError, NatsServerOptions, find_nats_server
from postee.bus.server_pidfile import claim_pid_file
from tests.bus.link_helpers import free_port
from tests.daemon.helpers import wait_until_ready
from tests.helpers.http_sink import open_http_sink
from tests.roles.test_memory_bus import tracee

#: Events posted to the runner, one every `POST_INTERVAL` seconds; the controller is killed after `KILL_AFTER`.
EVENTS = 200
POST_INTERVAL = 0.025
KILL_AFTER = 50
RESTART_AFTER = 80
#: An action whose request reached the sink this shortly before the SIGKILL may have been under way.
IN_FLIGHT_WINDOW = 0.5
NUMBER = re.compile(rb"n=(\d+)")

CRASH_CFG = """
routes:
  - name: mixed
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
    runs-on: postee-runner-1
    url: "{runner_sink}/runner"
    method: POST
    body-content: |
      n=event.input.n
  - name: on-controller
    type: http
    enable: true
    url: "{controller_sink}/controller"
    method: POST
    body-content: |
      n=event.input.n
"""


def nats_servers_under(directory: Path) -> list[int]:
    """Pids of the nats-server processes (not zombies) whose command line names `directory`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_bytes().rsplit(b")", 1)[-1].split()[0]
        except (OSError, IndexError):
            continue
        if state != b"Z" and argv and os.path.basename(argv[0]) == b"nats-server" \
                and any(os.fsencode(directory) in arg for arg in argv):
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def nats_servers_of(parent: int) -> list[int]:
    """Pids of the live nats-server children of `parent`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_bytes().rsplit(b")", 1)[-1].split()
            argv0 = (entry / "cmdline").read_bytes().split(b"\0")[0]
        except (OSError, IndexError):
            continue
        if entry.name.isdigit() and fields[0] != b"Z" and int(fields[1]) == parent \
                and os.path.basename(argv0) == b"nats-server":
            found.append(int(entry.name))
    return found


def kill_servers_under(directory: Path) -> None:
    """Cleanup after a failed test: no server of this test may outlive it."""
    for pid in nats_servers_under(directory):
        os.kill(pid, signal.SIGKILL)


async def wait_for(predicate, timeout: float, interval: float = 0.05) -> bool:
    """Poll `predicate` until true (True) or `timeout` passes (False): the caller asserts."""
    deadline = trio.current_time() + timeout
    while not predicate():
        if trio.current_time() > deadline:
            return False
        await trio.sleep(interval)
    return True


# -- the pid file, directly ---------------------------------------------------------------------------
def _leftover_server(work_dir: Path, port: int) -> tuple[subprocess.Popen, Path]:
    """A nats-server as an earlier controller left it: its run directory under `work_dir`, not ours to reap."""
    run_dir = work_dir / "postee-nats-old"
    (run_dir / "ports").mkdir(parents=True)
    config = run_dir / "nats-server.conf"
    config.write_text(f'host: "127.0.0.1"\nport: {port}\n')
    process = subprocess.Popen([os.fspath(find_nats_server()), "--config", os.fspath(config), "--ports_file_dir",
                                os.fspath(run_dir / "ports")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return process, config


async def _wait_listening(port: int) -> None:
    with trio.fail_after(10):
        while True:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.02)
                continue
            await stream.aclose()
            return


async def test_pid_file_leftover_server_is_stopped_and_its_port_reused(tmp_path):
    work_dir = tmp_path / "state"
    pid_file = work_dir / "nats-server.pid"
    port = free_port()
    leftover, config = _leftover_server(work_dir, port)
    try:
        await _wait_listening(port)
        claim = claim_pid_file(pid_file, "nats-server", grace=1.0, work_dir=work_dir)
        claim.record(leftover.pid, config)  # ... and then its controller died without a word
        claim.release()
        options = NatsServerOptions(url=f"nats://127.0.0.1:{port}", work_dir=work_dir, pid_file=pid_file)
        server = NatsServer(options)
        async with trio.open_nursery() as nursery:
            with trio.fail_after(30):
                url = await nursery.start(server.run)
            assert url == f"nats://127.0.0.1:{port}"
            assert leftover.poll() is not None  # stopped (nats-server exits 0 on SIGTERM), not by us
            assert not config.parent.exists()  # its run directory is gone too
            assert json.loads(pid_file.read_text())["pid"] == server.pid
            nursery.cancel_scope.cancel()
        assert pid_file.read_text() == ""  # a clean stop leaves nothing to stop next time
    finally:
        leftover.kill()
        leftover.wait()


async def test_pid_file_naming_another_process_leaves_it_alone(tmp_path):
    work_dir = tmp_path / "state"
    pid_file = work_dir / "nats-server.pid"
    bystander = await trio.to_thread.run_sync(subprocess.Popen, [sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        claim = claim_pid_file(pid_file, "nats-server", grace=1.0, work_dir=work_dir)
        claim.record(bystander.pid, work_dir / "postee-nats-x" / "nats-server.conf")  # a reused pid
        claim.release()
        options = NatsServerOptions(url="nats://127.0.0.1:0", work_dir=work_dir, pid_file=pid_file)
        async with trio.open_nursery() as nursery:
            with trio.fail_after(30):
                await nursery.start(NatsServer(options).run)
            nursery.cancel_scope.cancel()
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


async def test_a_second_controller_on_the_same_store_does_not_touch_the_first_ones_server(tmp_path):
    work_dir = tmp_path / "state"
    options = NatsServerOptions(url="nats://127.0.0.1:0", work_dir=work_dir, pid_file=work_dir / "nats-server.pid")
    first = NatsServer(options)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(30):
            await nursery.start(first.run)
        with trio.fail_after(30), pytest.raises(NatsServerConfigError, match="another running controller"):
            await NatsServer(options).run()
        assert nats_servers_under(tmp_path) == [first.pid]
        nursery.cancel_scope.cancel()
    assert nats_servers_under(tmp_path) == []


async def test_server_dies_with_its_parent_even_after_the_spawning_thread_idled(tmp_path):
    """The parent-death signal is tied to the forking *thread*: the server must survive that thread's
    idleness (Trio's worker threads exit after 10 s idle) and die only with the process."""
    script = f"""
import sys, trio
sys.path.insert(0, {os.getcwd()!r})
from postee.bus.server import NatsServerOptions, open_nats_server

async def main():
    async with open_nats_server(NatsServerOptions(url="nats://127.0.0.1:0", work_dir={str(tmp_path / 'w')!r})) as s:
        print("PID", s.pid, flush=True)
        await trio.sleep(60)

trio.run(main)
"""
    holder = await trio.to_thread.run_sync(partial(subprocess.Popen, [sys.executable, "-c", script],
                                                   stdout=subprocess.PIPE, text=True))
    try:
        pid = 0
        with trio.fail_after(30):
            for _ in range(100):  # its log lines, then ours
                line = await trio.to_thread.run_sync(holder.stdout.readline)
                if line.startswith("PID "):
                    pid = int(line.split()[1])
                    break
        await trio.sleep(11.5)  # past Trio's idle-thread timeout
        assert nats_servers_under(tmp_path) == [pid]
        holder.kill()
        holder.wait()
        assert await wait_for(lambda: nats_servers_under(tmp_path) == [], timeout=5)
    finally:
        holder.kill()
        holder.wait()
        kill_servers_under(tmp_path)


# -- end to end: SIGKILL the controller under load ----------------------------------------------------
class Postee:
    """A `python -m postee` process with its output in files (read when something goes wrong)."""

    def __init__(self, tmp_path: Path, name: str, args: list[str], db: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTEE_", "AQUAALERT_"))}
        env["PATH_TO_DB"] = os.fspath(db)
        self.log = tmp_path / f"{name}.log"
        with self.log.open("ab") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "postee", *args], env=env, stdout=out,
                                            stderr=subprocess.STDOUT)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    async def ready(self, client: httpx.AsyncClient, url: str) -> None:
        await wait_until_ready(self.process, client, url, timeout=90, log=self.tail)

    async def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        with trio.fail_after(60):
            while self.process.poll() is None:
                await trio.sleep(0.05)
        return self.process.returncode


def _outbox_count(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        return conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]


def _numbers(sink) -> collections.Counter[int]:
    return collections.Counter(int(NUMBER.search(r.body).group(1)) for r in sink.requests)


def _missing(sink) -> str:
    seen = _numbers(sink)
    return f"{len(seen)} events ({sum(seen.values())} runs); missing {sorted(set(range(EVENTS)) - set(seen))}"


async def test_sigkilled_controller_restarts_on_its_ports_and_every_event_runs_once(tmp_path):
    nats_port, controller_port, runner_port = free_port(), free_port(), free_port()
    controller_db, runner_db = tmp_path / "controller" / "webhooks.db", tmp_path / "runner" / "webhooks.db"
    controller_url, runner_url = f"http://127.0.0.1:{controller_port}", f"http://127.0.0.1:{runner_port}"
    async with open_http_sink() as controller_sink, open_http_sink() as runner_sink, \
            httpx.AsyncClient(timeout=10) as client:
        cfg = tmp_path / "cfg.yaml"
        cfg.write_text(CRASH_CFG.format(runner_sink=runner_sink.url, controller_sink=controller_sink.url))
        controller_args = [f"--cfgfile={cfg}", "--controller-mode", f"--controller-url=nats://127.0.0.1:{nats_port}",
                           f"--url=127.0.0.1:{controller_port}", "--tls=off"]
        runner_args = [f"--controller-url=nats://127.0.0.1:{nats_port}", "--runner-name=postee-runner-1",
                       f"--url=127.0.0.1:{runner_port}", "--tls=off"]
        controller = Postee(tmp_path, "controller-1", controller_args, controller_db)
        runner: Postee | None = None
        posted = 0
        killed_at = restarted_at = 0.0
        embedded: list[int] = []

        async def post_steadily() -> None:
            nonlocal posted
            for n in range(EVENTS):
                response = await client.post(f"{runner_url}/", content=tracee("TRC-2", n))
                assert response.status_code == 200
                posted = n + 1
                await trio.sleep(POST_INTERVAL)

        try:
            await controller.ready(client, controller_url)
            runner = Postee(tmp_path, "runner", runner_args, runner_db)
            await runner.ready(client, runner_url)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(post_steadily)
                assert await wait_for(lambda: posted >= KILL_AFTER, timeout=30)
                embedded = nats_servers_of(controller.process.pid)
                assert len(embedded) == 1
                killed_at = time.monotonic()
                controller.process.kill()  # SIGKILL: no cleanup at all
                controller.process.wait()
                assert await wait_for(lambda: not _alive(embedded[0]), timeout=5), \
                    "the nats-server outlived its SIGKILLed controller"
                assert await wait_for(lambda: posted >= RESTART_AFTER, timeout=30)
                restarted_at = time.monotonic()
                controller = Postee(tmp_path, "controller-2", controller_args, controller_db)
                await controller.ready(client, controller_url)
                # its server runs from the directory beside the store (what the last check looks for)
                assert nats_servers_under(tmp_path) == nats_servers_of(controller.process.pid) != []
            assert await wait_for(lambda: len(runner_sink.requests) >= EVENTS
                                  and len(controller_sink.requests) >= EVENTS, timeout=60), (
                f"runner action ran for {_missing(runner_sink)}, controller action for {_missing(controller_sink)}")
            assert await wait_for(lambda: _outbox_count(runner_db) == 0, timeout=60)
            assert await runner.stop() == 0, runner.tail()
            assert await controller.stop() == 0, controller.tail()
        finally:
            for node in (controller, runner):
                if node is not None and node.process.poll() is None:
                    node.process.kill()
                    node.process.wait()
            leftovers = nats_servers_under(tmp_path) + [pid for pid in embedded if _alive(pid)]
            kill_servers_under(tmp_path)
            for pid in embedded:  # the server of the killed controller, wherever its config was
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)
        assert leftovers == []
        assert _numbers(runner_sink) == collections.Counter(range(EVENTS))
        # Exactly once, except for an action that was under way at the very moment of the SIGKILL:
        # its outcome could not be recorded, so the restarted controller runs it again (at least once).
        controller_runs = _numbers(controller_sink)
        assert set(controller_runs) == set(range(EVENTS))
        # (the sink may handle a request of the dying controller a little after the kill: the bound
        # is the restart)
        in_flight = {int(NUMBER.search(r.body).group(1)) for r in controller_sink.requests
                     if killed_at - IN_FLIGHT_WINDOW <= r.received_at < restarted_at}
        repeated = {n: count for n, count in controller_runs.items() if count != 1}
        assert all(n in in_flight and count == 2 for n, count in repeated.items()), (repeated, in_flight)
