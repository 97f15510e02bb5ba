"""What each store call does in SQL: functions of a connection, run in the store's worker thread.

`postee.store.sqlite.SqliteStore` owns the connection and decides when and in which thread these run
(alone, or batched into one transaction); each function here is one short transaction: a single
statement where SQL allows it, else `write_transaction` (BEGIN IMMEDIATE), so a read-then-write
cannot interleave with another process's write. Times are the epoch seconds the caller passes.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from postee.store.records import AcceptedEvent, OutboxItem, OutboxMessage, Outcome, PendingQueue, UnfinishedEvent

DEDUP_TABLES = ("dedup", "dedup_by_created", "dedup_by_expires")
"""The dedup table and its indexes: what evicting dedup keys frees (measured with `dbstat`)."""

DEDUP_SEEN = """
INSERT INTO dedup (route, key, expires, created, event_id) VALUES (?1, ?2, ?3, ?4, ?5)
ON CONFLICT (route, key) DO UPDATE SET
    expires = CASE WHEN dedup.event_id = excluded.event_id THEN dedup.expires ELSE excluded.expires END,
    created = CASE WHEN dedup.event_id = excluded.event_id THEN dedup.created ELSE excluded.created END,
    event_id = excluded.event_id
    WHERE (dedup.expires IS NOT NULL AND dedup.expires <= excluded.created) OR dedup.event_id = excluded.event_id
