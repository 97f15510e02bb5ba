"""The SQLite store: dedup keys, aggregation queues, counters, API key, processed ids, outbox, settings.

One connection per store, used by one worker thread at a time: every operation is a function of the
connection run through `trio.to_thread.run_sync` by a task holding the store's own
`CapacityLimiter(1)`, so the event loop never blocks on disk and calls from many tasks queue
(cancellably, in arrival order) for the connection instead of contending for SQLite's locks. Each
operation is one short transaction: a single statement where SQL allows it (`dedup_seen` is one
UPSERT ... RETURNING), else an explicit `BEGIN IMMEDIATE` so a read-then-write cannot interleave
with another process's write. Those functions of the connection are in
`postee.store.operations`; this module is the async side: the thread, the queue, cancellation.

The hot-path operations (`dedup_seen`, `mark_processed`, `counter_add`, and the durable intake's
`intake_add`, `intake_progress`, `aggregation_delivered`) go through a `Combiner`:
the calls queued at the same moment run together in one thread hop and one transaction (group
commit), which is what makes many route actors deduplicating at once, or many webhook requests
recording their events before they are answered, cheap. Results are exactly those of running the
calls one after another in queue order.

Commits are durable against a crash of the process (SIGKILL, the OOM killer): in WAL mode with
`synchronous = NORMAL` a committed transaction is in the WAL file, which the next open reads. A power
loss or an OS crash may lose the last transactions before a checkpoint (not corrupt the file).

Cancellation: waiting for the connection is an ordinary Trio wait. Once a statement runs, a SQLite
progress handler polls `trio.from_thread.check_cancelled()` every `PROGRESS_INTERVAL` virtual-machine
steps and aborts the statement when the caller was cancelled; the transaction is rolled back and
the caller gets `trio.Cancelled`. So a cancelled caller never sees a half-applied operation, and a
long VACUUM does not hold a shutdown hostage. The thread is never abandoned (`abandon_on_cancel`
stays False): a result that was committed is always handed back, never silently dropped. (A
batched call cancelled after its batch started is not interrupted: its batch-mates must not fail.)

**In the event loop** (`open_store(":memory:", in_loop=True)`): the same operations on an in-memory
database, called directly on the event loop instead of in a worker thread, so that a simulation under
Trio's virtual clock runs every store operation deterministically (no thread runs outside virtual
time). Everything else (the queue, the group commit, the transactions) is the same code; an operation
then cannot be interrupted by cancellation, which an in-memory database's operations never need.

Times are wall-clock epoch seconds (`time.time()`), not `trio.current_time()`: they are stored in a
file and must mean the same thing after a restart. Every time-dependent call takes an explicit
`now`, which is also how the tests control time; without one it is the runtime's wall clock
(`postee.runtime`: `time.time()` in the daemon, virtual time in a simulation).
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import outcome
import trio

from postee.runtime import wall_clock
from postee.store import operations as ops
from postee.store.checkpointer import Checkpointer
from postee.store.combiner import Combiner, Request
from postee.store.connection import MEMORY, corrupt_error, is_corruption, open_connection
from postee.store.errors import StoreClosed, StoreError
from postee.store.records import (
    AcceptedEvent,
    MaintenanceReport,
    OutboxItem,
    OutboxMessage,
    Outcome,
    PendingQueue,
    UnfinishedEvent,
)
from postee.store.schema import MIGRATIONS, Migration

T = TypeVar("T")

PROGRESS_INTERVAL = 1_000
"""SQLite VM steps between two cancellation checks: a few microseconds of work, so a cancelled
statement stops almost at once, while short statements (a few hundred steps) are rarely checked."""

DEFAULT_OUTBOX_BATCH = 100
"""How many outbox items `outbox_pending` returns by default."""

DEFAULT_INTAKE_BATCH = 100
"""How many unfinished events `intake_unfinished` returns by default (a replay reads them page by page)."""

DEFAULT_PROCESSED_RETENTION = 7 * 24 * 3600.0
"""Seconds a processed event id is remembered: longer than any plausible redelivery of an event."""

EVICTION_HEADROOM = 0.1
"""When over the size limit, evict down to this fraction *below* it, so that the next events do not
push the database straight back over and every maintenance pass has to rewrite the file."""

MAX_EVICTION_ROUNDS = 8
"""Evict-then-measure rounds per maintenance pass; the size estimate is usually right the first time."""

API_KEY_SETTING = "api_key"
"""The `kv` key under which the `/reload` API key is kept."""

API_KEY_BYTES = 32
"""Entropy of a generated API key (`secrets.token_urlsafe`), 256 bits."""


ORPHAN_OUTCOMES = "DELETE FROM outcomes WHERE event_id NOT IN (SELECT event_id FROM intake)"
"""Outcomes written after their event was finished and forgotten (a late write): nothing reads them."""


class SqliteStore:
    """An open store. Create it with `open_store(path)` (async with) or `await SqliteStore.open(path)`."""

    def __init__(self, conn: sqlite3.Connection, path: str, *, in_loop: bool = False) -> None:
        """Use `SqliteStore.open`: this only wraps an already configured connection."""
        self._conn: sqlite3.Connection | None = conn
        self._path = path
        self._in_loop = in_loop
        self._limiter = trio.CapacityLimiter(1)
        """Held by the task whose operation owns the connection (FIFO, so calls run in arrival order)."""
        self._thread_limiter = trio.CapacityLimiter(1)
        """For `to_thread` itself; never contended, since its callers hold `_limiter`."""
        self._combiner = Combiner(self._limiter, self._run_batch, in_loop=in_loop)
        self._checkpointer = Checkpointer(path) if path != MEMORY else None
        self._cancelled: BaseException | None = None
        self._interruptible = False
        conn.set_progress_handler(self._progress, PROGRESS_INTERVAL)

    @classmethod
    async def open(cls, path: str | os.PathLike[str], *, migrations: Sequence[Migration] = MIGRATIONS,
                   in_loop: bool = False) -> SqliteStore:
        """Open (creating if needed) the database at `path`; raises `StoreError` naming the path.

        `migrations` is the schema history (see `postee.store.schema`); tests pass a longer one to
        exercise the upgrade path. `in_loop` (only for `":memory:"`): run every operation on the event
        loop, for deterministic simulation (see the module docstring).
        """
        name = os.fspath(path)
        if in_loop:
            if name != MEMORY:
                raise ValueError("a store runs in the event loop only in memory (':memory:'): a file needs a thread")
            conn = open_connection(name, migrations)
            await trio.lowlevel.checkpoint()
        else:
            conn = await trio.to_thread.run_sync(open_connection, name, migrations)
        return cls(conn, name, in_loop=in_loop)

    @property
    def path(self) -> str:
        return self._path

    @property
    def closed(self) -> bool:
        return self._conn is None

    async def aclose(self) -> None:
        """Wait for the operation in progress, then close the connection. Idempotent.

        Shielded: a store that is being closed because its owner was cancelled must still close
        (and checkpoint its WAL); the wait is bounded by one short operation, which is itself
        interrupted if its own caller was cancelled.
        """
        with trio.CancelScope(shield=True):
            if self._checkpointer is not None:
                await self._checkpointer.aclose()
            async with self._limiter:
                conn, self._conn = self._conn, None
                if conn is not None:
                    if self._in_loop:
                        conn.close()
                    else:
                        await trio.to_thread.run_sync(conn.close)

    async def __aenter__(self) -> SqliteStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- running operations ------------------------------------------------------------------
    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(connection, *args)` in a worker thread (on the loop when `in_loop`), alone on the connection."""
        async with self._limiter:
            if self._in_loop:
                result = self._run(fn, args)
                await trio.lowlevel.checkpoint()
                return result
            return await trio.to_thread.run_sync(self._run, fn, args, limiter=self._thread_limiter)

    async def _call_batched(self, fn: Callable[..., T], *args: Any) -> T:
        """Like `_call`, for single-statement hot-path operations that may share a transaction
        with the concurrent calls queued at the same moment (see `postee.store.combiner`)."""
        return await self._combiner.submit(fn, args)

    def _connection(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:
            raise StoreClosed(f"the store {self._path!r} is closed")
        return conn

    def _wrap(self, exc: sqlite3.Error) -> StoreError:
        if is_corruption(exc):
            return corrupt_error(self._path, exc)
        return StoreError(f"{self._path}: {exc}")

    def _run(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        conn = self._connection()
        self._cancelled = None
        self._interruptible = True
        try:
            return fn(conn, *args)
        except sqlite3.Error as exc:
            ops.rollback(conn)
            cancelled, self._cancelled = self._cancelled, None
            if cancelled is not None:
                raise cancelled from None
            raise self._wrap(exc) from exc
        except BaseException:
            ops.rollback(conn)
            raise
        finally:
            self._interruptible = False

    def _run_batch(self, batch: list[Request]) -> None:
        """Run queued calls in order in one transaction, setting each request's result.

        When the shared transaction fails, it is rolled back and each call is run again alone, so
        one bad call fails only its own caller. Not interruptible: the batch belongs to several
        callers and one of them being cancelled must not fail the others (a batch of single
        statements takes milliseconds at most).
        """
        try:
            conn = self._connection()
            with ops.write_transaction(conn):
                results = [request.fn(conn, *request.args) for request in batch]
        except StoreClosed:
            for request in batch:
                request.result = outcome.Error(StoreClosed(f"the store {self._path!r} is closed"))
        except Exception:
            for request in batch:
                request.result = outcome.capture(self._run_alone, conn, request)
        else:
            for request, result in zip(batch, results, strict=True):
                request.result = outcome.Value(result)

    def _run_alone(self, conn: sqlite3.Connection, request: Request) -> Any:
        try:
            return request.fn(conn, *request.args)
        except sqlite3.Error as exc:
            ops.rollback(conn)
            raise self._wrap(exc) from exc

    def _progress(self) -> int:
        """SQLite progress handler: a non-zero return aborts the running statement."""
        if not self._interruptible:
            return 0
        try:
            trio.from_thread.check_cancelled()
        except trio.Cancelled as exc:
            self._cancelled = exc
            return 1
        except RuntimeError:  # not in a Trio worker thread (opening, closing): nothing to cancel
            return 0
        return 0

    # -- dedup -------------------------------------------------------------------------------
    async def dedup_seen(
        self, route: str, key: str, ttl_seconds: float | None = None, now: float | None = None,
        event_id: str | None = None,
    ) -> bool:
        """Check-and-set a dedup key of `route`: True when it is present and live (drop the event).

        Otherwise the key is recorded, expiring at `now + ttl_seconds` (never when the ttl is 0 or
        None, as in Postee without `unique-message-timeout`), and False is returned. A key is live
        while `now < expiry`. Keys are scoped per route: the same key in two routes is two keys.
        A key recorded by `event_id` does not make that same event a duplicate (its replay after a
        crash); its expiry stays as first recorded.
        """
        if ttl_seconds is not None and ttl_seconds < 0:
            raise ValueError(f"ttl_seconds must be >= 0, not {ttl_seconds!r}")
        now = wall_clock() if now is None else now
        expires = now + ttl_seconds if ttl_seconds else None
        return await self._call_batched(ops.dedup_seen, route, key, expires, now, event_id)

    async def dedup_count(self) -> int:
        """Number of dedup keys stored (live or expired but not yet cleaned up), for metrics."""
        return await self._call(ops.scalar, "SELECT count(*) FROM dedup", ())

    # -- aggregation -------------------------------------------------------------------------
    async def aggregation_push(self, route: str, action: str, item: Mapping[str, Any], now: float | None = None,
                               event_id: str | None = None) -> int:
        """Append `item` (JSON-serialisable) to the (route, action) queue; return the queue length.

        With `event_id`, the same transaction records "queued" as that event's outcome for (route,
        action), so a replay of the event knows not to queue it again.
        """
        encoded = json.dumps(item, separators=(",", ":"))
        now = wall_clock() if now is None else now
        return await self._call(ops.aggregation_push, route, action, encoded, now, event_id)

    async def aggregation_take(self, route: str, action: str, limit: int | None = None,
                               taken_by: str | None = None) -> list[dict[str, Any]]:
        """Remove and return up to `limit` (all when None) items of the queue, oldest first.

        With `taken_by`, the items leave the queue but stay in the store, marked with it, until
        `aggregation_delivered(taken_by)`; `aggregation_release` puts them back (after a crash).
        """
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0 or None, not {limit!r}")
        if limit == 0:
            return []
        rows = await self._call(ops.aggregation_take, route, action, -1 if limit is None else limit, taken_by)
        return [json.loads(item) for item in rows]

    async def aggregation_delivered(self, taken_by: str) -> int:
        """Delete the items taken by `taken_by` (their aggregate was sent); return how many."""
        return await self._call_batched(ops.execute, "DELETE FROM aggregation WHERE taken_by = ?", (taken_by,))

    async def aggregation_release(self) -> int:
        """Put every taken item back in its queue, in its place (at start: its sender died); return how many."""
        sql = "UPDATE aggregation SET taken_by = NULL WHERE taken_by IS NOT NULL"
        return await self._call(ops.execute, sql, ())

    async def aggregation_pending(self) -> list[PendingQueue]:
        """Every non-empty queue with its length and the time its oldest item was pushed."""
        return await self._call(ops.aggregation_pending)

    # -- durable intake ----------------------------------------------------------------------
    async def intake_add(self, event: AcceptedEvent, report: OutboxMessage | None = None,
                         processed_key: str | None = None, now: float | None = None) -> bool:
        """Record an accepted event until it is finished; False (nothing recorded) when its id is there already.

        In the same transaction: `report` goes into the outbox (a runner's report of the event
        upstream, so an event is reported exactly when it is recorded) and `processed_key` is
        marked processed (False, nothing recorded, when it already was: see `mark_processed`).
        Batched with concurrent calls (group commit).
        """
        now = wall_clock() if now is None else now
        return await self._call_batched(ops.intake_add, event, report, processed_key, now)

    async def intake_progress(self, outcomes: Sequence[Outcome] = (), finished: Sequence[str] = ()) -> None:
        """Record action outcomes (a replay skips those actions), then forget the `finished` events
        and their outcomes; all in one transaction, batched with concurrent calls."""
        if outcomes or finished:
            await self._call_batched(ops.intake_progress, tuple(outcomes), tuple(finished))

    async def intake_unfinished(self, after: int = 0, limit: int = DEFAULT_INTAKE_BATCH) -> list[UnfinishedEvent]:
        """Up to `limit` recorded, unfinished events with `seq > after`, in arrival order, with their outcomes."""
        return await self._call(ops.intake_unfinished, after, limit)

    async def intake_count(self) -> int:
        """Number of unfinished events recorded."""
        return await self._call(ops.scalar, "SELECT count(*) FROM intake", ())

    # -- counters ----------------------------------------------------------------------------
    async def counter_add(self, name: str, n: int = 1) -> int:
        """Add `n` to the counter `name` (created at 0); return its new value."""
        return await self._call_batched(ops.counter_add, name, n)

    async def counters(self) -> dict[str, int]:
        """All counters by name."""
        return await self._call(ops.counters)

    # -- API key and settings ----------------------------------------------------------------
    async def api_key(self) -> str:
        """The `/reload` API key: generated and persisted on first use, the same ever after.

        Atomic across processes, so `postee apikey` and the daemon agree even on a fresh file.
        """
        return await self._call(ops.setting_default, API_KEY_SETTING, secrets.token_urlsafe(API_KEY_BYTES))

    async def set_api_key(self, value: str) -> None:
        """Replace the API key (from `POSTEE_API_KEY`)."""
        if not value:
            raise ValueError("the API key must not be empty")
        await self.kv_set(API_KEY_SETTING, value)

    async def kv_get(self, key: str, default: str | None = None) -> str | None:
        """The setting `key`, or `default` when unset."""
        value = await self._call(ops.scalar, "SELECT value FROM kv WHERE key = ?", (key,))
        return default if value is None else value

    async def kv_set(self, key: str, value: str) -> None:
        """Set the setting `key` to `value`."""
        await self._call(ops.execute, "INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, value))

    async def kv_delete(self, key: str) -> bool:
        """Remove the setting `key`; True when it existed."""
        return await self._call(ops.execute, "DELETE FROM kv WHERE key = ?", (key,)) > 0

    # -- processed event ids -----------------------------------------------------------------
    async def mark_processed(self, event_id: str, now: float | None = None) -> bool:
        """Record that `event_id` was processed; True when it was new (process it), False if seen.

        Ids are forgotten by `maintenance` after its `processed_retention`.
        """
        now = wall_clock() if now is None else now
        return await self._call_batched(ops.mark_processed, event_id, now)

    async def processed_exists(self, event_id: str) -> bool:
        """Whether `event_id` is recorded as processed (and not forgotten yet)."""
        return bool(await self._call(ops.scalar, "SELECT count(*) FROM processed WHERE event_id = ?", (event_id,)))

    async def forget_processed(self, event_id: str) -> bool:
        """Undo `mark_processed` for an event that could not be processed after all (it will come again)."""
        return await self._call(ops.execute, "DELETE FROM processed WHERE event_id = ?", (event_id,)) > 0

    # -- outbox ------------------------------------------------------------------------------
    async def outbox_add(
        self, subject: str, payload: bytes, headers: Mapping[str, str] | None = None, now: float | None = None
    ) -> int:
        """Keep a message until `outbox_ack`; return its id (ids increase with insertion)."""
        encoded = json.dumps(dict(headers or {}), separators=(",", ":"))
        now = wall_clock() if now is None else now
        return await self._call(ops.outbox_add, subject, bytes(payload), encoded, now)

    async def outbox_pending(self, limit: int = DEFAULT_OUTBOX_BATCH) -> list[OutboxItem]:
        """Up to `limit` unacknowledged messages, oldest first (they stay until acknowledged)."""
        return await self._call(ops.outbox_pending, limit)

    async def outbox_ack(self, ids: Iterable[int]) -> int:
        """Delete the acknowledged messages; return how many existed."""
        encoded = json.dumps([int(i) for i in ids])
        if encoded == "[]":
            return 0
        sql = "DELETE FROM outbox WHERE id IN (SELECT value FROM json_each(?))"
        return await self._call(ops.execute, sql, (encoded,))

    async def outbox_count(self) -> int:
        """Number of unacknowledged messages."""
        return await self._call(ops.scalar, "SELECT count(*) FROM outbox", ())

    async def outbox_for(self, subject: str, after: int = 0, limit: int = DEFAULT_OUTBOX_BATCH) -> list[OutboxItem]:
        """Up to `limit` messages kept under `subject` with an id past `after`, oldest first."""
        return await self._call(ops.outbox_for, subject, after, limit)

    async def outbox_ack_upto(self, subject: str, upto: int) -> int:
        """Delete the messages under `subject` up to id `upto` (their receiver has them); return how many."""
        sql = "DELETE FROM outbox WHERE subject = ? AND id <= ?"
        return await self._call(ops.execute, sql, (subject, int(upto)))

    async def outbox_expire(self, subject: str, older_than: float, *, header: tuple[str, str] | None = None
                            ) -> list[OutboxItem]:
        """Delete and return the messages under `subject` added before `older_than` (only those with
        `header` = (name, value), when given)."""
        return await self._call(ops.outbox_expire, subject, older_than, header)

    async def outbox_counts(self, prefix: str) -> dict[str, int]:
        """Messages kept per subject, for subjects starting with `prefix`."""
        return await self._call(ops.outbox_counts, prefix)

    # -- maintenance -------------------------------------------------------------------------
    async def checkpoint(self) -> int:
        """Copy the WAL into the database file from a second connection, without blocking the store's
        writes (see `postee.store.checkpointer`); return how many WAL pages are left to copy."""
        if self._checkpointer is None or self.closed:
            return 0
        try:
            return await self._checkpointer.checkpoint()
        except sqlite3.Error as exc:
            raise self._wrap(exc) from exc

    async def size(self) -> int:
        """Database size in bytes (`page_count * page_size`, after checkpointing the WAL into it)."""
        return await self._call(ops.checkpointed_size)

    async def maintenance(
        self,
        now: float | None = None,
        max_size_bytes: int | None = None,
        processed_retention: float = DEFAULT_PROCESSED_RETENTION,
    ) -> MaintenanceReport:
        """Delete expired dedup keys and old processed ids; enforce the size limit.

        Over `max_size_bytes` (None or 0: unlimited), the oldest dedup keys are evicted, the file
        is rewritten (VACUUM) and measured again, until it is under the limit. Only dedup keys are
        evicted, as in Postee: aggregation queues and the outbox hold messages not yet delivered, so
        when they alone exceed the limit the report says `over_limit` and they are kept. Each step
        is a separate operation, so other calls interleave with a long maintenance pass.
        """
        now = wall_clock() if now is None else now
        size_before = await self._call(ops.checkpointed_size)
        expired = await self._call(ops.execute, "DELETE FROM dedup WHERE expires IS NOT NULL AND expires <= ?", (now,))
        pruned = await self._call(ops.execute, "DELETE FROM processed WHERE ts < ?", (now - processed_retention,))
        orphans = await self._call(ops.execute, ORPHAN_OUTCOMES, ())
        if not max_size_bytes or size_before <= max_size_bytes:
            size_after = await self._call(ops.checkpointed_size)
            return MaintenanceReport(expired, 0, pruned, size_before, size_after, outcomes_pruned=orphans)
        # Deleted rows only free space once the file is rewritten: measure after a VACUUM.
        size = await self._call(ops.vacuum)
        target = max_size_bytes * (1 - EVICTION_HEADROOM)
        evicted = 0
        for _ in range(MAX_EVICTION_ROUNDS):
            if size <= max_size_bytes:
                break
            removed = await self._call(ops.evict_oldest, size - target)
            if removed == 0:
                break
            evicted += removed
            size = await self._call(ops.vacuum)
        return MaintenanceReport(
            expired, evicted, pruned, size_before, size, vacuumed=True, over_limit=size > max_size_bytes,
            outcomes_pruned=orphans,
        )


@asynccontextmanager
async def open_store(
    path: str | os.PathLike[str], *, migrations: Sequence[Migration] = MIGRATIONS, in_loop: bool = False
) -> AsyncIterator[SqliteStore]:
    """`async with open_store(path) as store:` opens the store and closes it on exit."""
    store = await SqliteStore.open(path, migrations=migrations, in_loop=in_loop)
    async with store:
        yield store
