"""Deterministic parts for running nodes on Trio's virtual clock (`NodeParts` for simulation and tests).

- the store: SQLite in memory, run on the event loop (`open_store(":memory:", in_loop=True)`), opened
  once per node by the deployment and lent to each incarnation of the node, so a node that is
  cancelled (a simulated crash) and started again finds what it had committed, as after a SIGKILL;
- Rego: one inline pool (evaluations on the event loop, no thread, no process), shared by every
  node: equal templates and rules compile once for the whole deployment;
- the template library, loaded once;
- actions: recorders (`postee.sim.recording`);
- the runtime: blocking work inline, the wall clock derived from virtual time, ids from a counter;
- no HTTP listeners: events are handed in process.

Nothing here runs outside the event loop, so under `trio.testing.MockClock(autojump_threshold=0)`
timeouts, backoffs, heartbeats and expiries happen instantly and always in the same order.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from postee.rego.library import TemplateLibrary
from postee.rego.pool import RegoPool, open_rego_pool
from postee.roles.parts import NodeParts, Observer, lend
from postee.runtime import Runtime
from postee.sim.recording import Plan, Recordings, always_ok, recording_factory
from postee.store.sqlite import SqliteStore

__all__ = [
    "SIM_EPOCH",
    "lend",
    "open_memory_store",
    "open_sim_pool",
    "preferred_engine",
    "sim_parts",
    "sim_runtime",
]

SIM_EPOCH = 1_800_000_000.0
"""The wall-clock time (epoch seconds, January 2027) at virtual time 0: fixed, so records repeat."""


def preferred_engine() -> str:
    """regorus when installed (an evaluation costs microseconds), else regopy."""
    try:
        import regorus  # noqa: F401
    except ImportError:
        return "regopy"
    return "regorus"


def sim_runtime(*, epoch: float = SIM_EPOCH, id_prefix: str = "") -> Runtime:
    """Blocking work inline, wall clock = `epoch` + virtual time, ids from a counter (32 hex digits)."""
    counter = itertools.count(1)

    def new_id() -> str:
        return f"{id_prefix}{next(counter):x}".rjust(32, "0")[-32:]

    return Runtime.inline(wall_clock=lambda: epoch + trio.current_time(), new_id=new_id)


async def open_memory_store() -> SqliteStore:
    """An in-memory store run on the event loop; the caller closes it (`aclose`) when the node is gone."""
    return await SqliteStore.open(":memory:", in_loop=True)


@asynccontextmanager
async def open_sim_pool(engine: str | None = None) -> AsyncIterator[RegoPool]:
    """The inline Rego pool every node of a simulation shares."""
    async with open_rego_pool(engine or preferred_engine(), isolation="inline") as pool:
        yield pool


def sim_parts(
    node: str,
    *,
    store: SqliteStore,
    pool: RegoPool,
    library: TemplateLibrary,
    recordings: Recordings,
    plan: Plan = always_ok,
    observer: Observer | None = None,
    runtime: Runtime | None = None,
) -> NodeParts:
    """The parts of node `node` in a simulation (see the module docstring)."""
    return NodeParts(
        store=lend(store),
        rego=lend(pool),
        library=library,
        actions=recording_factory(node, recordings, plan),
        runtime=runtime,
        serve_http=False,
        observer=observer,
    )
