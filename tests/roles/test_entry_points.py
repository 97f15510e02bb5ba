"""Every public entry point raises one exception, never an exception group, for a single failure.

Trio wraps whatever leaves a nursery in an exception group; a caller (the CLI, an embedding app, a
test) should see the one error that happened, with no group left in its `__context__` either.
The single failure used here is real: an HTTP port already taken by another socket, a NATS URL
nobody listens on, a seed file that does not exist.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import attrs
import pytest
import trio

from actors import TransportAuthError, TransportUnavailable
from actors.testing import InMemoryBus
from postee.roles.controller import Controller, ControllerOptions
from postee.roles.launch import LinkOptions, run_controller, run_runner
from postee.roles.node import Node, NodeOptions
from postee.roles.runner import Runner, RunnerOptions
from postee.roles.upstream import RunnerFatal
from tests.roles.helpers import FAST_BACKOFF, STDOUT_CONFIG, node_options, running_controller


@contextmanager
def taken_port() -> Iterator[int]:
    """A loopback port another socket is listening on, so binding it fails."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port nobody listens on (bound without listen: connections are refused)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield holder.getsockname()[1]


def bound(options: NodeOptions, port: int) -> NodeOptions:
    return attrs.evolve(options, http_bind=f"127.0.0.1:{port}")


def assert_single(exc: BaseException) -> None:
    assert not isinstance(exc, BaseExceptionGroup), exc
    assert not isinstance(exc.__context__, BaseExceptionGroup), exc.__context__


async def raised_by(fn) -> BaseException:
    with trio.fail_after(60):
        try:
            await fn()
        except BaseException as exc:  # what the entry point let out, whatever it is
            return exc
    raise AssertionError("the entry point returned without failing")


def write_config(tmp_path) -> str:
    path = tmp_path / "cfg.yaml"
    path.write_text(STDOUT_CONFIG)
    return str(path)


async def test_node_run_raises_the_bind_error_alone(tmp_path):
    with taken_port() as port:
        node = Node(bound(node_options(tmp_path, "node", write_config(tmp_path)), port))
        exc = await raised_by(node.run)
    assert_single(exc)
    assert isinstance(exc, OSError)
    assert node.stopped.is_set()


async def test_controller_run_raises_the_bind_error_alone(tmp_path):
    bus = InMemoryBus()
    with taken_port() as port:
        options = bound(node_options(tmp_path, "controller", write_config(tmp_path)), port)
        controller = Controller(ControllerOptions(options), bus.connect("controller"))
        exc = await raised_by(controller.run)
    assert_single(exc)
    assert isinstance(exc, OSError)


async def test_controller_run_raises_a_dead_bus_at_once_not_after_restarts(tmp_path):
    bus = InMemoryBus()
    transport = bus.connect("controller")
    bus.disconnect("controller")
    controller = Controller(ControllerOptions(node_options(tmp_path, "controller", write_config(tmp_path))), transport)
    exc = await raised_by(controller.run)
    assert_single(exc)
    assert isinstance(exc, TransportUnavailable)
    assert controller.bus is not None and controller.bus.restart_count == 0


async def test_runner_run_raises_the_bind_error_alone(tmp_path):
    bus = InMemoryBus()
    async with running_controller(tmp_path, STDOUT_CONFIG, bus.connect("controller")):
        with taken_port() as port:
            options = bound(node_options(tmp_path, "runner"), port)
            runner = Runner(RunnerOptions("runner-1", options, backoff=FAST_BACKOFF), bus.connect("runner-1"))
            exc = await raised_by(runner.run)
    assert_single(exc)
    assert isinstance(exc, OSError)


async def test_run_controller_raises_the_refused_credentials_alone(tmp_path):
    options = node_options(tmp_path, "controller", write_config(tmp_path))
    with closed_port() as port:
        link = LinkOptions(nats_url=f"nats://127.0.0.1:{port}", seed_file=str(tmp_path / "no-such.seed"))
        exc = await raised_by(lambda: run_controller(options, link))
    assert_single(exc)
    assert isinstance(exc, TransportAuthError)


async def test_run_runner_raises_its_fatal_error_alone(tmp_path):
    options = node_options(tmp_path, "runner")
    with closed_port() as port:
        link = LinkOptions(url=f"nats://127.0.0.1:{port}", seed_file=str(tmp_path / "no-such.seed"))
        exc = await raised_by(lambda: run_runner(options, link, "runner-1", backoff=FAST_BACKOFF))
    assert_single(exc)
    assert isinstance(exc, RunnerFatal)


@pytest.mark.parametrize("role", ["standalone", "controller"])
def test_the_cli_reports_one_error_line_not_a_group(tmp_path, role):
    with taken_port() as port, closed_port() as nats_port:
        args = [sys.executable, "-m", "postee", "--cfgfile", write_config(tmp_path), "--url", f"127.0.0.1:{port}",
                "--tls", "off"]
        if role == "controller":
            args += ["--controller-mode", "--nats-url", f"nats://127.0.0.1:{nats_port}",
                     "--controller-seed-file", str(tmp_path / "no-such.seed")]
        env = {"PATH": os.environ.get("PATH", ""), "PATH_TO_DB": str(tmp_path / "db.sqlite")}
        result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "ExceptionGroup" not in result.stderr, result.stderr
    assert "postee: " in result.stderr
