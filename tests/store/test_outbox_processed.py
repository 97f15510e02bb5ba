"""The durable outbox and the processed-event ids."""

from postee.store import SqliteStore, open_store

T0 = 1_700_000_000.0


async def test_outbox_keeps_messages_until_acknowledged(store: SqliteStore) -> None:
    ids = [
        await store.outbox_add(f"postee.events.{i}", bytes([i, 0, 255]), {"n": str(i)}, now=T0 + i) for i in range(5)
    ]
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert await store.outbox_count() == 5
    first = await store.outbox_pending(limit=2)
    assert [(m.id, m.subject, m.payload, m.headers, m.created) for m in first] == [
        (ids[0], "postee.events.0", b"\x00\x00\xff", {"n": "0"}, T0),
        (ids[1], "postee.events.1", b"\x01\x00\xff", {"n": "1"}, T0 + 1),
    ]
    # Reading does not remove: the same items come back until acknowledged.
    assert await store.outbox_pending(limit=2) == first
    assert await store.outbox_ack([ids[0], ids[1], 10_000]) == 2
    assert await store.outbox_ack([]) == 0
    assert [m.id for m in await store.outbox_pending()] == ids[2:]
    assert await store.outbox_count() == 3


async def test_outbox_without_headers(store: SqliteStore) -> None:
    await store.outbox_add("s", b"", now=T0)
    (item,) = await store.outbox_pending()
    assert (item.payload, item.headers) == (b"", {})


async def test_outbox_survives_a_restart(db_path) -> None:
    async with open_store(db_path) as store:
        kept = await store.outbox_add("up", b"payload", {"Nats-Msg-Id": "e1"}, now=T0)
        acked = await store.outbox_add("up", b"gone", now=T0)
        await store.outbox_ack([acked])
    async with open_store(db_path) as store:
        assert [(m.id, m.payload, m.headers) for m in await store.outbox_pending()] == [
            (kept, b"payload", {"Nats-Msg-Id": "e1"})
        ]
        # Ids are never reused, even for the acknowledged last one.
        assert await store.outbox_add("up", b"new", now=T0) > acked


async def test_mark_processed_once(store: SqliteStore) -> None:
    assert await store.mark_processed("evt-1", now=T0) is True
    assert await store.mark_processed("evt-1", now=T0 + 1) is False
    assert await store.mark_processed("evt-2", now=T0 + 1) is True


async def test_processed_ids_are_pruned_after_retention(store: SqliteStore) -> None:
    assert await store.mark_processed("old", now=T0)
    assert await store.mark_processed("recent", now=T0 + 50)
    report = await store.maintenance(now=T0 + 100, processed_retention=60)
    assert report.processed_pruned == 1
    assert await store.mark_processed("old", now=T0 + 100) is True  # forgotten
    assert await store.mark_processed("recent", now=T0 + 100) is False  # remembered


async def test_forget_processed_lets_an_event_be_processed_again(store):
    assert await store.mark_processed("runner-1:e1", now=1.0)
    assert not await store.mark_processed("runner-1:e1", now=2.0)
    assert await store.forget_processed("runner-1:e1")
    assert not await store.forget_processed("runner-1:e1")
    assert await store.mark_processed("runner-1:e1", now=3.0)
