"""The same seed gives the same trace, run after run and process after process (whatever the hash seed of
the interpreter); different seeds give different traces. The seed also chooses Trio's interleaving."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import structlog

from postee.sim.scenario import ALL_FAULTS
from postee.sim.simulate import SimOptions, SimulationError, seeded_scheduler, simulate

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"runners": 5, "events": 120, "faults": frozenset(ALL_FAULTS)}


@pytest.fixture(autouse=True)
def quiet_logs():
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    yield
    structlog.reset_defaults()


def test_the_same_seed_gives_the_same_trace_and_another_seed_another():
    first = simulate(SimOptions(seed=7, **SMALL))
    again = simulate(SimOptions(seed=7, **SMALL))
    other = simulate(SimOptions(seed=8, **SMALL))
    assert first["trace_sha256"] == again["trace_sha256"]
    assert {k: v for k, v in first.items() if k != "wall_seconds"} == {k: v for k, v in again.items()
                                                                       if k != "wall_seconds"}
    assert other["trace_sha256"] != first["trace_sha256"]
    assert all(first["invariants"].values()) and all(other["invariants"].values())


def test_a_trace_repeats_in_another_process_with_another_hash_seed():
    """`postee sim` in a fresh interpreter (string hashing randomized differently) repeats the trace."""
    here = simulate(SimOptions(seed=3, **SMALL))
    command = [sys.executable, "-m", "postee", "sim", "--seed", "3", "--runners", "5", "--events", "120",
               "--faults", "all", "--json"]
    hashes = []
    for hash_seed in ("1", "2"):
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT,
                              env={**os.environ, "PYTHONHASHSEED": hash_seed})
        assert done.returncode == 0, done.stderr[-2000:]
        hashes.append(json.loads(done.stdout)["trace_sha256"])
    assert hashes == [here["trace_sha256"]] * 2


def test_the_seed_chooses_the_interleaving():
    """With events and faults fixed, only Trio's scheduling differs between these two runs: the seeded
    scheduler is what makes them differ (and each repeat itself)."""
    import trio

    def order(seed: int) -> list[int]:
        seen: list[int] = []

        async def task(n: int) -> None:
            await trio.lowlevel.checkpoint()
            seen.append(n)

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                for n in range(8):
                    nursery.start_soon(task, n)

        with seeded_scheduler(seed):
            trio.run(main)
        return seen

    assert order(1) == order(1)
    assert any(order(1) != order(seed) for seed in range(2, 6))


def test_bad_options_are_refused_with_a_clear_error():
    with pytest.raises(SimulationError, match="unknown fault kinds"):
        SimOptions(seed=1, faults=frozenset({"meteor"}))
    done = subprocess.run([sys.executable, "-m", "postee", "sim", "--faults", "meteor"], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 2 and "unknown fault kinds ['meteor']" in done.stderr
