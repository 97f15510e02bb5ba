"""The controller's view of its runners: who is there, how recently heard from, what they did, and
whether they run the controller's current configuration."""

from __future__ import annotations

import collections
import json
from collections.abc import Callable
from typing import Any

import attrs

from postee.bus.protocol import ExecutionReport, Heartbeat

RECENT_EXECUTIONS = 1000
MAX_RUNNERS = 1000
"""Unverified runners the registry remembers; past it the longest silent of them is forgotten (names
that reach it through the shared seed or Postee's subjects must not grow it without bound, nor push
out a runner with its own key: those are never forgotten, and their executions are kept apart)."""
STALE_AFTER_BEATS = 3
"""A runner unheard of for this many heartbeat intervals is `stale`..."""
GONE_AFTER_BEATS = 12
"""... and `gone` after this many."""


@attrs.define
class RunnerInfo:
    name: str
    first_seen: float
    last_seen: float
    last_seen_wall: float
    config_version: str = ""
    """The slice version the runner says it runs (the one last sent, until it says)."""
    config_fetches: int = 0
    events: int = 0
    executions: int = 0
    failed_executions: int = 0
    heartbeats: int = 0
    outbox: int = 0
    actions: int | None = None
    """Actions the runner runs, as its heartbeat says (None until it says)."""
    problems: list[str] = attrs.field(factory=list)
    """What the runner reported as keeping it from running its slice as written."""
    last_told: float | None = None
    """When (monotonic) the controller last told this runner to fetch its slice again."""


class RunnerRegistry:
    """Updated by the controller's bus handlers; read by `GET /runners` and `GET /executions`.

    `clock` is monotonic (Trio's clock: virtual in tests) and decides staleness; `wall_clock` is only
    for display.
    """

    def __init__(self, clock: Callable[[], float], wall_clock: Callable[[], float],
                 heartbeat_interval: float, current_version: Callable[[str], str] | None = None,
                 verified: frozenset[str] | None = None) -> None:
        self.clock = clock
        self.current_version = current_version
        """The version of a runner's slice in the configuration now running (None: not known)."""
        self.wall_clock = wall_clock
        self.heartbeat_interval = heartbeat_interval
        self.verified = verified
        """Runners with their own key (None: every name is trusted, as on an in-process bus)."""
        self.runners: dict[str, RunnerInfo] = {}
        self.executions: collections.deque[ExecutionReport] = collections.deque(maxlen=RECENT_EXECUTIONS)
        """The recent executions of trusted runners (with their own key, or all on a trusted bus)."""
        self.unverified_executions: collections.deque[ExecutionReport] = collections.deque(maxlen=RECENT_EXECUTIONS)

    def trusted(self, name: str) -> bool:
        return self.verified is None or name in self.verified

    def seen(self, name: str) -> RunnerInfo:
        now, wall = self.clock(), self.wall_clock()
        info = self.runners.get(name)
        if info is None:
            if not self.trusted(name):
                unverified = [i for i in self.runners.values() if not self.trusted(i.name)]
                if len(unverified) >= MAX_RUNNERS:
                    del self.runners[min(unverified, key=lambda i: i.last_seen).name]
            info = self.runners[name] = RunnerInfo(name, now, now, wall)
        info.last_seen, info.last_seen_wall = now, wall
        return info

    def config_fetched(self, name: str, version: str) -> None:
        info = self.seen(name)
        info.config_fetches += 1
        if not info.heartbeats:  # a runner that sends heartbeats says itself what it runs
            info.config_version = version

    def heartbeat(self, beat: Heartbeat) -> None:
        info = self.seen(beat.runner)
        info.heartbeats += 1
        info.outbox = beat.outbox
        if beat.config_version:
            info.config_version = beat.config_version
        if beat.actions is not None:
            info.actions = beat.actions
        info.problems = [str(problem) for problem in beat.problems]

    def is_current(self, info: RunnerInfo) -> bool | None:
        """Whether the runner runs its slice of the configuration now running (None: not known)."""
        if self.current_version is None or not info.config_version:
            return None
        return info.config_version == self.current_version(info.name)

    def should_tell(self, name: str) -> bool:
        """True when the runner `name` is behind and was not told so within half a heartbeat interval.

        Called on each of its heartbeats, so a stale runner is told at most once per heartbeat, and a
        runner that beats too fast is not told faster than that.
        """
        info = self.runners.get(name)
        if info is None or self.is_current(info) is not False:
            return False
        now = self.clock()
        if info.last_told is not None and now - info.last_told < self.heartbeat_interval / 2:
            return False
        info.last_told = now
        return True

    def event(self, name: str) -> None:
        self.seen(name).events += 1

    def execution(self, report: ExecutionReport) -> None:
        info = self.seen(report.runner)
        info.executions += 1
        if not report.ok:
            info.failed_executions += 1
        (self.executions if self.trusted(report.runner) else self.unverified_executions).append(report)

    def state(self, info: RunnerInfo) -> str:
        silent = self.clock() - info.last_seen
        if silent <= STALE_AFTER_BEATS * self.heartbeat_interval:
            return "up"
        if silent <= GONE_AFTER_BEATS * self.heartbeat_interval:
            return "stale"
        return "gone"

    def changes(self, last: dict[str, tuple[str, str, bool | None]]) -> list[dict[str, Any]]:
        """The runners whose state, slice version or currency differ from `last` (name -> what was
        said), as feed messages; `last` is updated. A runner forgotten by the registry is not said."""
        changed = []
        for info in self.runners.values():
            now = (self.state(info), info.config_version, self.is_current(info))
            if last.get(info.name) != now:
                last[info.name] = now
                changed.append({"type": "runner", "name": info.name, "state": now[0], "config_version": now[1],
                                "config_current": now[2], "last_seen": info.last_seen_wall,
                                "verified": self.trusted(info.name)})
        return changed

    def runners_json(self) -> str:
        out: list[dict[str, Any]] = []
        for info in sorted(self.runners.values(), key=lambda i: i.name):
            entry = attrs.asdict(info)
            entry.pop("first_seen")
            entry.pop("last_told")
            entry["last_seen"] = entry.pop("last_seen_wall")
            entry["state"] = self.state(info)
            entry["config_current"] = self.is_current(info)
            out.append(entry)
        return json.dumps(out)

    def recent_executions(self) -> list[ExecutionReport]:
        """The last executions, trusted runners' and others', oldest first."""
        if not self.unverified_executions:
            return list(self.executions)
        return sorted([*self.executions, *self.unverified_executions], key=lambda e: e.started_at)

    def executions_json(self) -> str:
        return json.dumps([e.as_dict() for e in self.recent_executions()], ensure_ascii=False)
