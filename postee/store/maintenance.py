"""The periodic maintenance services: Postee's `db-verify-interval` loop, and WAL checkpoints.

A long-lived service in the trio style (`task_status.started()` once the first pass is done, so a
role that starts it knows the file is within its limit before intake opens). A failed pass is
logged and retried at the next interval: a full disk or a locked file at 3 a.m. should not take the
daemon down with it, and the next pass may well succeed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
import trio

from postee.store.errors import StoreError
from postee.store.records import MaintenanceReport
from postee.store.sqlite import DEFAULT_PROCESSED_RETENTION, SqliteStore

DEFAULT_VERIFY_INTERVAL = 3600.0
"""Seconds between passes: Postee's `db-verify-interval` default of 1 hour."""

DEFAULT_CHECKPOINT_INTERVAL = 0.5
"""Seconds between WAL checkpoints (`serve_checkpoints`): a few MB of WAL at most under load."""

log = structlog.get_logger("postee.store")


async def serve_maintenance(
    store: SqliteStore,
    *,
    interval: float = DEFAULT_VERIFY_INTERVAL,
    max_size_bytes: int | None = None,
    processed_retention: float = DEFAULT_PROCESSED_RETENTION,
    on_report: Callable[[MaintenanceReport], None] | None = None,
    wall_clock: Callable[[], float] = time.time,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run `store.maintenance` now and then every `interval` seconds (Trio time), until cancelled.

    `wall_clock` gives the `now` of each pass (stored expiries are wall-clock times); the interval
    itself is waited on Trio's clock, so tests drive it with `autojump_clock`.
    """
    if interval <= 0:
        raise ValueError(f"interval must be > 0, not {interval!r}")
    started = False
    while True:
        try:
            report = await store.maintenance(wall_clock(), max_size_bytes, processed_retention)
        except StoreError as exc:
            log.error("store maintenance failed", path=store.path, error=str(exc))
        else:
            log.info(
                "store maintenance",
                path=store.path,
                expired=report.expired,
                evicted=report.evicted,
                processed_pruned=report.processed_pruned,
                outcomes_pruned=report.outcomes_pruned,
                size_before=report.size_before,
                size_after=report.size_after,
                over_limit=report.over_limit,
            )
            if report.over_limit:
                log.warning(
                    "database still over max-db-size: only dedup keys are evicted, queued messages are kept",
                    path=store.path,
                    size=report.size_after,
                    limit=max_size_bytes,
                )
            if on_report is not None:
                on_report(report)
        if not started:
            started = True
            task_status.started()
        await trio.sleep(interval)


async def serve_checkpoints(
    store: SqliteStore,
    *,
    interval: float = DEFAULT_CHECKPOINT_INTERVAL,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Checkpoint the store's WAL every `interval` seconds, off its write path, until cancelled.

    Keeps the WAL short without the stall of a checkpoint inside a commit (see
    `postee.store.checkpointer`). A failure is logged and tried again at the next interval.
    """
    if interval <= 0:
        raise ValueError(f"interval must be > 0, not {interval!r}")
    task_status.started()
    while True:
        await trio.sleep(interval)
        try:
            await store.checkpoint()
        except StoreError as exc:
            log.warning("store checkpoint failed", path=store.path, error=str(exc))
