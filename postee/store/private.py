"""The store's files are private to the node's user: the database holds the API key.

The modes are set explicitly, not left to the umask: SQLite creates a database 0644 minus the umask,
and a container's umask is often 0022, which left the key world-readable. A directory the store
creates is 0700 and every file it creates is 0600; SQLite gives the `-wal` and `-shm` files the
database's own mode, so a private database keeps them private too. An existing file with group or
other bits (from an older version) is narrowed to 0600 with a warning; an existing directory is left
as it is, since it may be a volume the operator shares on purpose.

Blocking (file system calls): run them in a worker thread, or accept the few microseconds.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import structlog

log = structlog.get_logger("postee.store")

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600

SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
"""Files SQLite keeps beside a database (they hold its recent writes, the API key included)."""


def make_private_dirs(folder: str | os.PathLike[str]) -> None:
    """Create `folder` and its missing parents with mode 0700 whatever the umask.

    Raises `OSError` when one cannot be created. A folder that exists already is not changed.
    """
    path = Path(folder)
    if path.is_dir():
        return
    if path.parent != path:
        make_private_dirs(path.parent)
    try:
        os.mkdir(path, PRIVATE_DIR_MODE)
    except FileExistsError:
        return  # created meanwhile (another process): not ours to change
    os.chmod(path, PRIVATE_DIR_MODE)  # the umask may have taken bits away; exactly 0700


def open_private(path: str | os.PathLike[str], flags: int = os.O_RDWR) -> int:
    """Open `path` (created if missing) and make sure it is 0600; returns the descriptor.

    Raises `OSError` when it cannot be opened or created.
    """
    fd = os.open(path, flags | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    try:
        _narrow(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def make_private(path: str | os.PathLike[str]) -> None:
    """Create `path` empty if missing; make it 0600 either way. Raises `OSError` if it cannot be created.

    Opened read-only: whether the file may be written is for its user (SQLite) to find out and report.
    """
    os.close(open_private(path, os.O_RDONLY))


def narrow_side_files(db_path: str | os.PathLike[str]) -> None:
    """Make SQLite's files beside `db_path` (left by an earlier run) 0600, when they exist."""
    for suffix in SQLITE_SIDE_FILES:
        side = f"{os.fspath(db_path)}{suffix}"
        try:
            fd = os.open(side, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue  # absent (the usual case), or unreadable: SQLite will say so
        try:
            _narrow(fd, side)
        finally:
            os.close(fd)


def _narrow(fd: int, path: str | os.PathLike[str]) -> None:
    """fchmod to 0600 if the file has any other bit; a file we may not change is reported, not fatal."""
    current = stat.S_IMODE(os.fstat(fd).st_mode)
    if current == PRIVATE_FILE_MODE:
        return
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
    except OSError as exc:
        log.warning("cannot make a store file private", path=os.fspath(path), mode=oct(current),
                    error=exc.strerror or str(exc))
        return
    if current & 0o077:
        log.warning("store file was readable by others; made private", path=os.fspath(path),
                    mode=f"{oct(current)} -> {oct(PRIVATE_FILE_MODE)}")
