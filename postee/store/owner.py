"""One node per store: an advisory lock beside the database file, held while a node runs.

A node replays the store's unfinished events at start and puts back aggregates that were being sent
when it stopped. On a store another live node uses (a rolling deploy on a shared volume, a second
daemon started by mistake), that would run the other node's in-flight work a second time. The lock
is `flock` on `<db>.lock`: the kernel drops it when the process dies, SIGKILL included, so a stale
lock never keeps a restarted node out. Short-lived readers (`postee apikey`) do not take it.
The lock file and a directory created for it are private, like the store (`postee.store.private`).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

from postee.store.errors import StoreError
from postee.store.private import make_private_dirs, open_private

LOCK_SUFFIX = ".lock"


@contextmanager
def own_store(db_path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the store's lock, or raise `StoreError` naming the store when another process holds it.

    Blocking (it opens a file): call it from a worker thread, or accept the few microseconds.
    """
    path = f"{os.fspath(db_path)}{LOCK_SUFFIX}"
    try:
        make_private_dirs(os.path.dirname(path) or ".")
        fd = open_private(path)
    except OSError as exc:
        raise StoreError(f"cannot create the store's lock file {path}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(
                f"another postee node is using the store {os.fspath(db_path)} (its lock {path} is held): "
                "give each node its own PATH_TO_DB"
            ) from None
        yield
    finally:
        os.close(fd)  # releases the lock
