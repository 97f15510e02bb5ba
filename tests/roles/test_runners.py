"""The runner registry's timing rules, under the autojump clock (pure: no threads, no sockets)."""

import json

import trio

from postee.bus.protocol import ExecutionReport, Heartbeat
from postee.roles.runners import MAX_RUNNERS, RunnerRegistry


def states(registry: RunnerRegistry) -> dict[str, str]:
    return {entry["name"]: entry["state"] for entry in json.loads(registry.runners_json())}


async def test_up_stale_gone_by_heartbeat_intervals(autojump_clock):
    registry = RunnerRegistry(trio.current_time, lambda: 1_700_000_000.0, heartbeat_interval=5)
    registry.heartbeat(Heartbeat(runner="a", sent_at=0, config_version="v1", outbox=3))
    registry.heartbeat(Heartbeat(runner="b", sent_at=0))
    await trio.sleep(15)
    registry.heartbeat(Heartbeat(runner="b", sent_at=15))
    assert states(registry) == {"a": "up", "b": "up"}  # 15s = 3 intervals: still up
    await trio.sleep(0.1)
    assert states(registry)["a"] == "stale"
    await trio.sleep(45)  # a: 60.1s silent = more than 12 intervals
    assert states(registry) == {"a": "gone", "b": "stale"}
    entry = json.loads(registry.runners_json())[0]
    assert entry["config_version"] == "v1" and entry["outbox"] == 3 and entry["heartbeats"] == 1


async def test_executions_are_kept_and_counted(autojump_clock):
    registry = RunnerRegistry(trio.current_time, lambda: 0.0, heartbeat_interval=5)
    for i in range(3):
        registry.execution(ExecutionReport(runner="a", route="r", action="x", action_type="exec", event_id=str(i),
                                           ok=i != 1, attempts=1, started_at=0, duration=0.1))
    info = registry.runners["a"]
    assert (info.executions, info.failed_executions) == (3, 1)
    assert [e["event_id"] for e in json.loads(registry.executions_json())] == ["0", "1", "2"]


async def test_a_runner_behind_is_told_at_most_once_per_heartbeat(autojump_clock):
    current = {"a": "v2", "b": "v1"}
    registry = RunnerRegistry(trio.current_time, lambda: 0.0, heartbeat_interval=5, current_version=current.get)
    told = []
    for second in range(0, 20):  # a runner beating every second, five times too fast
        for name in ("a", "b"):
            registry.heartbeat(Heartbeat(runner=name, sent_at=second, config_version="v1", actions=1,
                                         problems=["p"] if name == "a" else []))
            if registry.should_tell(name):
                told.append((name, second))
        await trio.sleep(1)
    assert told == [("a", 0), ("a", 3), ("a", 6), ("a", 9), ("a", 12), ("a", 15), ("a", 18)]  # b is current
    entries = {e["name"]: e for e in json.loads(registry.runners_json())}
    assert entries["a"]["config_current"] is False and entries["b"]["config_current"] is True
    assert entries["a"]["problems"] == ["p"] and entries["b"]["problems"] == [] and entries["a"]["actions"] == 1
    assert "last_told" not in entries["a"]
    registry.heartbeat(Heartbeat(runner="a", sent_at=21, config_version="v2"))
    assert not registry.should_tell("a")
    assert json.loads(registry.runners_json())[0]["config_current"] is True


async def test_unverified_names_cannot_push_out_a_runner_with_its_own_key(autojump_clock):
    """The shared seed may name as many runners as it likes: past the cap the longest silent of *those*
    is forgotten; a runner with its own key, and its executions, stay."""
    registry = RunnerRegistry(trio.current_time, lambda: 0.0, heartbeat_interval=5, verified=frozenset({"keyed"}))
    registry.heartbeat(Heartbeat(runner="keyed", sent_at=0))
    registry.execution(ExecutionReport(runner="keyed", route="r", action="x", action_type="exec", event_id="mine",
                                       ok=True, attempts=1, started_at=0, duration=0.1))
    for n in range(MAX_RUNNERS + 50):
        await trio.sleep(1)
        registry.heartbeat(Heartbeat(runner=f"fake-{n}", sent_at=n))
        registry.execution(ExecutionReport(runner=f"fake-{n}", route="r", action="x", action_type="exec",
                                           event_id=str(n), ok=True, attempts=1, started_at=n, duration=0.1))
    assert "keyed" in registry.runners and registry.runners["keyed"].executions == 1
    assert len(registry.runners) == MAX_RUNNERS + 1
    assert "fake-0" not in registry.runners and f"fake-{MAX_RUNNERS + 49}" in registry.runners
    assert "mine" in [e.event_id for e in registry.recent_executions()]
