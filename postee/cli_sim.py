"""`postee sim`: a controller and N runners in one process, on virtual time, with faults from a seed.

Prints one JSON object (`--json`) or a short report, and exits 0 only when every invariant held (1
when one did not, 2 for bad options): see `postee.sim.simulate` and the README's "Simulation".
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

import structlog

__all__ = ["add_sim_command"]

EXIT_VIOLATED = 1
EXIT_USAGE = 2
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _seconds(text: str) -> float:
    value = float(text.removesuffix("s"))
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {text!r}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {text!r}")
    return value


def add_sim_command(commands: Any) -> None:
    sim = commands.add_parser(
        "sim", help="simulate a controller and runners in one process, on virtual time, with seeded faults",
        description="Run a whole deployment (one controller, N runners) in one process under virtual time, drive "
                    "events and faults from the seed, let it settle, check the invariants. The same seed gives the "
                    "same trace_sha256. Exit 0 only when every invariant holds.")
    sim.add_argument("--runners", type=_count, default=10, help="runners (default 10)")
    sim.add_argument("--events", type=_count, default=200, help="events posted to runners and controller (default 200)")
    sim.add_argument("--seed", type=int, default=1, help="the seed: events, faults, interleaving (default 1)")
    sim.add_argument("--faults", default="none", metavar="LIST",
                     help="comma-separated fault kinds, 'all' or 'none' (default): loss, delay, duplicate, "
                          "partition, disconnect, crash, reload, actions")
    sim.add_argument("--duration", type=_seconds, default=120.0, metavar="SECONDS",
                     help="simulated seconds over which events arrive and faults happen (default 120)")
    sim.add_argument("--cfgfile", dest="sim_cfgfile", default=None, metavar="FILE",
                     help="simulate this configuration instead (actions become recorders; runners are its runs-on "
                          "names; --runners is ignored)")
    sim.add_argument("--rego-engine", dest="sim_engine", choices=("regorus", "regopy"), default=None,
                     help="Rego engine (default: regorus when installed)")
    sim.add_argument("--json", dest="sim_json", action="store_true", help="print one JSON object")
    sim.add_argument("--log-level", dest="sim_log_level", choices=LOG_LEVELS, default="critical",
                     help="the nodes' log level, on stderr (default critical: only the simulator's verdict)")
    sim.set_defaults(handler=run_sim)


def _faults(text: str) -> frozenset[str]:
    from postee.sim.scenario import ALL_FAULTS

    names = {part.strip() for part in text.split(",") if part.strip()}
    if names <= {"none"}:
        return frozenset()
    if names == {"all"}:
        return frozenset(ALL_FAULTS)
    return frozenset(names)  # "none" or "all" among others: refused as unknown kinds, with the known ones


def _quiet_logs(level: str) -> None:
    numeric = getattr(logging, level.upper())
    logging.disable(numeric - 1)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(numeric))


def run_sim(args: argparse.Namespace) -> int:
    from postee.sim.simulate import SimOptions, SimulationError, simulate

    _quiet_logs(args.sim_log_level)
    try:
        options = SimOptions(seed=args.seed, runners=args.runners, events=args.events, faults=_faults(args.faults),
                             duration=args.duration, cfgfile=args.sim_cfgfile, engine=args.sim_engine)
        result = simulate(options)
    except SimulationError as exc:
        print(f"postee sim: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.sim_json:
        print(json.dumps(result, sort_keys=False))
    else:
        _report(result)
    return 0 if all(result["invariants"].values()) else EXIT_VIOLATED


def _report(result: dict[str, Any]) -> None:
    print(f"seed {result['seed']}: {result['runners']} runners, {result['events']} events, "
          f"faults {','.join(result['faults']) or 'none'}")
    print(f"  {result['simulated_seconds']:g} simulated seconds in {result['wall_seconds']:g} s; "
          f"trace {result['trace_sha256']}")
    print(f"  lost {result['lost']}, duplicated {result['duplicated']}, redone after a crash "
          f"{result['redone_after_crash']}; injected {json.dumps(result['injected'])}")
    for name, held in result["invariants"].items():
        print(f"  {'ok  ' if held else 'FAIL'} {name}")
    for violation in result["violations"]:
        print(f"    {json.dumps(violation)}")
    if not all(result["invariants"].values()):
        print(f"  reproduce: {result['reproduce']}")
