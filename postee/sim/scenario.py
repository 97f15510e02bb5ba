"""What a simulation runs: its configuration, its events and its faults, all drawn from the seed.

The generated configuration has every kind of route the seed document allows, so one run exercises
all of them: controller-only (`central-serial`, serialized; `digest`, aggregated), runner-only
(`local`, deduplicated), and mixed (`mixed-serial`, serialized across sides: each runner's `ship`, then
`audit-central` on the controller, then the runner's `confirm`; `mixed`, not). The controller dispatches
to runners (`dispatch-to-runners`), so the events it receives run the runners' steps too. Info events match
no route: they only travel (the controller's observer sees each event it accepts, whatever matches).
Every runner has its own action in each runner route (`runs-on: runner-<i>`). The reload swaps the template for a second
version, which changes every runner's slice, so every live runner must fetch and run the new one.

With `--cfgfile` the user's configuration is used instead: its actions become recorders, the runners
are the names its `runs-on` values give, and events are the simulator's own (each route's rule
decides, as it would).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from typing import Any

import attrs

from postee.config import yamlio
from postee.sim.recording import Conduct, Plan

__all__ = [
    "ALL_FAULTS",
    "Fault",
    "Scenario",
    "SimEvent",
    "generated_config",
    "make_scenario",
    "runner_names_of",
]

ALL_FAULTS = ("loss", "delay", "duplicate", "partition", "disconnect", "crash", "reload", "actions")
"""Fault kinds `--faults` may name (`all`: every one)."""

DEDUP_WINDOW = 60.0
"""Seconds of the `local` route's `unique-message-timeout`."""
PACE_SHARE = 5.0
"""An action attempt takes up to `PACE_SHARE x duration / events` seconds (at most `PACE_MAX`): long enough
that serialized routes are often busy when a fault or a reload hits them, short enough that they keep up
with the events (a tenth of the events go through each serialized route on the controller)."""
PACE_MAX = 3.0
AGGREGATE_NUMBER = 4
AGGREGATE_TIMEOUT = 30.0
KINDS = ("alert", "alert", "alert", "scan", "scan", "scan", "info", "info", "info", "audit")
"""Drawn uniformly: an audit is one event in ten (it goes through a serialized route on the controller)."""
URGENT = 3
"""One alert in `URGENT` is urgent (the controller's serialized `central-serial` route)."""
CONTROLLER = "controller"


def _template(version: int) -> dict[str, Any]:
    return {
        "name": "sim",
        "body": (
            "package postee.sim\n\n"
            f'title := sprintf("v{version} sim#%v %v", [input.sim.n, input.sim.kind])\n\n'
            'result := sprintf("sim#%v", [input.sim.n])\n'
        ),
    }


def pace_of(duration: float, events: int) -> float:
    """The longest an action attempt takes in a run of `events` over `duration` (see `PACE_SHARE`)."""
    return min(PACE_MAX, PACE_SHARE * duration / max(events, 1))


def generated_config(runners: Sequence[str], *, version: int = 1, pace: float = PACE_MAX) -> dict[str, Any]:
    """The simulator's own configuration for `runners` (see the module docstring). Each action's attempt
    timeout is a little over `pace` (the longest a working attempt takes), so a hung attempt costs
    about as much as a slow one: serialized routes keep up with the events under the `actions` fault."""
    retry = {"retries": 2, "retry-backoff": "0.1s", "timeout": f"{pace + 0.5:.3f}s"}

    def on_runners(prefix: str) -> list[str]:
        return [f"{prefix}-{name}" for name in runners]

    actions: list[dict[str, Any]] = [
        {"name": name, "type": "webhook", "enable": True, "url": f"http://sim.invalid/{name}", **retry}
        for name in ("ticket", "notify", "digest-mail", "audit-central", "scan-central")
    ]
    for prefix in ("kill", "ship", "collect", "confirm"):
        for runner in runners:
            actions.append({"name": f"{prefix}-{runner}", "type": "exec", "enable": True, "runs-on": runner,
                            "exec-script": f"echo {prefix}", **retry})
    routes: list[dict[str, Any]] = [
        {"name": "central-serial", "input": "input.sim.urgent", "serialize-actions": True,
         "actions": ["ticket", "notify"], "template": "sim"},
        {"name": "digest", "input": 'contains(input.sim.kind, "scan")', "actions": ["digest-mail"], "template": "sim",
         "plugins": {"aggregate-message-number": AGGREGATE_NUMBER,
                     "aggregate-message-timeout": f"{AGGREGATE_TIMEOUT:g}s"}},
        {"name": "local", "input": 'contains(input.sim.kind, "alert")', "actions": on_runners("kill"),
         "template": "sim",
         "plugins": {"unique-message-props": ["sim.key"], "unique-message-timeout": f"{DEDUP_WINDOW:g}s"}},
        {"name": "mixed-serial", "input": 'contains(input.sim.kind, "audit")', "serialize-actions": True,
         "actions": [*on_runners("ship"), "audit-central", *on_runners("confirm")], "template": "sim"},
        {"name": "mixed", "input": 'contains(input.sim.kind, "scan")',
         "actions": [*on_runners("collect"), "scan-central"], "template": "sim"},
    ]
    return {"name": "postee-sim", "dispatch-to-runners": True, "routes": routes, "templates": [_template(version)],
            "actions": actions}


