"""Actions that record what they were asked to do, and can be told to fail, hang or be slow.

In a simulation every configured action is replaced by a `RecordingAction` (same name, same retry
settings, same place in its route): its outside effect is a `Call` appended to the deployment's
`Recordings`, stamped with virtual time. What it does on each attempt (succeed, fail, hang until the
attempt's timeout cuts it, take a while first) comes from a `Plan`, chosen by the simulator from its
seed; so retries, timeouts and slow actions go through the real `send_with_retries` and actors.

The events a delivery is about are read back from its rendered content: the simulator's templates
write `sim#<n>` for each event, so an aggregate names every event it carries.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import attrs
import trio

from postee.actions.base import Action, ActionError, ActionSpec, Delivery, SendResult, define_action
from postee.actions.settings import SettingsReader

__all__ = ["Call", "Conduct", "Plan", "RecordingAction", "Recordings", "recording_factory", "sim_numbers"]

SIM_NUMBER = re.compile(r"sim#(\d+)")
DEFAULT_TIMEOUT = 10.0
"""Seconds one attempt of a recording action may take unless its settings say `timeout`."""

Result = Literal["ok", "failed", "cancelled"]


@attrs.frozen
class Conduct:
    """What one attempt does: wait `delay` seconds, then succeed, fail (retryable) or hang."""

    kind: Literal["ok", "fail", "hang"] = "ok"
    delay: float = 0.0


OK = Conduct()

Plan = Callable[[str, str, str, int], Conduct]
"""`plan(node, action, event_id, attempt)`: the conduct of that attempt (attempts count from 1)."""


def always_ok(node: str, action: str, event_id: str, attempt: int) -> Conduct:
    return OK


@attrs.frozen
class Call:
    """One attempt of a recording action, recorded when it ended."""

    node: str
    action: str
    route: str
    event_id: str
    attempt: int
    items: tuple[int, ...]
    """The simulator's event numbers the delivery names (several for an aggregate)."""
    started: float
    ended: float
    result: Result
    """ok, failed (told to), cancelled (its attempt timed out, or the node crashed meanwhile)."""

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


class Recordings:
    """Every call of every recording action in a deployment, in the order they ended."""

    def __init__(self, on_call: Callable[[Call], None] | None = None) -> None:
        self.calls: list[Call] = []
        self._attempts: dict[tuple[str, str, str], int] = {}
        self._on_call = on_call

    def next_attempt(self, node: str, action: str, event_id: str) -> int:
        """The number of this attempt of `action` on `node` for the event (across the node's restarts)."""
        key = (node, action, event_id)
        self._attempts[key] = attempt = self._attempts.get(key, 0) + 1
        return attempt

    def add(self, call: Call) -> None:
        self.calls.append(call)
        if self._on_call is not None:
            self._on_call(call)


def sim_numbers(content: Any) -> tuple[int, ...]:
    """The `sim#<n>` numbers a rendered content names, in order: its description's (an aggregate's
    descriptions are its items' one after another), or anywhere in it when it has none."""
    if isinstance(content, dict) and content.get("description"):
        content = content["description"]
    text = content if isinstance(content, str) else json.dumps(content, sort_keys=True, default=str)
    return tuple(int(n) for n in SIM_NUMBER.findall(text))


@define_action
class RecordingAction(Action):
    """Records each attempt in `recordings`; behaves as `plan` says (see the module docstring)."""

    type_name: ClassVar[str] = "recorder"
    default_timeout: ClassVar[float] = DEFAULT_TIMEOUT

    node: str = ""
    recordings: Recordings = attrs.field(factory=Recordings)
    plan: Plan = always_ok

    async def send(self, delivery: Delivery) -> SendResult:
        attempt = self.recordings.next_attempt(self.node, self.name, delivery.event_id)
        conduct = self.plan(self.node, self.name, delivery.event_id, attempt)
        started = trio.current_time()
        result: Result = "cancelled"
        try:
            if conduct.delay > 0:
                await trio.sleep(conduct.delay)
            if conduct.kind == "hang":
                await trio.sleep_forever()
            if conduct.kind == "fail":
                result = "failed"
                raise ActionError(f"{self.name}: told to fail attempt {attempt}", retryable=True)
            result = "ok"
            return SendResult(output=f"recorded attempt {attempt}")
        finally:
            self.recordings.add(Call(
                node=self.node, action=self.name, route=delivery.route, event_id=delivery.event_id,
                attempt=attempt, items=sim_numbers(delivery.content), started=started,
                ended=trio.current_time(), result=result,
            ))


def recording_factory(node: str, recordings: Recordings, plan: Plan = always_ok) -> Callable[[ActionSpec], Action]:
    """The action factory (`NodeParts.actions`) of one node: every action a recorder, with its retry settings."""

    def make(spec: ActionSpec) -> Action:
        reader = SettingsReader(spec)
        policy = reader.retry_policy(DEFAULT_TIMEOUT)
        reader.done()
        return RecordingAction(spec, retry_policy=policy, node=node, recordings=recordings, plan=plan)

    return make
