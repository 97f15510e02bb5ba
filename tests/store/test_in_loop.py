"""The in-loop store (`open_store(":memory:", in_loop=True)`) runs under Trio's virtual clock: no operation
leaves the event loop, so the autojump clock never jumps while one is in progress (the groundwork of a
deterministic simulation). The contract itself is checked by every test using the `store` fixture,
which runs on both stores."""

import pytest
import trio

from postee.store import open_store


async def some_work(store) -> None:
    for n in range(50):
        assert await store.dedup_seen("r", f"k{n}", now=1.0) is False
        await store.aggregation_push("r", "a", {"n": n}, now=1.0)
        await store.outbox_add("postee.runner.x.events", b"{}", {"n": str(n)})
    assert [item["n"] for item in await store.aggregation_take("r", "a")] == list(range(50))


async def test_in_loop_operations_take_no_virtual_time(autojump_clock):
    async with open_store(":memory:", in_loop=True) as store:
        start = trio.current_time()
        with trio.fail_after(0.001):  # virtual: passes only if nothing waited outside the loop
            await some_work(store)
            assert await store.outbox_count() == 50
        assert trio.current_time() == start


async def test_a_store_with_a_worker_thread_is_not_for_virtual_time(autojump_clock, tmp_path):
    """The same work on the file store: the clock jumps past the deadline while a thread runs."""
    async with open_store(tmp_path / "db" / "webhooks.db") as store:
        with pytest.raises(trio.TooSlowError), trio.fail_after(0.001):
            await some_work(store)


async def test_only_memory_runs_in_the_loop(tmp_path):
    with pytest.raises(ValueError, match="only in memory"):
        async with open_store(tmp_path / "x.db", in_loop=True):
            pass
