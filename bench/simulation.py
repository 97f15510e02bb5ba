"""The simulator's speed: simulated seconds per wall second, and how wall time grows with the fleet.

    .venv/bin/python bench/simulation.py [--sizes 10,100,1000] [--events-per-runner 20] [--seed 1] [--faults all]

Runs `postee sim` (in process, logs off) once per size, with `events = size x --events-per-runner`
and every fault kind, and prints per size: wall seconds, simulated seconds, their ratio, wall
milliseconds per event, and wall time relative to the smallest size (what the growth is: linear in
the fleet and the events would be 10x per step). Every run must hold every invariant; a violation
is printed and the exit status is 1.

All in one process, one size after another: the ratios come from one run on one machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's `actors`, not bench/actors.py

from postee.sim.scenario import ALL_FAULTS  # noqa: E402
from postee.sim.simulate import SimOptions, simulate  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--events-per-runner", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--faults", default="all")
    args = parser.parse_args(argv)
    logging.disable(logging.CRITICAL)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    faults = frozenset(ALL_FAULTS) if args.faults == "all" else frozenset(f for f in args.faults.split(",") if f)
    rows, status, first = [], 0, None
    for size in (int(s) for s in args.sizes.split(",")):
        events = size * args.events_per_runner
        result = simulate(SimOptions(seed=args.seed, runners=size, events=events, faults=faults))
        wall, simulated = result["wall_seconds"], result["simulated_seconds"]
        first = first or wall
        held = all(result["invariants"].values())
        status = status or (0 if held else 1)
        rows.append((size, events, wall, simulated, simulated / wall, 1000 * wall / max(events, 1), wall / first, held))
        if not held:
            print(json.dumps(result["violations"][:5], indent=1), file=sys.stderr)
        print(f"{size:>6} runners {events:>7} events: {wall:8.1f} s wall, {simulated:7.1f} s simulated, "
              f"{simulated / wall:6.2f}x, {1000 * wall / max(events, 1):6.2f} ms/event, "
              f"{wall / first:7.1f}x the first, invariants {'hold' if held else 'VIOLATED'}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
