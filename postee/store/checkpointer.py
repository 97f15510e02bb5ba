"""Checkpoints off the write path: the WAL is copied into the database from a connection of its own.

SQLite's automatic checkpoint runs inside the commit that crosses `wal_autocheckpoint` pages, on the
writing connection, and ends with an fsync: that commit, and every webhook request waiting on it
for its 200, stalls for milliseconds to tens of milliseconds. Durable intake commits each event's
text (often 10 KB or more), so with the default threshold that happened every hundred events or so.
A PASSIVE checkpoint from a second connection copies the same pages without taking the writer's
lock: the store's commits go on meanwhile, and the next one restarts the WAL from its beginning.
The store keeps a high `wal_autocheckpoint` as a safety net for when nothing calls `checkpoint`.
"""

from __future__ import annotations

import sqlite3

import trio

from postee.store.connection import BUSY_TIMEOUT_MS


class Checkpointer:
    """A lazily opened second connection to the store's file, used only to checkpoint its WAL."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None
        self._limiter = trio.CapacityLimiter(1)
        """Held while the connection is in use (a checkpoint, the close)."""
        self._thread_limiter = trio.CapacityLimiter(1)
        """For `to_thread` itself; never contended, since its callers hold `_limiter`."""
        self._closed = False

    async def checkpoint(self) -> int:
        """Copy what the WAL holds into the database file (PASSIVE: never waits for the writer); return
        how many WAL pages are still not copied (0: all, or the store is closed)."""
        async with self._limiter:
            if self._closed:
                return 0
            return await trio.to_thread.run_sync(self._checkpoint, limiter=self._thread_limiter)

    def _checkpoint(self) -> int:
        if self._conn is None:
            self._conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
        _busy, frames, copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return max(frames - copied, 0)

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            async with self._limiter:
                self._closed = True
                conn, self._conn = self._conn, None
                if conn is not None:
                    await trio.to_thread.run_sync(conn.close, limiter=self._thread_limiter)
