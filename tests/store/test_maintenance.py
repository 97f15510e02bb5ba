"""Maintenance: expiry, eviction by size (oldest first, really shrinking the file), retention."""

import os
from functools import partial
from pathlib import Path

import trio

from postee.store import SqliteStore, open_store, serve_maintenance

T0 = 1_700_000_000.0
KEY_PADDING = "x" * 150  # long keys, as real dedup keys (image-digest-CVE-...) are


def _file_size(path: Path | str) -> int:
    return os.path.getsize(path) if os.path.exists(path) else 0


async def _fill(store: SqliteStore, count: int, ttl: float | None = None) -> list[str]:
    keys = [f"{i:06d}-{KEY_PADDING}" for i in range(count)]
    for i, key in enumerate(keys):
        assert await store.dedup_seen("r", key, ttl, now=T0 + i) is False
    return keys


async def test_expired_keys_are_deleted_live_ones_kept(store: SqliteStore) -> None:
    await store.dedup_seen("r", "expired", 10, now=T0)
    await store.dedup_seen("r", "live", 100, now=T0)
    await store.dedup_seen("r", "forever", None, now=T0)
    report = await store.maintenance(now=T0 + 50)
    assert (report.expired, report.evicted, report.vacuumed, report.over_limit) == (1, 0, False, False)
    assert await store.dedup_count() == 2
    assert await store.dedup_seen("r", "live", 100, now=T0 + 50) is True
    assert await store.dedup_seen("r", "forever", None, now=T0 + 50) is True


async def test_no_limit_means_no_eviction(store: SqliteStore) -> None:
    await _fill(store, 500)
    report = await store.maintenance(now=T0 + 10_000, max_size_bytes=None)
    assert report.evicted == 0
    assert await store.dedup_count() == 500
    report = await store.maintenance(now=T0 + 10_000, max_size_bytes=0)
    assert report.evicted == 0


async def test_over_size_evicts_oldest_first_and_the_file_shrinks(file_store: SqliteStore, db_path: Path) -> None:
    count = 3000
    keys = await _fill(file_store, count)
    size = await file_store.size()
    assert _file_size(db_path) == size > 400_000
    limit = size // 2

    report = await file_store.maintenance(now=T0 + count, max_size_bytes=limit)

    assert report.size_before == size
    assert report.vacuumed and not report.over_limit
    assert report.size_after <= limit
    # Honest measure: the file on disk is that size, and the WAL holds nothing more.
    assert _file_size(db_path) == report.size_after
    assert _file_size(f"{db_path}-wal") == 0
    # It evicted about what was needed (down to the headroom below the limit), not everything.
    assert count * 0.4 <= report.evicted <= count * 0.75
    assert await file_store.dedup_count() == count - report.evicted
    # Oldest first: exactly the first `evicted` keys are gone, every newer one is still there.
    seen = [await file_store.dedup_seen("r", key, None, now=T0 + count) for key in keys]
    assert seen == [False] * report.evicted + [True] * (count - report.evicted)


async def test_expiry_alone_can_bring_the_size_under(store: SqliteStore) -> None:
    await _fill(store, 2000, ttl=10)
    await store.dedup_seen("r", "survivor", None, now=T0 + 5000)
    size = await store.size()
    report = await store.maintenance(now=T0 + 5000, max_size_bytes=size // 2)
    assert report.expired == 2000
    assert report.evicted == 0
    assert report.size_after <= size // 2
    assert await store.dedup_seen("r", "survivor", None, now=T0 + 5000) is True


async def test_undelivered_messages_are_never_evicted(store: SqliteStore) -> None:
    for i in range(300):
        await store.aggregation_push("r", "a", {"n": i, "pad": KEY_PADDING}, now=T0)
        await store.outbox_add("s", KEY_PADDING.encode(), now=T0)
    await store.dedup_seen("r", "k", None, now=T0)
    report = await store.maintenance(now=T0, max_size_bytes=4096)
    assert report.over_limit
    assert report.evicted == 1  # the one dedup key went, the messages stayed
    assert len(await store.aggregation_take("r", "a")) == 300
    assert await store.outbox_count() == 300


async def test_eviction_persists(db_path: Path) -> None:
    async with open_store(db_path) as store:
        await _fill(store, 1000)
        size = await store.size()
        report = await store.maintenance(now=T0 + 1000, max_size_bytes=size // 2)
    async with open_store(db_path) as store:
        assert await store.dedup_count() == 1000 - report.evicted
        assert await store.size() <= size // 2


async def test_maintenance_service_runs_every_interval(store: SqliteStore, autojump_clock) -> None:
    await store.dedup_seen("r", "k0", 10, now=T0)
    wall = iter(T0 + 100 * i for i in range(1, 100))
    reports: list[tuple[float, int]] = []

    async with trio.open_nursery() as nursery:

        def on_report(report) -> None:
            reports.append((trio.current_time(), report.expired))
            if len(reports) == 3:
                nursery.cancel_scope.cancel()

        start = trio.current_time()
        await nursery.start(
            partial(serve_maintenance, store, interval=3600, on_report=on_report, wall_clock=wall.__next__)
        )
        # started() comes after the first pass.
        assert len(reports) == 1
        await store.dedup_seen("r", "k1", 10, now=T0 + 100)
    assert [t - start for t, _ in reports] == [0, 3600, 7200]
    assert [expired for _, expired in reports] == [1, 1, 0]
