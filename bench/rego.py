"""Rego cost per template and per backend, and what the pipeline adds on top, measured in one run.

    python bench/rego.py [--backends regopy,regorus] [--repeat 3] [--budget 1.5]

For each of the 12 golden template cases (`tests/fixtures/compat/template-cases.json`) and each
backend:

- **bare**: the engine alone, one compiled query on one thread, the event already JSON text: the floor.
- **pipeline**: `postee.rego.render.render` through a process pool with one worker, sequentially:
  event augmentation, JSON encoding, pickling to the worker and back, Go-JSON rendering of fields.

Each cell is ms/event, the best of `--repeat` runs of as many events as fit in `--budget` seconds
(at least `MIN_EVENTS`). The machines are shared and noisy, so only ratios from the same run mean
anything. A last line compares throughput: the pool with one worker per CPU, all 12 cases
concurrently, against the bare engine on one thread.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from postee.rego.backends import get_backend
from postee.rego.library import TemplateLibrary
from postee.rego.pool import default_workers, open_rego_pool
from postee.rego.render import augment_event, package_template, render

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "compat"
DEFAULT_BACKENDS = ("regopy", "regorus")
DEFAULT_REPEAT = 3
DEFAULT_BUDGET = 0.5  # seconds of measurement per cell and run
MIN_EVENTS = 3
MAX_EVENTS = 500
POOL_TIMEOUT = 120.0


def load_cases() -> list[tuple[str, dict]]:
    cases = json.loads((FIXTURES / "template-cases.json").read_text())["cases"]
    return [(case["rego_package"], json.loads((FIXTURES / case["input"]).read_text())) for case in cases]


def events_for(seconds_per_event: float, budget: float) -> int:
    return max(MIN_EVENTS, min(MAX_EVENTS, int(budget / max(seconds_per_event, 1e-6))))


def best_ms(run: Callable[[int], float], per_event: float, repeat: int, budget: float) -> float:
    """Best ms/event over `repeat` runs of a size chosen from a first estimate."""
    n = events_for(per_event, budget)
    return min(run(n) for _ in range(repeat)) / n * 1000


def bench_bare(backend_name: str, library: TemplateLibrary, cases, repeat: int, budget: float):
    backend = get_backend(backend_name)
    results = {}
    for package, event in cases:
        compiled = backend.compile(library.modules_for(package), f"data.{package}")
        input_json = json.dumps(augment_event(event), ensure_ascii=False)
        start = time.perf_counter()
        compiled.evaluate(input_json)  # warm-up, and the estimate for the run size
        estimate = time.perf_counter() - start

        def run(n: int, compiled=compiled, input_json=input_json) -> float:
            start = time.perf_counter()
            for _ in range(n):
                compiled.evaluate(input_json)
            return time.perf_counter() - start

        results[package] = best_ms(run, estimate, repeat, budget)
    return results


async def bench_pipeline(backend_name: str, library: TemplateLibrary, cases, repeat: int, budget: float):
    results = {}
    async with open_rego_pool(backend_name, workers=1, timeout=POOL_TIMEOUT) as pool:
        for package, event in cases:
            template = package_template(package, library)
            await render(pool, template, event)  # starts the worker, compiles there
            start = time.perf_counter()
            await render(pool, template, event)
            estimate = time.perf_counter() - start
            n = events_for(estimate, budget)
            runs = []
            for _ in range(repeat):
                start = time.perf_counter()
                for _ in range(n):
                    await render(pool, template, event)
                runs.append(time.perf_counter() - start)
            results[package] = min(runs) / n * 1000
    return results


async def bench_throughput(backend_name: str, library: TemplateLibrary, cases, rounds: int) -> float:
    """Events/s with one worker per CPU, every case rendered `rounds` times concurrently."""
    templates = [(package_template(package, library), event) for package, event in cases]
    async with open_rego_pool(backend_name, timeout=POOL_TIMEOUT) as pool:

        async def lane(items):
            for template, event in items:
                await render(pool, template, event)

        workers = default_workers()
        async with trio.open_nursery() as nursery:  # warm every worker with every template
            for _ in range(workers):
                nursery.start_soon(lane, templates)
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(workers):
                nursery.start_soon(lane, templates * rounds)
        elapsed = time.perf_counter() - start
    return workers * rounds * len(templates) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default=",".join(DEFAULT_BACKENDS))
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT)
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET, help="seconds per cell and run")
    parser.add_argument("--rounds", type=int, default=3, help="throughput: renders of each case per worker")
    args = parser.parse_args()
    library = TemplateLibrary.load()
    cases = load_cases()
    backends = [name for name in args.backends.split(",") if name]

    table: dict[str, dict[str, tuple[float, float]]] = {}
    totals = {}
    for name in backends:
        bare = bench_bare(name, library, cases, args.repeat, args.budget)
        pipeline = trio.run(bench_pipeline, name, library, cases, args.repeat, args.budget)
        table[name] = {package: (bare[package], pipeline[package]) for package, _ in cases}
        bare_total = sum(bare.values())
        throughput = trio.run(bench_throughput, name, library, cases, args.rounds)
        totals[name] = (bare_total, sum(pipeline.values()), throughput, len(cases) / bare_total * 1000)

    header = f"{'template (ms/event)':36}" + "".join(
        f"{name + ' bare':>14}{name + ' pipe':>14}{'ratio':>7}" for name in backends
    )
    print(header)
    print("-" * len(header))
    for package, _ in cases:
        row = f"{package:36}"
        for name in backends:
            bare, pipe = table[name][package]
            row += f"{bare:14.2f}{pipe:14.2f}{pipe / bare:7.2f}"
        print(row)
    print("-" * len(header))
    row = f"{'all 12 (sum)':36}"
    for name in backends:
        bare_total, pipe_total, _, _ = totals[name]
        row += f"{bare_total:14.2f}{pipe_total:14.2f}{pipe_total / bare_total:7.2f}"
    print(row)
    print()
    for name in backends:
        _, _, throughput, bare_rate = totals[name]
        print(
            f"{name}: pool of {default_workers()} processes {throughput:.1f} events/s vs bare engine on "
            f"one thread {bare_rate:.1f} events/s (ratio {throughput / bare_rate:.2f})"
        )


if __name__ == "__main__":
    main()
