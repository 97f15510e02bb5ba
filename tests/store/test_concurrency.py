"""Many tasks at once, work off the event loop, and cancellation that leaves nothing half-done."""

import sqlite3
import threading

import pytest
import trio

from postee.store import SqliteStore, StoreClosed, StoreError

T0 = 1_700_000_000.0
TASKS = 200

# A statement that never ends on its own: only an interrupt (our cancellation) stops it.
FOREVER = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"


@pytest.fixture
async def store(file_store: SqliteStore) -> SqliteStore:
    """Threads, cancellation inside a statement, the group commit's thread hops: the file store's."""
    return file_store


async def test_concurrent_dedup_of_one_key_lets_exactly_one_through(store: SqliteStore) -> None:
    results: list[bool] = []

    async def check() -> None:
        results.append(await store.dedup_seen("r", "same-key", 60, now=T0))

    async with trio.open_nursery() as nursery:
        for _ in range(TASKS):
            nursery.start_soon(check)
    assert len(results) == TASKS
    assert results.count(False) == 1


async def test_concurrent_pushes_and_counters_stay_consistent(store: SqliteStore) -> None:
    lengths: list[int] = []

    async def work(i: int) -> None:
        lengths.append(await store.aggregation_push("r", "a", {"i": i}, now=T0))
        await store.counter_add("sent")

    async with trio.open_nursery() as nursery:
        for i in range(TASKS):
            nursery.start_soon(work, i)
    assert sorted(lengths) == list(range(1, TASKS + 1))
    assert (await store.counters())["sent"] == TASKS
    assert sorted(item["i"] for item in await store.aggregation_take("r", "a")) == list(range(TASKS))


async def test_statements_run_in_worker_threads_not_the_event_loop(store: SqliteStore) -> None:
    threads: set[int] = set()
    # Private access, test only: the trace callback runs in whichever thread executes a statement.
    store._conn.set_trace_callback(lambda _sql: threads.add(threading.get_ident()))
    await store.dedup_seen("r", "k", 60, now=T0)
    await store.aggregation_push("r", "a", {}, now=T0)
    await store.maintenance(now=T0, max_size_bytes=1)
    assert threads
    assert threading.get_ident() not in threads


async def test_a_long_statement_does_not_block_the_loop_and_is_cancellable(store: SqliteStore) -> None:
    ticks = 0
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            query_scope = trio.CancelScope()

            async def long_query() -> None:
                with query_scope:
                    await store._call(lambda conn: conn.execute(FOREVER).fetchall())
                    pytest.fail("the endless query returned")

            nursery.start_soon(long_query)
            # The event loop keeps running other tasks meanwhile.
            while ticks < 100:
                await trio.lowlevel.checkpoint()
                ticks += 1
            query_scope.cancel()
        assert query_scope.cancelled_caught
    # The connection is usable afterwards.
    assert await store.dedup_seen("r", "after", 60, now=T0) is False


