"""Dedup keys: check-and-set, expiry, per-route scope, persistence."""

import pytest

from postee.store import SqliteStore, open_store

T0 = 1_700_000_000.0


async def test_first_sighting_is_new_then_seen(store: SqliteStore) -> None:
    assert await store.dedup_seen("r", "CVE-1-img", 60, now=T0) is False
    assert await store.dedup_seen("r", "CVE-1-img", 60, now=T0 + 1) is True
    assert await store.dedup_count() == 1


async def test_within_and_after_timeout(store: SqliteStore) -> None:
    assert await store.dedup_seen("r", "k", 10, now=T0) is False
    assert await store.dedup_seen("r", "k", 10, now=T0 + 9.999) is True
    # At expiry the key is gone: the event passes and the key is recorded afresh...
    assert await store.dedup_seen("r", "k", 10, now=T0 + 10) is False
    # ...with a new expiry counted from then, not from the first sighting.
    assert await store.dedup_seen("r", "k", 10, now=T0 + 19) is True
    assert await store.dedup_seen("r", "k", 10, now=T0 + 20) is False


async def test_a_seen_key_does_not_extend_its_expiry(store: SqliteStore) -> None:
    assert await store.dedup_seen("r", "k", 10, now=T0) is False
    assert await store.dedup_seen("r", "k", 10, now=T0 + 5) is True
    assert await store.dedup_seen("r", "k", 10, now=T0 + 10) is False


@pytest.mark.parametrize("ttl", [0, None])
async def test_no_timeout_never_expires(store: SqliteStore, ttl: float | None) -> None:
    assert await store.dedup_seen("r", "k", ttl, now=T0) is False
    assert await store.dedup_seen("r", "k", ttl, now=T0 + 10 * 365 * 86400) is True


async def test_keys_are_scoped_per_route(store: SqliteStore) -> None:
    assert await store.dedup_seen("route-a", "k", 60, now=T0) is False
    assert await store.dedup_seen("route-b", "k", 60, now=T0) is False
    assert await store.dedup_seen("route-a", "k", 60, now=T0) is True
    assert await store.dedup_seen("route-b", "k", 60, now=T0) is True
    assert await store.dedup_count() == 2


async def test_negative_ttl_is_rejected(store: SqliteStore) -> None:
    with pytest.raises(ValueError, match="ttl_seconds"):
        await store.dedup_seen("r", "k", -1, now=T0)


async def test_keys_survive_a_restart(db_path) -> None:
    async with open_store(db_path) as store:
        assert await store.dedup_seen("r", "forever", None, now=T0) is False
        assert await store.dedup_seen("r", "short", 10, now=T0) is False
    async with open_store(db_path) as store:
        assert await store.dedup_seen("r", "forever", None, now=T0 + 100) is True
        assert await store.dedup_seen("r", "short", 10, now=T0 + 5) is True
        assert await store.dedup_seen("r", "short", 10, now=T0 + 10) is False
