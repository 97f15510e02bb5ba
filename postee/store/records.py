"""Plain data returned by the store: what a caller reads back, never a live database row."""

from __future__ import annotations

from typing import NamedTuple

import attrs


@attrs.frozen
class OutboxItem:
    """A message kept until the upstream acknowledges it (see `Store.outbox_add`)."""

    id: int
    subject: str
    payload: bytes
    headers: dict[str, str]
    created: float
    """Wall-clock time (epoch seconds) at which it was added."""


@attrs.frozen
class OutboxMessage:
    """A message to keep in the outbox (see `Store.outbox_add`), e.g. a runner's report of an event."""

    subject: str
    payload: bytes
    headers: dict[str, str] = attrs.field(factory=dict)


@attrs.frozen
class AcceptedEvent:
    """An accepted event as the store keeps it until it is finished (see `Store.intake_add`)."""

    id: str
    source: str
    text: str
    """The event's JSON text as received."""
    received_at: float
    route: str | None = None
    """The one route a tenant event was posted to; None for every route."""
    continuation: str | None = None
    """For an event another side handed over (`postee.pipeline.plan`): its step, as JSON
    (`{"step": n, "only": bool, "origin": id}`); None for a new event."""


@attrs.frozen
class Outcome:
    """That an action ran for an accepted event on a route (see `Store.intake_progress`)."""

    event_id: str
    route: str
    action: str
    ok: bool


@attrs.frozen
class UnfinishedEvent:
    """An accepted event not yet finished, with the action outcomes recorded for it so far."""

    seq: int
    """Its place in arrival order."""
    event: AcceptedEvent
    outcomes: frozenset[tuple[str, str]]
    """(route, action) pairs whose outcome is recorded: not to run again."""


class PendingQueue(NamedTuple):
    """One non-empty aggregation queue, as listed by `SqliteStore.aggregation_pending`.

    A tuple rather than an attrs class so callers can unpack `(route, action, count, oldest_ts)`
    directly, which is how the aggregation timer walks the list.
    """

    route: str
    action: str
    count: int
    oldest_ts: float


@attrs.frozen
class MaintenanceReport:
    """What one maintenance pass did, for the log line and the metrics."""

    expired: int = 0
    """Dedup keys deleted because their timeout had passed."""
    evicted: int = 0
    """Unexpired dedup keys deleted (oldest first) because the database was over its size limit."""
    processed_pruned: int = 0
    """Processed event ids older than the retention period deleted."""
    size_before: int = 0
    """Database size in bytes (`page_count * page_size` after a WAL checkpoint) at the start."""
    size_after: int = 0
    """Database size in bytes at the end."""
    vacuumed: bool = False
    """Whether the file was rewritten (VACUUM) to give the freed pages back to the filesystem."""
    over_limit: bool = False
    """Still over the limit at the end: nothing evictable is left (queues and outbox are never evicted)."""
    outcomes_pruned: int = 0
    """Action outcomes of events no longer in the intake deleted (written after their event finished)."""
