"""The store calls behind durable intake: accepted events, outcomes, replay records, taken aggregates."""

from __future__ import annotations

from postee.store import AcceptedEvent, OutboxMessage, Outcome

EVENT = AcceptedEvent("e1", "webhook", '{"n": 1}', 1_700_000_000.0)


async def test_an_event_is_kept_with_its_outcomes_until_finished(store):
    assert await store.intake_add(EVENT)
    assert not await store.intake_add(EVENT)  # the same id again: a duplicate, nothing recorded
    other = AcceptedEvent("e2", "runner-1", '{"n": 2}', 1_700_000_001.0, route="r")
    assert await store.intake_add(other)
    await store.intake_progress([Outcome("e1", "r", "a", True), Outcome("e1", "r", "b", False)])
    first, second = await store.intake_unfinished()
    assert first.event == EVENT and first.outcomes == {("r", "a"), ("r", "b")}
    assert second.event == other and second.outcomes == frozenset() and second.seq > first.seq
    assert [u.event.id for u in await store.intake_unfinished(after=first.seq)] == ["e2"]
    assert [u.event.id for u in await store.intake_unfinished(limit=1)] == ["e1"]
    await store.intake_progress(finished=["e1"])
    assert [u.event.id for u in await store.intake_unfinished()] == ["e2"]
    assert (await store.maintenance()).outcomes_pruned == 0  # e1's outcomes went with it


async def test_the_report_and_the_processed_mark_are_recorded_with_the_event_or_not_at_all(store):
    report = OutboxMessage("postee.events", b'{"n": 1}', {"Postee-Event-Id": "e1"})
    assert await store.intake_add(EVENT, report, processed_key="runner-1:e1")
    assert [item.headers for item in await store.outbox_pending()] == [{"Postee-Event-Id": "e1"}]
    # a resend: already processed, so neither the event nor a second report is recorded
    await store.intake_progress(finished=["e1"])
    assert not await store.intake_add(EVENT, report, processed_key="runner-1:e1")
    assert await store.outbox_count() == 1 and await store.intake_unfinished() == []


async def test_a_dedup_key_does_not_make_its_own_event_a_duplicate(store):
    assert not await store.dedup_seen("r", "k", 60, 100.0, "e1")
    assert not await store.dedup_seen("r", "k", 60, 130.0, "e1")  # e1 replayed: not a duplicate of itself
    assert await store.dedup_seen("r", "k", 60, 150.0, "e2")  # another event: a duplicate
    assert await store.dedup_seen("r", "k", 60, 159.9, "e2")  # the replay kept the first expiry (160)
    assert not await store.dedup_seen("r", "k", 60, 160.0, "e2")


async def test_taken_aggregates_leave_the_queue_until_delivered_or_released(store):
    for n in range(3):
        await store.aggregation_push("r", "a", {"n": n}, event_id=f"e{n}" if n else None)
    assert await store.intake_add(AcceptedEvent("e1", "webhook", "{}", 0.0))
    (unfinished,) = await store.intake_unfinished()
    assert unfinished.outcomes == {("r", "a")}  # queued: a replay does not queue it again
    assert await store.aggregation_take("r", "a", 2, "sender-1") == [{"n": 0}, {"n": 1}]
    assert [q.count for q in await store.aggregation_pending()] == [1]
    assert await store.aggregation_push("r", "a", {"n": 3}) == 2  # taken items are not counted
    assert await store.aggregation_release() == 2  # their sender died: back in the queue, in place
    assert await store.aggregation_take("r", "a", None, "sender-2") == [{"n": n} for n in range(4)]
    assert await store.aggregation_delivered("sender-2") == 4
    assert await store.aggregation_release() == 0 and await store.aggregation_pending() == []


async def test_a_checkpoint_copies_the_wal_into_the_database_file(file_store, db_path):
    before = db_path.stat().st_size
    for n in range(50):
        await file_store.intake_add(AcceptedEvent(f"e{n}", "webhook", "x" * 10_000, 0.0))
    assert db_path.stat().st_size == before  # all in the WAL so far
    assert await file_store.checkpoint() == 0  # nothing left to copy
    assert db_path.stat().st_size > before + 50 * 10_000
