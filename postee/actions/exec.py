"""The `exec` action: run a shell script per delivery, as Postee's exec action.

Settings: `exec-script` (a script fed to `/bin/sh` on stdin) or `input-file` (a script file run as
`/bin/sh <file>`, which must exist at load time), `env` (a list of `NAME=value` added to the
environment), `inherit-env` (new: names of variables of Postee's own environment the script may see)
and `timeout` (new, default 60s). The script sees the description in `POSTEE_EVENT`.

The script gets a clean environment: `PATH`, `HOME` and `LANG` (from Postee's, when set), the
variables named in `inherit-env`, the `env` entries, and `POSTEE_EVENT`; nothing else. (Postee
passes its whole environment on, and with it the API key, the ingest token and every `$VAR` secret
of the config, to a script whose input an event's sender controls.)

Its stdout and stderr are captured together (bounded) into the result or the error. A non-zero exit
is a failure that retrying will not fix. Each run is the leader of its own process group, so on a
timeout, or when the send is cancelled, the whole group is killed, including what the script
started in the background; a timeout is then reported as retryable.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
from collections.abc import Mapping
from typing import Any, ClassVar

import trio

from postee.actions.base import Action, ActionError, Delivery, SendResult, define_action, excerpt
from postee.actions.registry import register
from postee.actions.settings import Kind, SettingsReader, setting

SHELL = "/bin/sh"
DEFAULT_TIMEOUT = 60.0
"""Seconds a script may run before its process group is killed (Postee has no limit)."""

MAX_CAPTURE_BYTES = 64 * 1024
"""Output kept per run; the rest is read and discarded, so a chatty script never blocks on a full pipe."""

OUTPUT_DRAIN_GRACE = 1.0
"""Seconds to keep reading output after the script exited, while background children still hold the pipe."""

KILL_WAIT = 5.0
"""Seconds to wait for a killed script to be reaped before giving up on it."""

EVENT_VARIABLE = "POSTEE_EVENT"
BASE_VARIABLES = ("PATH", "HOME", "LANG")
"""What every script gets from Postee's environment (when set): enough to find programs and read text."""
_VARIABLE_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_VARIABLE_BYTES = 128 * 1024
"""Linux's limit on one environment string (MAX_ARG_STRLEN): a longer description cannot be passed."""
_READ_SIZE = 16 * 1024


def _read_variable_names(settings: SettingsReader, key: str) -> tuple[str, ...]:
    names = []
    for index, name in enumerate(settings.string_list(key)):
        if _VARIABLE_NAME_RE.fullmatch(name):
            names.append(name)
        else:
            settings.problem(f"{key}[{index}]", f"expected an environment variable name, not {name!r}")
    return tuple(names)


@register
@define_action
class ExecAction(Action):
    type_name: ClassVar[str] = "exec"
    default_timeout: ClassVar[float] = DEFAULT_TIMEOUT

    script: str = setting("exec-script")
    """The script fed to the shell on stdin; "" when `input_file` is used."""

    input_file: str = setting("input-file", kind=Kind.EXISTING_FILE)
    env: dict[str, str] = setting("env", kind=Kind.ENVIRONMENT)
    inherit_env: tuple[str, ...] = setting("inherit-env", read=_read_variable_names)
    """Names of variables of Postee's environment passed on to the script, besides `BASE_VARIABLES`."""

    def __attrs_post_init__(self) -> None:
        if bool(self.script) == bool(self.input_file):
            raise ValueError("give exactly one of script and input_file")

    @classmethod
    def check_settings(cls, reader: SettingsReader, values: dict[str, Any]) -> None:
        reader.exclusive("exec-script", "input-file", required=True)

    def command(self) -> list[str]:
        return [SHELL] if self.script else [SHELL, self.input_file]

    def environment(self, description: str, inherited: Mapping[str, str]) -> dict[str, str]:
        """The script's whole environment: the base and named variables of `inherited`, `env`, the event."""
        names = (*BASE_VARIABLES, *self.inherit_env)
        return {
            **{name: inherited[name] for name in names if name in inherited},
            **self.env,
            EVENT_VARIABLE: description,
        }

    async def send(self, delivery: Delivery) -> SendResult:
        env = self.environment(delivery.description, os.environ)
        try:
            process = await trio.lowlevel.open_process(
                self.command(),
                stdin=subprocess.PIPE if self.script else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            if exc.errno == errno.E2BIG:
                size = len(delivery.description.encode("utf-8"))
                raise ActionError(
                    f"the description ({size} bytes) is too large for the {EVENT_VARIABLE} variable"
                    f" (Linux allows {MAX_VARIABLE_BYTES // 1024} KiB per variable)",
                    retryable=False,
                ) from None
            raise ActionError(f"cannot start {SHELL}: {exc}", retryable=False) from None
        except ValueError as exc:  # a NUL character in the description or in env
            raise ActionError(f"cannot start {SHELL}: {exc}", retryable=False) from None
        capture = _Capture(MAX_CAPTURE_BYTES)
        killed = False
        try:
            with trio.move_on_after(self.timeout):
                await self._run(process, capture)
        finally:
            with trio.CancelScope(shield=True):
                killed = await _finish(process)
        output = excerpt(capture.text())
        code = process.returncode
        if killed or code is None:
            raise ActionError(
                f"script timed out after {self.timeout:g}s; its process group was killed",
                retryable=True,
                output=output,
            )
        if code != 0:
            reason = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
            raise ActionError(
                f"script {reason}" + (f": {excerpt(output, 200)}" if output else ""),
                retryable=False,
                status=code,
                output=output,
            )
        return SendResult(output=output, status=code)

    async def _run(self, process: trio.Process, capture: _Capture) -> None:
        reading_done = trio.Event()

        async def collect() -> None:
            assert process.stdout is not None
            while True:
                try:
                    chunk = await process.stdout.receive_some(_READ_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break
                if not chunk:
                    break
                capture.add(chunk)
            reading_done.set()

        async with trio.open_nursery() as nursery:
            if self.script:
                nursery.start_soon(_feed, process, self.script.encode("utf-8"))
            nursery.start_soon(collect)
            await process.wait()
            with trio.move_on_after(OUTPUT_DRAIN_GRACE):
                await reading_done.wait()
            nursery.cancel_scope.cancel()


async def _feed(process: trio.Process, script: bytes) -> None:
    """Write the script to the shell's stdin and close it; a shell that stopped reading is fine."""
    assert process.stdin is not None
    try:
        await process.stdin.send_all(script)
        await process.stdin.aclose()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def _finish(process: trio.Process) -> bool:
    """Kill the process group if the script still runs, reap it, close our pipe ends. True if killed."""
    killed = False
    if process.poll() is None:
        killed = True
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        with trio.move_on_after(KILL_WAIT):
            await process.wait()
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            await stream.aclose()
    return killed


class _Capture:
    """The first `limit` bytes of the output, and how many more were discarded."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: list[bytes] = []
        self.size = 0
        self.discarded = 0

    def add(self, chunk: bytes) -> None:
        room = self.limit - self.size
        if room > 0:
            self.chunks.append(chunk[:room])
            self.size += min(room, len(chunk))
        self.discarded += max(0, len(chunk) - max(room, 0))

    def text(self) -> str:
        text = b"".join(self.chunks).decode("utf-8", errors="replace")
        return text + (f"\n…[{self.discarded} more bytes discarded]" if self.discarded else "")
