"""The embedded nats-server's pid file: so that a restarted controller can stop a server left from its previous life.

The parent-death signal (`postee.bus.server_process`) kills the server with its controller; this is
the second line, for a server that outlived it anyway (started by an older Postee, another platform,
a race). The file, beside the controller's store, records the running server's pid and the config
path it was started with; the controller holds an exclusive `flock` on it while it runs its server.

On start (`claim_pid_file`):

* the lock is taken; if another live controller holds it (two controllers on one store), that is a
  configuration error, and *its* server is left alone;
* if the file names a live process whose command line is the nats-server binary with our recorded
  config path (so a reused pid is never mistaken for it), that process is a leftover: SIGTERM, a
  grace period, SIGKILL, and we wait until it is gone. A dead process (or a zombie) holds no socket,
  so its port is free once it is gone. Its old run directory is removed too.

Everything here blocks (file locks, /proc, waiting for a process): callers run it in a thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import time
from pathlib import Path

import attrs
import structlog

from postee.bus.server_config import RUN_DIR_PREFIX
from postee.bus.server_errors import NatsServerConfigError

__all__ = ["PidFileClaim", "claim_pid_file", "is_our_server"]

#: How often we look whether a leftover server is gone.
GONE_POLL_INTERVAL = 0.02
#: After SIGKILL, how long a leftover may take to disappear.
KILL_WAIT = 5.0

log = structlog.get_logger("postee.nats")


@attrs.frozen
class _Record:
    pid: int
    config: str


def _read_record(fd: int) -> _Record | None:
    os.lseek(fd, 0, os.SEEK_SET)
    data = os.read(fd, 64 * 1024)
    if not data.strip():
        return None
    try:
        raw = json.loads(data)
        return _Record(pid=int(raw["pid"]), config=str(raw["config"]))
    except (ValueError, KeyError, TypeError):
        return None


def _cmdline(pid: int) -> list[str] | None:
    try:
        data = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode("utf-8", "surrogateescape") for part in data.split(b"\0") if part]


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (a zombie has closed its sockets)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    state = stat.rsplit(b")", 1)[-1].split()[:1]
    return state != [b"Z"]


def is_our_server(pid: int, binary_name: str, config: str) -> bool:
    """True when `pid` runs `binary_name` with `--config <config>`: a nats-server we started."""
    argv = _cmdline(pid)
    if not argv or os.path.basename(argv[0]) != binary_name:
        return False
    return any(a == "--config" and b == config for a, b in zip(argv, argv[1:], strict=False))


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(GONE_POLL_INTERVAL)
    return True


def _stop_leftover(record: _Record, grace: float, path: Path) -> None:
    log.warning("stopping a nats-server left by a previous run of this controller", pid=record.pid,
                pid_file=str(path))
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, signal.SIGTERM)
    if not _wait_gone(record.pid, grace):
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, signal.SIGKILL)
        if not _wait_gone(record.pid, KILL_WAIT):
            raise NatsServerConfigError(
                f"a nats-server left by a previous run (pid {record.pid}, named in {str(path)!r}) does not stop"
            )
    log.info("leftover nats-server stopped", pid=record.pid)


class PidFileClaim:
    """The locked pid file of one running server: `record` it once started, `clear` it once reaped."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def record(self, pid: int, config: Path) -> None:
        self._write(json.dumps({"pid": pid, "config": os.fspath(config)}) + "\n")

    def clear(self) -> None:
        self._write("")

    def _write(self, text: str) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, text.encode(), 0)
        os.fsync(self._fd)

    def release(self) -> None:
        """Unlock (closing the file releases the lock); the file stays, empty when the server stopped."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def claim_pid_file(path: Path, binary_name: str, *, grace: float, work_dir: Path | None) -> PidFileClaim:
    """Lock the pid file at `path` and stop the leftover server it names, if any (see the module docstring).

    Raises `NatsServerConfigError` when another live controller holds the lock, or the file cannot be used.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise NatsServerConfigError(f"cannot open the nats-server pid file {str(path)!r}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        record = _read_record(fd)
        os.close(fd)
        held_by = f" (its nats-server: pid {record.pid})" if record else ""
        raise NatsServerConfigError(
            f"another running controller uses the same store: the pid file {str(path)!r} is locked{held_by}; "
            "give each controller its own PATH_TO_DB"
        ) from None
    claim = PidFileClaim(path, fd)
    try:
        record = _read_record(fd)
        if record is not None and _alive(record.pid) and is_our_server(record.pid, binary_name, record.config):
            _stop_leftover(record, grace, path)
        if record is not None:
            _remove_run_dir(Path(record.config).parent, work_dir)
            claim.clear()
    except BaseException:
        claim.release()
        raise
    return claim


def _remove_run_dir(directory: Path, work_dir: Path | None) -> None:
    """The leftover's private run directory (config, ports file), if it is one of ours under `work_dir`."""
    if work_dir is not None and directory.parent == work_dir and directory.name.startswith(RUN_DIR_PREFIX):
        shutil.rmtree(directory, ignore_errors=True)
