"""Counters, the API key and the key/value settings."""

import pytest
import trio

from postee.store import SqliteStore, open_store


async def test_counters(store: SqliteStore) -> None:
    assert await store.counters() == {}
    assert await store.counter_add("slack") == 1
    assert await store.counter_add("slack", 4) == 5
    assert await store.counter_add("email") == 1
    assert await store.counters() == {"email": 1, "slack": 5}


async def test_api_key_is_generated_once_and_persisted(db_path) -> None:
    async with open_store(db_path) as store:
        key = await store.api_key()
        assert len(key) >= 40
        assert await store.api_key() == key
    async with open_store(db_path) as store:
        assert await store.api_key() == key


async def test_set_api_key_replaces_it(db_path) -> None:
    async with open_store(db_path) as store:
        generated = await store.api_key()
        await store.set_api_key("from-env")
        assert await store.api_key() == "from-env" != generated
        with pytest.raises(ValueError):
            await store.set_api_key("")
    async with open_store(db_path) as store:
        assert await store.api_key() == "from-env"


async def test_two_stores_on_one_fresh_file_agree_on_the_api_key(db_path) -> None:
    # The daemon and `postee apikey` may open the same fresh file at the same moment.
    keys: list[str] = []
    async with open_store(db_path) as one, open_store(db_path) as two:

        async def read(store: SqliteStore) -> None:
            keys.append(await store.api_key())

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(read, one)
                nursery.start_soon(read, two)
    assert len(keys) == 20
    assert len(set(keys)) == 1


async def test_kv(store: SqliteStore) -> None:
    assert await store.kv_get("x") is None
    assert await store.kv_get("x", "default") == "default"
    await store.kv_set("x", "1")
    await store.kv_set("x", "2")
    assert await store.kv_get("x") == "2"
    assert await store.kv_delete("x") is True
    assert await store.kv_delete("x") is False
    assert await store.kv_get("x") is None
