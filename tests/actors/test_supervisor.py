import pytest
import trio
import trio.testing

from actors import (
    Actor,
    EventKind,
    RestartPolicy,
    Strategy,
    Supervisor,
    SupervisorGaveUp,
    one_error,
)
from actors.testing import Recorder, open_supervisor


class Crasher:
    """A child that records its start times and crashes the first `crashes` runs."""

    def __init__(self, name: str, crashes: float) -> None:
        self.name = name
        self.crashes = crashes
        self.starts: list[float] = []

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
        self.starts.append(trio.current_time())
        task_status.started()
        await trio.sleep(0.5)
        if len(self.starts) <= self.crashes:
            raise RuntimeError(f"{self.name} crash #{len(self.starts)}")
        await trio.sleep_forever()


async def test_one_for_one_restarts_with_exponential_backoff(autojump_clock):
    policy = RestartPolicy(max_restarts=10, window=100, backoff_initial=1, backoff_factor=2, backoff_max=3)
    child = Crasher("c", crashes=4)
    async with open_supervisor(policy=policy) as (sup, events):
        await sup.start(child)
        await trio.sleep(30)
        # crash at +0.5 after each start; delays 1, 2, 3 (capped), 3
        assert child.starts == pytest.approx([0, 1.5, 4.0, 7.5, 11.0])
        assert sup.restart_count == 4
        crashed = [e for e in events if e.kind is EventKind.CRASHED]
        assert [e.delay for e in crashed] == [1, 2, 3, 3]
        assert all(isinstance(e.error, RuntimeError) for e in crashed)
        assert len([e for e in events if e.kind is EventKind.RESTARTED]) == 4


async def test_intensity_exceeded_escalates_to_parent(autojump_clock):
    policy = RestartPolicy(max_restarts=3, window=10, backoff_initial=1, backoff_factor=2, backoff_max=8)
    events = []
    sup = Supervisor("inner", policy, on_event=events.append)
    child = Crasher("always", crashes=float("inf"))
    sup.add(child)
    with pytest.raises(SupervisorGaveUp) as info:
        await sup.run()
    # the caller sees one clear exception, not a group
    assert type(info.value) is SupervisorGaveUp
    assert info.value.child == "always" and info.value.supervisor == "inner"
    assert isinstance(info.value.__cause__, RuntimeError)
    # starts at 0, 1.5, 4.0, 8.5; the 4th crash (t=9) is over the intensity
    assert child.starts == pytest.approx([0, 1.5, 4.0, 8.5])
    assert events[-1].kind is EventKind.GAVE_UP


async def test_crashes_outside_the_window_do_not_count(autojump_clock):
    policy = RestartPolicy(max_restarts=1, window=5, backoff_initial=10, backoff_max=10)
    child = Crasher("slow", crashes=3)  # crashes every 10.5s: never 2 within 5s
    async with open_supervisor(policy=policy) as (sup, _):
        await sup.start(child)
        await trio.sleep(60)
        assert len(child.starts) == 4


async def test_parent_restarts_a_child_supervisor_that_gave_up(autojump_clock):
    inner_policy = RestartPolicy(max_restarts=1, window=10, backoff_initial=1)
    outer_events = []
    outer = Supervisor("outer", RestartPolicy(max_restarts=5, window=100, backoff_initial=1),
                       on_event=outer_events.append)
    child = Crasher("flaky", crashes=3)

    def make_inner():
        inner = Supervisor("inner", inner_policy)
        inner.add(child)
        return inner

    async def inner_factory(*, task_status=trio.TASK_STATUS_IGNORED):
        await make_inner().run(task_status=task_status)

    outer.add(inner_factory, name="inner")
    async with trio.open_nursery() as nursery:
        await nursery.start(outer.run)
        await trio.sleep(20)
        crashes = [e for e in outer_events if e.kind is EventKind.CRASHED]
        assert len(crashes) == 1 and isinstance(crashes[0].error, SupervisorGaveUp)
        assert len(child.starts) == 4  # 2 under the first inner, 2 under the restarted one
        nursery.cancel_scope.cancel()


async def test_one_for_all_restarts_siblings_in_order(autojump_clock):
    policy = RestartPolicy(strategy=Strategy.ONE_FOR_ALL, max_restarts=5, window=100, backoff_initial=1)
    order: list[str] = []

    class Quiet:
        def __init__(self, name):
            self.name = name
            self.starts = 0
            self.cancelled = 0

        async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
            self.starts += 1
            order.append(self.name)
            task_status.started()
            try:
                await trio.sleep_forever()
            except trio.Cancelled:
                self.cancelled += 1
                raise

    a, b = Quiet("a"), Quiet("b")
    crasher = Crasher("c", crashes=1)
    async with open_supervisor(policy=policy) as (sup, events):
        await sup.start(a)
        await sup.start(crasher)
        await sup.start(b)
        await trio.sleep(10)
        assert (a.starts, b.starts, len(crasher.starts)) == (2, 2, 2)
        assert (a.cancelled, b.cancelled) == (1, 1)
        assert order == ["a", "b", "a", "b"]
        assert crasher.starts == pytest.approx([0, 1.5])  # restarted after the 1s backoff
        assert [e.child for e in events if e.kind is EventKind.CRASHED] == ["c"]