def reloaded_config(data: dict[str, Any], version: int) -> dict[str, Any]:
    """The configuration a reload switches to: its `name` says the version (the name is in every
    runner's slice, so each must fetch its own again); the generated one also swaps its template."""
    base = str(data.get("name") or "postee").split(" (reload ")[0]
    changed = {**data, "name": f"{base} (reload {version})"}
    if any(t.get("name") == "sim" for t in data.get("templates") or [] if isinstance(t, dict)):
        changed["templates"] = [_template(version)]
    return changed


def runner_names_of(data: Any) -> list[str]:
    """The runner names a configuration's `runs-on` values give, sorted."""
    actions = data.get("actions") if isinstance(data, dict) else None
    names = {str(a.get("runs-on")).strip() for a in actions or [] if isinstance(a, dict) and a.get("runs-on")}
    return sorted(n for n in names if n)


@attrs.frozen
class SimEvent:
    """One event of the run: number, when, to whom, its kind and dedup key."""

    n: int
    at: float
    target: str
    kind: str
    key: str

    def body(self) -> bytes:
        sim = {"n": self.n, "kind": self.kind, "key": self.key, "urgent": self.kind == "alert" and self.n % URGENT == 0}
        return json.dumps({"sim": sim, "image": f"sim/{self.kind}",
                           "SigMetadata": {"ID": f"TRC-{self.n % 7}"}}).encode()


@attrs.frozen
class Fault:
    """One scheduled fault: `kind` on `node` (and `peer`) from `at` for `duration` seconds."""

    at: float
    kind: str
    node: str
    peer: str = ""
    duration: float = 0.0


@attrs.frozen
class Scenario:
    runners: tuple[str, ...]
    events: tuple[SimEvent, ...]
    faults: tuple[Fault, ...]
    duration: float
    failing_actions: float
    """Share of action attempts that fail or hang (0 without the `actions` fault)."""
    pace: float
    """The longest an action attempt takes (see `PACE_SHARE`)."""


def make_scenario(rng: random.Random, runners: Sequence[str], *, events: int, duration: float,
                  faults: frozenset[str]) -> Scenario:
    """Draw the events and the fault schedule (see `ALL_FAULTS`) from `rng`."""
    keys_per_runner = max(2, events // max(len(runners), 1) // 3)
    drawn = []
    for n in range(events):
        at = rng.uniform(0, duration)
        target = CONTROLLER if not runners or rng.random() < 0.1 else rng.choice(runners)
        kind = rng.choice(KINDS)
        key = f"{target}/k{rng.randrange(keys_per_runner)}"
        drawn.append(SimEvent(n=n, at=at, target=target, kind=kind, key=key))
    drawn.sort(key=lambda e: (e.at, e.n))
    schedule: list[Fault] = []

    def some(count: int, kind: str, choose: Sequence[str], *, span: tuple[float, float], peer: str = "") -> None:
        for _ in range(count):
            schedule.append(Fault(at=rng.uniform(0, duration * 0.8), kind=kind, node=rng.choice(choose), peer=peer,
                                  duration=rng.uniform(*span)))

    scale = 1 + len(runners) // 50  # a fault of each kind per fifty runners (and one at least)
    if runners and "partition" in faults:
        some(2 * scale, "partition", list(runners), span=(2.0, 20.0), peer=CONTROLLER)
    if runners and "disconnect" in faults:
        some(2 * scale, "disconnect", list(runners), span=(1.0, 15.0))
    if "crash" in faults:
        some(1, "crash", [CONTROLLER], span=(1.0, 10.0))
        if runners:
            some(2 * scale, "crash", list(runners), span=(1.0, 20.0))
    if "reload" in faults:  # two, so that a reload also replaces a pipeline that may still be draining
        first = rng.uniform(duration * 0.2, duration * 0.5)
        schedule.append(Fault(at=first, kind="reload", node=CONTROLLER))
        schedule.append(Fault(at=first + rng.uniform(0.5, duration * 0.2), kind="reload", node=CONTROLLER))
    schedule.sort(key=lambda f: (f.at, f.kind, f.node))
    return Scenario(runners=tuple(runners), events=tuple(drawn), faults=tuple(schedule), duration=duration,
                    failing_actions=0.08 if "actions" in faults else 0.0,
                    pace=pace_of(duration, events))




def _roll(*parts: object) -> float:
    """A number in [0, 1) from a hash of `parts`: the same for the same parts, in any run and order."""
    digest = hashlib.sha256("/".join(str(part) for part in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def action_plan(seed: int, share: float, pace: float = 0.0) -> Plan:
    """How action attempts behave: each takes up to `pace` seconds; about `share` of them fail or hang
    (until the attempt's timeout); one (event, action) in `10 / share` fails on every attempt (its
    failure is recorded). Otherwise the third attempt succeeds, so retries end.

    Drawn from a hash of (seed, node, action, event, attempt), not from the shared generator, so an
    attempt's conduct does not depend on the order attempts happen in."""

    def plan(node: str, action: str, event_id: str, attempt: int) -> Conduct:
        delay = _roll(seed, "pace", node, action, event_id, attempt) * pace
        if share <= 0:
            return Conduct("ok", delay=delay)
        if _roll(seed, "doomed", node, action, event_id) < share / 10:
            return Conduct("fail", delay=delay)
        roll = _roll(seed, node, action, event_id, attempt)
        if attempt >= 3 or roll >= share:
            return Conduct("ok", delay=delay)
        if roll < share / 6:
            return Conduct("hang")
        return Conduct("fail", delay=delay)

    return plan


def dump(data: dict[str, Any]) -> str:
    return yamlio.safe_dump(data, sort_keys=False)
