"""The runner registry's timing rules, under the autojump clock (pure: no threads, no sockets)."""

import json

import trio

from postee.bus.protocol import ExecutionReport, Heartbeat
from postee.roles.runners import RunnerRegistry


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
