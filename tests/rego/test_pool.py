"""The worker pool: evaluations off the loop, cached compiles, crash and hang isolation (for real)."""

from __future__ import annotations

import importlib.util
import os
import signal
import time

import pytest
import trio

from postee.rego.engine import UNDEFINED, RegoCompileError, RegoEvalError
from postee.rego.pool import QuerySpec, open_rego_pool
from postee.rego.rules import wrap_inline

BACKEND = "regorus"
# Generous: includes spawning a worker process and importing the engine on a loaded CI machine.
SLOW_START_TIMEOUT = 60.0
HANG_TIMEOUT = 1.0

ALLOW_X = QuerySpec.build({"rule.rego": wrap_inline("input.x == 1")}, "data.postee.allow")


def _segfault() -> None:
    """Test-only worker function: dies the way a crashing native engine does."""
    os.kill(os.getpid(), signal.SIGSEGV)


def _abort() -> None:
    os.abort()


def _hang() -> None:
    """Test-only worker function: an evaluation that never ends (bounded so nothing leaks forever)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pass


def _pid() -> int:
    return os.getpid()


async def test_spec_key_depends_on_content_not_order():
    a = QuerySpec.build({"a.rego": "package a", "b.rego": "package b"}, "data.a")
    b = QuerySpec.build({"b.rego": "package b", "a.rego": "package a"}, "data.a")
    c = QuerySpec.build({"a.rego": "package a", "b.rego": "package b"}, "data.b")
    assert a.key == b.key and a == b
    assert a.key != c.key


def _available(name: str) -> bool:
    return (
        importlib.util.find_spec(name) is not None
        and importlib.util.find_spec(f"postee.rego.{name}_backend") is not None
    )


@pytest.mark.parametrize("isolation", ["thread", "process", "inline"])
@pytest.mark.parametrize(
    "backend",
    [
        pytest.param(name, marks=pytest.mark.skipif(not _available(name), reason=f"no {name} backend"))
        for name in ("regopy", "regorus")
    ],
)
async def test_evaluate(backend, isolation):
    async with open_rego_pool(backend, workers=2, timeout=SLOW_START_TIMEOUT, isolation=isolation) as pool:
        assert await pool.evaluate(ALLOW_X, '{"x": 1}') is True
        assert await pool.evaluate(ALLOW_X, '{"x": 2}') is False
        undefined = QuerySpec.build({"p.rego": "package p\n"}, "data.p.nothing")
        assert await pool.evaluate(undefined, "{}") is UNDEFINED
        broken = QuerySpec.build({"bad.rego": "package p\n\nallow {\n  input.x ==\n}\n"}, "data.p.allow")
        with pytest.raises(RegoCompileError) as info:
            await pool.evaluate(broken, "{}")
        assert info.value.file == "bad.rego" and info.value.line is not None
        assert pool.stats.evaluations == 4 and pool.stats.errors == 1


async def test_parallel_evaluations_in_processes():
    async with open_rego_pool(BACKEND, workers=2, timeout=SLOW_START_TIMEOUT) as pool:
        results = {}

        async def one(i):
            results[i] = await pool.evaluate(ALLOW_X, f'{{"x": {i % 2}}}')

        async with trio.open_nursery() as nursery:
            for i in range(8):
                nursery.start_soon(one, i)
        assert results == {i: i % 2 == 1 for i in range(8)}


@pytest.mark.parametrize("crash", [_segfault, _abort])
async def test_crashing_worker_fails_one_evaluation_only(crash):
    async with open_rego_pool(BACKEND, workers=1, timeout=SLOW_START_TIMEOUT) as pool:
        assert await pool.evaluate(ALLOW_X, '{"x": 1}') is True
        first_pid = await pool.run(_pid)
        with pytest.raises(RegoEvalError, match="crashed"):
            await pool.run(crash)
        assert pool.stats.crashes == 1
        # The worker was replaced; the next evaluation works (and recompiles in the new worker).
        assert await pool.evaluate(ALLOW_X, '{"x": 1}') is True
        assert await pool.run(_pid) != first_pid


async def test_hung_evaluation_times_out_and_worker_is_replaced():
    async with open_rego_pool(BACKEND, workers=1, timeout=SLOW_START_TIMEOUT) as pool:
        await pool.run(_pid)  # start the worker outside the short timeout
        pool.timeout = HANG_TIMEOUT
        with pytest.raises(RegoEvalError, match="timed out"):
            await pool.run(_hang)
        assert pool.stats.timeouts == 1
        pool.timeout = SLOW_START_TIMEOUT
        assert await pool.evaluate(ALLOW_X, '{"x": 1}') is True


async def test_unknown_backend_fails_at_open():
    with pytest.raises(ValueError, match="unknown Rego engine"):
        async with open_rego_pool("nope"):
            pass


@pytest.mark.parametrize("backend", ["regorus", "regopy"])
async def test_inline_evaluations_take_no_virtual_time(backend, autojump_clock):
    """Inline, nothing waits outside the event loop: under the autojump clock the evaluations finish
    before a virtual millisecond passes (a thread pool's wait would let the clock jump past it)."""
    if not _available(backend):
        pytest.skip(f"no {backend} backend")
    async with open_rego_pool(backend, isolation="inline") as pool:
        start = trio.current_time()
        with trio.fail_after(0.001):
            results = [await pool.evaluate(ALLOW_X, f'{{"x": {n % 2}}}') for n in range(20)]
        assert results == [n % 2 == 1 for n in range(20)] and trio.current_time() == start
    async with open_rego_pool(backend, isolation="thread", workers=1) as pool:
        with pytest.raises(trio.TooSlowError), trio.fail_after(0.001):
            for n in range(200):  # each waits for a thread: the clock jumps during one of them
                await pool.evaluate(ALLOW_X, f'{{"x": {n % 2}}}')


def _children() -> list[int]:
    """This process's worker processes (from /proc: its children started by multiprocessing's spawn;
    not the resource tracker, which ignores SIGTERM by design)."""
    me, children = os.getpid(), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == me:
                try:
                    with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                        if b"spawn_main" in cmdline.read():
                            children.append(int(entry))
                except OSError:
                    continue
    return children


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def test_workers_terminated_with_the_daemon_do_not_fail_its_stop():
    """SIGTERM to the whole process group (GNU `timeout`, systemd's `KillMode=control-group`) reaches
    the workers too: the pool's close raised `BrokenWorkerProcessError` and the daemon ended its
    orderly stop with a traceback."""
    async with open_rego_pool(BACKEND, workers=1, timeout=SLOW_START_TIMEOUT) as pool:
        assert await pool.evaluate(QuerySpec.build({"m.rego": "package m\nx := 1"}, "data.m.x"), "{}") == 1
        workers = await trio.to_thread.run_sync(_children)
        assert workers
        for pid in workers:
            os.kill(pid, signal.SIGTERM)
        with trio.fail_after(10):
            while any(_alive(pid) for pid in workers):  # terminated before the pool closes
                await trio.sleep(0.05)
    # closing the pool with its workers already gone raised nothing