async def test_cancelled_write_is_rolled_back(store: SqliteStore) -> None:
    inserted = trio.Event()

    def write_then_hang(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO kv (key, value) VALUES ('half', 'done')")
        trio.from_thread.run_sync(inserted.set)
        conn.execute(FOREVER).fetchall()
        conn.execute("COMMIT")

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            async def write() -> None:
                with scope:
                    await store._call(write_then_hang)

            nursery.start_soon(write)
            await inserted.wait()
            scope.cancel()
        assert scope.cancelled_caught
    assert await store.kv_get("half") is None


async def test_waiting_for_the_connection_is_cancellable(store: SqliteStore) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            holder = trio.CancelScope()
            waiter = trio.CancelScope()

            async def hold() -> None:
                with holder:
                    await store._call(lambda conn: conn.execute(FOREVER).fetchall())

            async def wait() -> None:
                with waiter:
                    await store.dedup_seen("r", "queued", 60, now=T0)

            nursery.start_soon(hold)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(wait)
            await trio.testing.wait_all_tasks_blocked()
            assert store._limiter.statistics().tasks_waiting == 1
            waiter.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert waiter.cancelled_caught  # cancelled while the connection is still busy
            holder.cancel()
    # The cancelled call never ran.
    assert await store.dedup_seen("r", "queued", 60, now=T0) is False


# -- group commit (postee.store.combiner) -----------------------------------------------------
async def test_concurrent_hot_path_calls_share_thread_hops(store: SqliteStore) -> None:
    results: list[bool] = []

    async def check(i: int) -> None:
        results.append(await store.dedup_seen("r", f"k{i % 50}", 60, now=T0))

    async with trio.open_nursery() as nursery:
        for i in range(TASKS):
            nursery.start_soon(check, i)
    # Same answers as one at a time: each of the 50 keys is new exactly once...
    assert results.count(False) == 50
    assert await store.dedup_count() == 50
    # ...for far fewer worker-thread hops than calls.
    assert store._combiner.batches <= 10


async def test_one_bad_call_in_a_batch_fails_only_its_caller(store: SqliteStore) -> None:
    outcomes: dict[str, object] = {}

    async def mark(event_id: object) -> None:
        try:
            outcomes[repr(event_id)] = await store.mark_processed(event_id, now=T0)  # type: ignore[arg-type]
        except StoreError as exc:
            outcomes[repr(event_id)] = exc

    async with trio.open_nursery() as nursery:
        for event_id in ("e1", object(), "e2"):
            nursery.start_soon(mark, event_id)
    assert store._combiner.batches == 1  # they really were one batch
    assert outcomes.pop("'e1'") is True
    assert outcomes.pop("'e2'") is True
    (bad,) = outcomes.values()
    assert isinstance(bad, StoreError)
    assert await store.mark_processed("e1", now=T0) is False  # the good ones were committed


async def _hold_connection(store: SqliteStore, scope: trio.CancelScope) -> None:
    with scope:
        await store._call(lambda conn: conn.execute(FOREVER).fetchall())


async def test_a_cancelled_queued_call_never_runs_and_the_others_do(store: SqliteStore) -> None:
    results: dict[str, bool] = {}

    async def check(key: str, scope: trio.CancelScope) -> None:
        with scope:
            results[key] = await store.dedup_seen("r", key, 60, now=T0)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            holder, leader, follower = trio.CancelScope(), trio.CancelScope(), trio.CancelScope()
            nursery.start_soon(_hold_connection, store, holder)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(check, "leader", leader)
            nursery.start_soon(check, "follower", follower)
            await trio.testing.wait_all_tasks_blocked()
            follower.cancel()
            await trio.testing.wait_all_tasks_blocked()
            holder.cancel()
    assert results == {"leader": False}
    assert await store.dedup_seen("r", "follower", 60, now=T0) is False  # it never ran


async def test_a_cancelled_leader_hands_over_to_the_next_call(store: SqliteStore) -> None:
    results: dict[str, bool] = {}

    async def check(key: str, scope: trio.CancelScope) -> None:
        with scope:
            results[key] = await store.dedup_seen("r", key, 60, now=T0)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            holder, leader, follower = trio.CancelScope(), trio.CancelScope(), trio.CancelScope()
            nursery.start_soon(_hold_connection, store, holder)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(check, "leader", leader)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(check, "follower", follower)
            await trio.testing.wait_all_tasks_blocked()
            leader.cancel()
            await trio.testing.wait_all_tasks_blocked()
            holder.cancel()
    assert results == {"follower": False}
    assert await store.dedup_seen("r", "leader", 60, now=T0) is False  # it never ran


async def test_batched_calls_on_a_closed_store_fail_cleanly(db_path) -> None:
    store = await SqliteStore.open(db_path)
    await store.aclose()
    errors: list[BaseException] = []

    async def check(i: int) -> None:
        try:
            await store.dedup_seen("r", f"k{i}", 60, now=T0)
        except StoreClosed as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        for i in range(5):
            nursery.start_soon(check, i)
    assert len(errors) == 5
    assert len({id(e) for e in errors}) == 5  # one exception object per caller
