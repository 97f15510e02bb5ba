"""Aggregation queues per (route, action): order, limits, listing, persistence."""

import pytest

from postee.store import PendingQueue, SqliteStore, open_store

T0 = 1_700_000_000.0


async def test_push_returns_queue_length_and_take_is_fifo(store: SqliteStore) -> None:
    for i in range(5):
        assert await store.aggregation_push("r", "slack", {"n": i, "title": f"t{i}"}, now=T0 + i) == i + 1
    assert await store.aggregation_take("r", "slack", limit=2) == [{"n": 0, "title": "t0"}, {"n": 1, "title": "t1"}]
    assert await store.aggregation_push("r", "slack", {"n": 5}, now=T0 + 5) == 4
    assert [item["n"] for item in await store.aggregation_take("r", "slack")] == [2, 3, 4, 5]
    assert await store.aggregation_take("r", "slack") == []


async def test_queues_are_separate_per_route_and_action(store: SqliteStore) -> None:
    await store.aggregation_push("r1", "a", {"v": "r1a"}, now=T0)
    await store.aggregation_push("r1", "b", {"v": "r1b"}, now=T0 + 1)
    await store.aggregation_push("r2", "a", {"v": "r2a"}, now=T0 + 2)
    assert await store.aggregation_push("r1", "a", {"v": "r1a2"}, now=T0 + 3) == 2
    assert await store.aggregation_take("r1", "b") == [{"v": "r1b"}]
    assert await store.aggregation_take("r2", "a") == [{"v": "r2a"}]
    assert await store.aggregation_take("r1", "a") == [{"v": "r1a"}, {"v": "r1a2"}]


async def test_pending_lists_count_and_oldest(store: SqliteStore) -> None:
    assert await store.aggregation_pending() == []
    await store.aggregation_push("r1", "a", {}, now=T0 + 5)
    await store.aggregation_push("r1", "a", {}, now=T0 + 9)
    await store.aggregation_push("r0", "z", {}, now=T0 + 7)
    pending = await store.aggregation_pending()
    assert pending == [PendingQueue("r0", "z", 1, T0 + 7), PendingQueue("r1", "a", 2, T0 + 5)]
    route, action, count, oldest = pending[1]
    assert (route, action, count, oldest) == ("r1", "a", 2, T0 + 5)
    await store.aggregation_take("r1", "a", limit=1)
    assert await store.aggregation_pending() == [PendingQueue("r0", "z", 1, T0 + 7), PendingQueue("r1", "a", 1, T0 + 9)]


async def test_limit_zero_and_negative(store: SqliteStore) -> None:
    await store.aggregation_push("r", "a", {"x": 1}, now=T0)
    assert await store.aggregation_take("r", "a", limit=0) == []
    with pytest.raises(ValueError):
        await store.aggregation_take("r", "a", limit=-1)
    assert await store.aggregation_take("r", "a") == [{"x": 1}]


async def test_items_keep_their_json_shape(store: SqliteStore) -> None:
    item = {"title": "Vulnerability `x`", "nested": {"list": [1, 2.5, None, True]}, "unicode": "é✓"}
    await store.aggregation_push("r", "a", item, now=T0)
    assert await store.aggregation_take("r", "a") == [item]


async def test_unserialisable_item_is_refused_and_nothing_queued(store: SqliteStore) -> None:
    with pytest.raises(TypeError):
        await store.aggregation_push("r", "a", {"x": object()}, now=T0)
    assert await store.aggregation_pending() == []


async def test_queues_survive_a_restart(db_path) -> None:
    async with open_store(db_path) as store:
        for i in range(3):
            await store.aggregation_push("r", "a", {"n": i}, now=T0 + i)
    async with open_store(db_path) as store:
        assert await store.aggregation_pending() == [PendingQueue("r", "a", 3, T0)]
        assert await store.aggregation_push("r", "a", {"n": 3}, now=T0 + 3) == 4
        assert [i["n"] for i in await store.aggregation_take("r", "a")] == [0, 1, 2, 3]