RETURNING 1
"""
# A row comes back when the key was inserted, or replaced because it had expired, or was recorded by
# this same event (a replay after a crash, which must not drop itself): "not seen". No row: the key
# exists, is live and belongs to another event: "seen". One statement, one implicit transaction.


def rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.rollback()
        except sqlite3.Error:  # the original error is the interesting one
            pass


@contextmanager
def atomic(conn: sqlite3.Connection) -> Iterator[None]:
    """All or nothing: inside a batch's transaction (the batch is rolled back and rerun call by call
    when one call fails), else in a transaction of its own."""
    if conn.in_transaction:
        yield
        return
    with write_transaction(conn):
        yield


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE: take the write lock up front so a read-then-write never fails half-way."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        rollback(conn)
        raise
    conn.execute("COMMIT")


def scalar(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> Any:
    row = conn.execute(sql, params).fetchone()
    return None if row is None else row[0]


def execute(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> int:
    return conn.execute(sql, params).rowcount


def dedup_seen(conn: sqlite3.Connection, route: str, key: str, expires: float | None, now: float,
               event_id: str | None) -> bool:
    return not conn.execute(DEDUP_SEEN, (route, key, expires, now, event_id)).fetchall()


def aggregation_push(conn: sqlite3.Connection, route: str, action: str, item: str, now: float,
                     event_id: str | None) -> int:
    with write_transaction(conn):
        conn.execute(
            "INSERT INTO aggregation (route, action, item, ts) VALUES (?, ?, ?, ?)", (route, action, item, now)
        )
        if event_id is not None:  # the event's outcome for this action: queued (a replay must not queue it again)
            record_outcome(conn, event_id, route, action, "queued")
        (count,) = conn.execute(
            "SELECT count(*) FROM aggregation WHERE route = ? AND action = ? AND taken_by IS NULL", (route, action)
        ).fetchone()
    return count


def aggregation_take(conn: sqlite3.Connection, route: str, action: str, limit: int, taken_by: str | None) -> list[str]:
    with write_transaction(conn):
        rows = conn.execute(
            "SELECT id, item FROM aggregation WHERE route = ? AND action = ? AND taken_by IS NULL ORDER BY id LIMIT ?",
            (route, action, limit),
        ).fetchall()
        if rows:
            # The first `limit` ids of the queue are exactly those up to the last one read.
            where = "route = ? AND action = ? AND taken_by IS NULL AND id <= ?"
            if taken_by is None:
                conn.execute(f"DELETE FROM aggregation WHERE {where}", (route, action, rows[-1][0]))
            else:  # kept, out of the queue, until the batch is delivered (`aggregation_delivered`)
                params = (taken_by, route, action, rows[-1][0])
                conn.execute(f"UPDATE aggregation SET taken_by = ? WHERE {where}", params)
    return [item for _, item in rows]


def aggregation_pending(conn: sqlite3.Connection) -> list[PendingQueue]:
    rows = conn.execute(
        "SELECT route, action, count(*), min(ts) FROM aggregation WHERE taken_by IS NULL "
        "GROUP BY route, action ORDER BY route, action"
    ).fetchall()
    return [PendingQueue(*row) for row in rows]


def counter_add(conn: sqlite3.Connection, name: str, n: int) -> int:
    (value,) = conn.execute(
        "INSERT INTO counters (name, value) VALUES (?, ?) "
        "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value RETURNING value",
        (name, n),
    ).fetchall()[0]
    return value


def counters(conn: sqlite3.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT name, value FROM counters ORDER BY name").fetchall())


def setting_default(conn: sqlite3.Connection, key: str, candidate: str) -> str:
    """The setting, set to `candidate` first if absent: one statement, atomic across processes."""
    # DO UPDATE with a no-op assignment (not DO NOTHING) so RETURNING yields the existing row too.
    (value,) = conn.execute(
        "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = kv.value RETURNING value",
        (key, candidate),
    ).fetchall()[0]
    return value


def mark_processed(conn: sqlite3.Connection, event_id: str, now: float) -> bool:
    return bool(
        conn.execute(
            "INSERT INTO processed (event_id, ts) VALUES (?, ?) ON CONFLICT (event_id) DO NOTHING RETURNING 1",
            (event_id, now),
        ).fetchall()
    )


def record_outcome(conn: sqlite3.Connection, event_id: str, route: str, action: str, status: str) -> None:
    conn.execute(
        "INSERT INTO outcomes (event_id, route, action, status) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (event_id, route, action) DO UPDATE SET status = excluded.status",
        (event_id, route, action, status),
    )


def intake_add(conn: sqlite3.Connection, event: AcceptedEvent, report: OutboxMessage | None,
               processed_key: str | None, now: float) -> bool:
    """The event, its upstream report and its processed mark, all or nothing; False for a known id or key."""
    with atomic(conn):
        if processed_key is not None and not mark_processed(conn, processed_key, now):
            return False
        new = conn.execute(
            "INSERT INTO intake (event_id, source, route, body, received_at, continuation) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (event_id) DO NOTHING RETURNING 1",
            (event.id, event.source, event.route, event.text, event.received_at, event.continuation),
        ).fetchall()
        if new and report is not None:
            headers = json.dumps(report.headers, separators=(",", ":"))
            outbox_add(conn, report.subject, bytes(report.payload), headers, now)
    return bool(new)


def intake_progress(conn: sqlite3.Connection, outcomes: Sequence[Outcome], finished: Sequence[str]) -> None:
    """Record outcomes, then forget the finished events and their outcomes, all or nothing."""
    with atomic(conn):
        conn.executemany(
            "INSERT INTO outcomes (event_id, route, action, status) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (event_id, route, action) DO UPDATE SET status = excluded.status",
            [(o.event_id, o.route, o.action, "sent" if o.ok else "failed") for o in outcomes],
        )
        if finished:
            ids = json.dumps(list(finished))
            conn.execute("DELETE FROM outcomes WHERE event_id IN (SELECT value FROM json_each(?))", (ids,))
            conn.execute("DELETE FROM intake WHERE event_id IN (SELECT value FROM json_each(?))", (ids,))


def intake_unfinished(conn: sqlite3.Connection, after: int, limit: int) -> list[UnfinishedEvent]:
    rows = conn.execute(
        "SELECT seq, event_id, source, route, body, received_at, continuation FROM intake WHERE seq > ? "
        "ORDER BY seq LIMIT ?",
        (after, limit),
    ).fetchall()
    if not rows:
        return []
    ids = json.dumps([row[1] for row in rows])
    done: dict[str, set[tuple[str, str]]] = {}
    for event_id, route, action in conn.execute(
        "SELECT event_id, route, action FROM outcomes WHERE event_id IN (SELECT value FROM json_each(?))", (ids,)
    ):
        done.setdefault(event_id, set()).add((route, action))
    return [
        UnfinishedEvent(seq, AcceptedEvent(event_id, source, body, received_at, route, continuation),
                        frozenset(done.get(event_id, ())))
        for seq, event_id, source, route, body, received_at, continuation in rows
    ]


def outbox_add(conn: sqlite3.Connection, subject: str, payload: bytes, headers: str, now: float) -> int:
    cursor = conn.execute(
        "INSERT INTO outbox (subject, payload, headers, ts) VALUES (?, ?, ?, ?)", (subject, payload, headers, now)
    )
    return cursor.lastrowid


def outbox_pending(conn: sqlite3.Connection, limit: int) -> list[OutboxItem]:
    rows = conn.execute("SELECT id, subject, payload, headers, ts FROM outbox ORDER BY id LIMIT ?", (limit,)).fetchall()
    return [
        OutboxItem(id_, subject, bytes(payload), json.loads(headers), ts) for id_, subject, payload, headers, ts in rows
    ]


def outbox_for(conn: sqlite3.Connection, subject: str, after: int, limit: int) -> list[OutboxItem]:
    rows = conn.execute("SELECT id, subject, payload, headers, ts FROM outbox WHERE subject = ? AND id > ? "
                        "ORDER BY id LIMIT ?", (subject, after, limit)).fetchall()
    return [
        OutboxItem(id_, subject, bytes(payload), json.loads(headers), ts) for id_, subject, payload, headers, ts in rows
    ]


def outbox_expire(conn: sqlite3.Connection, subject: str, older_than: float,
                  header: tuple[str, str] | None = None) -> list[OutboxItem]:
    """Delete and return the messages under `subject` kept since before `older_than` (with `header`: only
    those whose header `header[0]` is `header[1]`)."""
    where, params = "subject = ? AND ts < ?", [subject, older_than]
    if header is not None:
        where += " AND json_extract(headers, ?) IS ?"
        params += ['$."' + header[0].replace('"', '') + '"', header[1]]
    with atomic(conn):
        rows = conn.execute(f"DELETE FROM outbox WHERE {where} RETURNING id, subject, payload, headers, ts",
                            params).fetchall()
    rows.sort()
    return [
        OutboxItem(id_, subject, bytes(payload), json.loads(headers), ts) for id_, subject, payload, headers, ts in rows
    ]


def outbox_counts(conn: sqlite3.Connection, prefix: str) -> dict[str, int]:
    return dict(conn.execute("SELECT subject, count(*) FROM outbox WHERE substr(subject, 1, ?) = ? "
                             "GROUP BY subject", (len(prefix), prefix)).fetchall())


def checkpointed_size(conn: sqlite3.Connection) -> int:
    # TRUNCATE: copy the WAL into the main file and empty it, so the file size is the whole story.
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    return pages * page_size


def vacuum(conn: sqlite3.Connection) -> int:
    """Rewrite the file without its free pages; return the new size."""
    conn.execute("VACUUM")
    return checkpointed_size(conn)


def dedup_bytes(conn: sqlite3.Connection) -> int | None:
    """Bytes used by the dedup table and its indexes, or None when SQLite lacks `dbstat`."""
    marks = ",".join("?" * len(DEDUP_TABLES))
    try:
        return scalar(conn, f"SELECT sum(pgsize) FROM dbstat WHERE name IN ({marks})", DEDUP_TABLES) or 0
    except sqlite3.OperationalError:
        return None


def evict_oldest(conn: sqlite3.Connection, excess_bytes: float) -> int:
    """Delete about enough of the oldest dedup keys to free `excess_bytes`; return how many."""
    (count,) = conn.execute("SELECT count(*) FROM dedup").fetchone()
    if count == 0:
        return 0
    table_bytes = dedup_bytes(conn)
    if table_bytes is None:  # no dbstat: assume the whole file is dedup keys (under-evicts; rounds repeat)
        table_bytes = checkpointed_size(conn)
    per_key = max(table_bytes / count, 1.0)
    n = min(count, max(1, math.ceil(excess_bytes / per_key)))
    return conn.execute(
        "DELETE FROM dedup WHERE (route, key) IN (SELECT route, key FROM dedup ORDER BY created, route, key LIMIT ?)",
        (n,),
    ).rowcount
