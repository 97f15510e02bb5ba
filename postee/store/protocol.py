"""What the pipeline and the roles need from a store, as a `typing.Protocol`.

The pipeline (durable intake, dedup, aggregation), a runner's upstream outbox and the controller's
processed-id check are written against this, not against SQLite: `SqliteStore` satisfies it today, and a store
shared by several controllers (NATS KV, PostgreSQL) has to offer exactly these calls. Opening,
closing and maintenance (size limits, VACUUM) belong to the concrete store and its owner, the node.

Contract shared by every method:

- times (`now`) are wall-clock epoch seconds, i.e. `time.time()`, never `trio.current_time()`:
  they are kept across restarts and compared with times written by other processes. `now=None`
  means "the store's own `time.time()`"; callers that control time (tests, simulations) pass it;
- every call is atomic: it happens entirely or not at all, also when the caller is cancelled;
- failures of the storage itself raise `postee.store.StoreError` (or its `StoreClosed`);
  wrong arguments raise `ValueError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from postee.store.records import AcceptedEvent, OutboxItem, OutboxMessage, Outcome, UnfinishedEvent


class Store(Protocol):
    """The calls the pipeline, the upstream outbox and the roles make on the node's store."""

    # -- route plugins (pipeline) ----------------------------------------------------------------
    async def dedup_seen(
        self, route: str, key: str, ttl_seconds: float | None = None, now: float | None = None,
        event_id: str | None = None,
    ) -> bool:
        """Check-and-set `key` of `route`: True when it is present and live (drop the event).

        Otherwise the key is recorded with the expiry `now + ttl_seconds` (none when the ttl is 0 or
        None) and False is returned; a key is live while a later call's `now` is before its expiry.
        Keys are scoped per route. Concurrent calls for one key let exactly one caller through.
        A live key recorded with `event_id` is not a duplicate for that same event id (a replayed
        event must not drop itself); it keeps its first expiry.
        """
        ...

    async def aggregation_push(self, route: str, action: str, item: Mapping[str, Any], now: float | None = None,
                               event_id: str | None = None) -> int:
        """Append `item` (JSON-serialisable) to the (route, action) queue; return the queue length.

        With `event_id`, atomically record "queued" as that event's outcome for (route, action)
        (see `intake_progress`): a replay of the event does not queue it twice.
        """
        ...

    async def aggregation_take(self, route: str, action: str, limit: int | None = None,
                               taken_by: str | None = None) -> list[dict[str, Any]]:
        """Remove and return up to `limit` (all when None) items of the queue, oldest first.

        With `taken_by` the items leave the queue (no longer counted or taken) but are kept until
        `aggregation_delivered(taken_by)`, or put back by `aggregation_release`.
        """
        ...

    async def aggregation_delivered(self, taken_by: str) -> int:
        """Delete the items taken with `taken_by` (their aggregate was sent); return how many."""
        ...

    async def aggregation_release(self) -> int:
        """Put every taken item back in its queue at its place (at start: whoever took it died)."""
        ...

    # -- durable intake (pipeline and node) -----------------------------------------------------
    async def intake_add(self, event: AcceptedEvent, report: OutboxMessage | None = None,
                         processed_key: str | None = None, now: float | None = None) -> bool:
        """Keep an accepted event until it is finished; False, recording nothing, when its id is kept already.

        Atomically with it: `report` is added to the outbox (see `outbox_add`), and `processed_key`
        is marked processed (see `mark_processed`; already marked: False, nothing recorded). Called
        for every accepted event before it is answered, so concurrent calls must share a commit.
        """
        ...

    async def intake_progress(self, outcomes: Sequence[Outcome] = (), finished: Sequence[str] = ()) -> None:
        """Atomically record `outcomes` (those actions ran, sent or failed: a replay does not run them
        again), then forget the `finished` events (every route decided, every action they were
        handed to ended) and their outcomes."""
        ...

    async def intake_unfinished(self, after: int = 0, limit: int = ...) -> list[UnfinishedEvent]:
        """Up to `limit` unfinished events with `seq > after`, oldest first, each with its recorded outcomes."""
        ...

    # -- processed event ids (controller) --------------------------------------------------------
    async def mark_processed(self, event_id: str, now: float | None = None) -> bool:
        """Record `event_id`; True when it was new (process it), False when already recorded."""
        ...

    async def forget_processed(self, event_id: str) -> bool:
        """Undo `mark_processed` (the event could not be processed and will come again); True if it was there."""
        ...

    # -- the runner's outbox (upstream) ----------------------------------------------------------
    async def outbox_add(
        self, subject: str, payload: bytes, headers: Mapping[str, str] | None = None, now: float | None = None
    ) -> int:
        """Keep a message until `outbox_ack`; return its id (ids increase with insertion)."""
        ...

    async def outbox_pending(self, limit: int = ...) -> list[OutboxItem]:
        """Up to `limit` unacknowledged messages, oldest first; they stay until acknowledged."""
        ...

    async def outbox_ack(self, ids: Iterable[int]) -> int:
        """Delete the acknowledged messages; return how many existed."""
        ...

    async def outbox_count(self) -> int:
        """Number of unacknowledged messages."""
        ...

    # -- the `/reload` API key (node) ------------------------------------------------------------
    async def api_key(self) -> str:
        """The API key: generated and kept on first use, the same ever after (also across processes)."""
        ...

    async def set_api_key(self, value: str) -> None:
        """Replace the API key (from `POSTEE_API_KEY`); an empty key is a ValueError."""
        ...