async def test_normal_exit_is_not_a_crash(autojump_clock):
    async def finishes(*, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        await trio.sleep(1)

    async with open_supervisor() as (sup, events):
        await sup.start(finishes)
        await trio.sleep(5)
        assert sup.restart_count == 0
        assert [e.kind for e in events] == [EventKind.EXITED]
        assert sup.children == []


async def test_crash_before_started_is_restarted(autojump_clock):
    attempts = []

    async def fails_to_start(*, task_status=trio.TASK_STATUS_IGNORED):
        attempts.append(trio.current_time())
        if len(attempts) < 3:
            raise OSError("port busy")
        task_status.started()
        await trio.sleep_forever()

    async with open_supervisor(policy=RestartPolicy(backoff_initial=1)) as (sup, _):
        await sup.start(fails_to_start)  # returns once the third attempt started
        assert attempts == pytest.approx([0, 1, 3])


async def test_cancellation_propagates_and_no_task_outlives_the_supervisor(autojump_clock):
    alive: set[str] = set()
    baseline = trio.lowlevel.current_statistics().tasks_living

    class Worker:
        def __init__(self, name):
            self.name = name

        async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
            alive.add(self.name)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(trio.sleep_forever)
                    task_status.started()
                    await trio.sleep_forever()
            finally:
                alive.discard(self.name)

    inner = Supervisor("inner")
    inner.add(Worker("w2"))
    outer = Supervisor("outer")
    outer.add(Worker("w1"))
    outer.add(inner)
    with trio.move_on_after(5) as scope:
        async with trio.open_nursery() as nursery:
            await nursery.start(outer.run)
            assert alive == {"w1", "w2"}
            assert trio.lowlevel.current_statistics().tasks_living > baseline
    assert scope.cancelled_caught
    assert alive == set()
    assert outer.restart_count == 0 and inner.restart_count == 0
    # nothing the supervisors started is still scheduled
    await trio.testing.wait_all_tasks_blocked()
    stats = trio.lowlevel.current_statistics()
    assert stats.tasks_living == baseline


async def test_graceful_stop_drains_in_reverse_order_then_cancels_at_deadline(autojump_clock):
    recorder = Recorder(name="sink")

    class Forwarder(Actor[int]):
        async def handle(self, message):
            await trio.sleep(1)
            await recorder.address.send(message)

    class Stuck(Actor[int]):
        cancelled = False

        async def handle(self, message):
            try:
                await trio.sleep_forever()
            except trio.Cancelled:
                Stuck.cancelled = True
                raise

    forwarder = Forwarder(name="forwarder")
    stuck = Stuck(name="stuck")
    sup = Supervisor("pipeline", stop_grace=20)
    sup.add(recorder)   # downstream first ...
    sup.add(stuck)
    sup.add(forwarder)  # ... upstream last: stopped first
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        for i in range(5):
            await forwarder.address.send(i)
        await stuck.address.send(99)
        start = trio.current_time()
        await sup.stop(grace=20)
        elapsed = trio.current_time() - start
    assert recorder.messages == [0, 1, 2, 3, 4]  # drained, nothing lost
    assert Stuck.cancelled  # could not drain: cancelled at the deadline
    assert elapsed == pytest.approx(20)
    with pytest.raises(Exception, match="closed"):
        await forwarder.address.send(5)


async def test_one_error_unwraps_a_single_failure_and_keeps_real_groups():
    from actors import one_error

    with pytest.raises(KeyError):
        with one_error():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.sleep_forever)
                raise KeyError("only this")
    with pytest.raises(ExceptionGroup):
        with one_error():
            raise ExceptionGroup("two", [KeyError(1), ValueError(2)])


async def test_fail_fast_on_start_raises_a_first_start_failure_at_once_and_restarts_later_crashes(autojump_clock):
    attempts = []

    async def fails_to_start(*, task_status=trio.TASK_STATUS_IGNORED):
        attempts.append(trio.current_time())
        raise OSError("bus unreachable")

    sup = Supervisor("bus", RestartPolicy(backoff_initial=1), fail_fast_on_start=True)
    sup.add(fails_to_start)
    with pytest.raises(OSError, match="bus unreachable"), one_error():
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
    assert attempts == [0] and sup.restart_count == 0  # not retried

    crasher = Crasher("link", crashes=2)
    sup = Supervisor("link-sup", RestartPolicy(backoff_initial=1), fail_fast_on_start=True)
    sup.add(crasher)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(10)
        assert sup.restart_count == 2 and len(crasher.starts) == 3  # crashes after it was ready: restarted
        sup.begin_stop()
