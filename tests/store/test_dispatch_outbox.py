"""A controller keeps each runner's waiting steps in its outbox, under a subject per runner (issue #16):
read per runner past a cursor, acknowledged up to an id, expired after a time; and an intake record keeps
the step a handed-over event continues at."""

from __future__ import annotations

from postee.store.records import AcceptedEvent
from postee.store.sqlite import SqliteStore


async def test_per_subject_reads_acks_and_expiry(tmp_path):
    store = await SqliteStore.open(tmp_path / "s.db")
    try:
        a1 = await store.outbox_add("dispatch:a", b"1", {"n": "1"}, now=100.0)
        b1 = await store.outbox_add("dispatch:b", b"2", {}, now=100.0)
        a2 = await store.outbox_add("dispatch:a", b"3", {}, now=200.0)
        await store.outbox_add("dispatch_a", b"not a's", {}, now=50.0)  # another prefix altogether
        assert [i.id for i in await store.outbox_for("dispatch:a")] == [a1, a2]
        assert [i.payload for i in await store.outbox_for("dispatch:a", after=a1)] == [b"3"]
        assert await store.outbox_counts("dispatch:") == {"dispatch:a": 2, "dispatch:b": 1}
        assert await store.outbox_ack_upto("dispatch:a", a1) == 1
        assert [i.id for i in await store.outbox_for("dispatch:a")] == [a2]
        assert await store.outbox_expire("dispatch:a", older_than=150.0) == []  # a2 is newer
        expired = await store.outbox_expire("dispatch:b", older_than=150.0)
        assert [(i.id, i.subject) for i in expired] == [(b1, "dispatch:b")]
        assert await store.outbox_counts("dispatch:") == {"dispatch:a": 1}
        assert len(await store.outbox_for("dispatch_a")) == 1
    finally:
        await store.aclose()


async def test_an_unfinished_continuation_keeps_its_step(tmp_path):
    store = await SqliteStore.open(tmp_path / "s.db")
    try:
        kept = '{"step": 2, "only": false, "origin": "e1"}'
        await store.intake_add(AcceptedEvent("e1~x~2", "runner-a", "{}", 1.0, "r", kept))
        await store.intake_add(AcceptedEvent("e2", "webhook", "{}", 2.0))
        unfinished = await store.intake_unfinished()
        assert [(u.event.id, u.event.continuation) for u in unfinished] == [("e1~x~2", kept), ("e2", None)]
    finally:
        await store.aclose()


async def test_expiry_is_per_runner_never_by_a_name_that_starts_the_same(tmp_path):
    """Runner `a`'s expiry must not take runner `a2`'s steps (its subject starts with `dispatch:a` too)."""
    store = await SqliteStore.open(tmp_path / "s.db")
    try:
        await store.outbox_add("dispatch:a", b"a's", {"Postee-Step-Only": "1"}, now=100.0)
        await store.outbox_add("dispatch:a2", b"a2's", {"Postee-Step-Only": "1"}, now=100.0)
        await store.outbox_add("dispatch:a", b"a's chain", {"Postee-Step-Only": "0"}, now=100.0)
        expired = await store.outbox_expire("dispatch:a", 150.0, header=("Postee-Step-Only", "1"))
        assert [i.payload for i in expired] == [b"a's"]
        assert await store.outbox_counts("dispatch:") == {"dispatch:a": 1, "dispatch:a2": 1}
    finally:
        await store.aclose()
