"""The nats-server child process, made to die with the controller even when the controller is SIGKILLed.

A controller killed by SIGKILL (the OOM killer does that) runs no cleanup: without help its
nats-server lives on as an orphan, keeps the port, and the restarted controller cannot listen
there. On Linux the child asks the kernel for a *parent-death signal* before it execs
(`prctl(PR_SET_PDEATHSIG, SIGKILL)`), so the kernel kills it when its parent goes away. It
re-checks its parent right after, in case the parent died between the fork and the `prctl`.

The kernel's "parent" here is the *thread* that forked, not the process. Trio's `open_process`
forks from a worker thread of its cache, and cached threads exit after a few idle seconds: the
server would be killed at a random moment. So `spawn_child` forks from a thread of its own that
then waits for the child (`waitid(..., WNOWAIT)`: it sees the exit without reaping) and ends only
after the child exited: the thread lives exactly as long as the server. Reaping is left to the Trio
side, so a pid this module signals is always still ours (a zombie at worst, never a reused pid).

The ctypes function is looked up in the parent: the child, between fork and exec, only calls it.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence

import outcome
import structlog
import trio

__all__ = ["ChildProcess", "spawn_child"]

#: `PR_SET_PDEATHSIG` from <sys/prctl.h>.
PR_SET_PDEATHSIG = 1
#: How long forking and exec'ing may take before the caller gives up on the child.
SPAWN_TIMEOUT = 30.0

log = structlog.get_logger("postee.nats")


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """libc's `prctl`, resolved once in the parent (None where there is none: not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A `preexec_fn` that sets the parent-death signal (None where the platform has none)."""
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def hook() -> None:  # runs in the child, between fork and exec: no imports, no allocation of note
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the prctl: it will never signal us
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


class ChildProcess:
    """A running child whose output is `stdout` (stderr merged); `wait`, `poll`, `terminate`, `kill`."""

    def __init__(self, popen: subprocess.Popen[bytes], stdout: trio.lowlevel.FdStream, exited: trio.Event) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.stdout = stdout
        self._exited = exited

    @property
    def returncode(self) -> int | None:
        """The exit status once the child exited and was reaped (negative: killed by that signal)."""
        return self.poll()

    def poll(self) -> int | None:
        """Reap the child if it exited (it is then a zombie: this does not block); its status or None."""
        if self._popen.returncode is None and self._exited.is_set():
            self._popen.wait()
        return self._popen.returncode

    async def wait(self) -> int:
        await self._exited.wait()
        returncode = self.poll()
        assert returncode is not None
        return returncode

    def send_signal(self, sig: int) -> None:
        # Until we reap it the pid cannot be reused: signalling a zombie is harmless.
        if self._popen.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _spawner(command: Sequence[str], write_fd: int, die_with_parent: bool,
             token: trio.lowlevel.TrioToken, report: Callable[[outcome.Outcome], None],
             exited: trio.Event) -> None:
    """The thread that forks the child, then lives until the child exited (see the module docstring)."""
    try:
        popen = subprocess.Popen(
            list(command), stdin=subprocess.DEVNULL, stdout=write_fd, stderr=subprocess.STDOUT, close_fds=True,
            preexec_fn=_die_with_parent_hook() if die_with_parent else None,
        )
    except BaseException as exc:  # reported to the Trio side, which raises it
        _call_trio(token, report, outcome.Error(exc))
        return
    finally:
        os.close(write_fd)
    _call_trio(token, report, outcome.Value(popen))
    try:
        os.waitid(os.P_PID, popen.pid, os.WEXITED | os.WNOWAIT)
    except ChildProcessError:  # already reaped by the Trio side
        pass
    _call_trio(token, exited.set)


def _call_trio(token: trio.lowlevel.TrioToken, fn: Callable[..., object], *args: object) -> None:
    try:
        token.run_sync_soon(fn, *args)
    except trio.RunFinishedError:  # the run is over: nobody is waiting any more
        pass


async def spawn_child(command: Sequence[str], *, die_with_parent: bool = True) -> ChildProcess:
    """Start `command` (stdin from /dev/null, stdout and stderr to `ChildProcess.stdout`).

    With `die_with_parent` (on Linux) the kernel kills the child with SIGKILL when this process dies,
    however it dies. Raises `OSError` when the command cannot be started.
    """
    read_fd, write_fd = os.pipe()
    stdout = trio.lowlevel.FdStream(read_fd)
    exited = trio.Event()
    result: list[outcome.Outcome] = []
    reported = trio.Event()
    gave_up = False

    def report(value: outcome.Outcome) -> None:
        if gave_up and isinstance(value, outcome.Value):  # too late: nobody owns it, stop it
            value.unwrap().kill()
        result.append(value)
        reported.set()

    thread = threading.Thread(
        target=_spawner, args=(command, write_fd, die_with_parent, trio.lowlevel.current_trio_token(), report,
                               exited),
        name=f"spawn-{os.path.basename(command[0])}", daemon=True,
    )
    try:
        thread.start()
    except BaseException:
        os.close(write_fd)
        await stdout.aclose()
        raise
    # Shielded: once forked, the child must be handed over (or it would be nobody's); bounded all the same.
    with trio.CancelScope(shield=True), trio.move_on_after(SPAWN_TIMEOUT):
        await reported.wait()
    if not result:
        gave_up = True
        await stdout.aclose()
        raise OSError(f"{command[0]!r} did not start within {SPAWN_TIMEOUT:g}s")
    try:
        popen = result[0].unwrap()
    except BaseException:
        await stdout.aclose()
        raise
    return ChildProcess(popen, stdout, exited)
