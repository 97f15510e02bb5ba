"""The `stdout` action: print the rendered description, as Postee does.

Writes to a terminal or a pipe can block (a slow reader, a full pipe), so they run in a worker
thread; one lock for the whole process keeps two actions' messages from interleaving mid-line.

A write that blocks for good is abandoned when its send is cancelled (the attempt's timeout), but
its thread stays blocked. So each action runs its writes under a limiter of its own, one thread at
a time: a stuck stdout ties up one thread per action, never the tokens of Trio's default thread
limiter that Rego evaluation, SQLite and SMTP need.
"""

from __future__ import annotations

import sys
import threading
from typing import ClassVar, TextIO

import attrs
import trio

from postee.actions.base import Action, ActionError, Delivery, SendResult, define_action
from postee.actions.registry import register

DEFAULT_TIMEOUT = 10.0
"""Seconds a write may take before the attempt is reported as timed out."""

WRITE_THREADS = 1
"""Worker threads one stdout action uses at a time (writes are serialized by the lock anyway)."""

_WRITE_LOCK = threading.Lock()


@register
@define_action
class StdoutAction(Action):
    """Print each delivery's description followed by a newline, then flush."""

    type_name: ClassVar[str] = "stdout"
    default_timeout: ClassVar[float] = DEFAULT_TIMEOUT

    stream: TextIO | None = None
    """Where to write (default: `sys.stdout` at send time); `from_spec(spec, stream=...)` lets tests and
    embedders capture the output."""

    _limiter: trio.CapacityLimiter | None = attrs.field(default=None, init=False)
    """Made at the first send, inside Trio (`from_spec` may run in a worker thread)."""

    async def send(self, delivery: Delivery) -> SendResult:
        text = delivery.description
        stream = self.stream if self.stream is not None else sys.stdout
        if self._limiter is None:
            self._limiter = trio.CapacityLimiter(WRITE_THREADS)
        try:
            await trio.to_thread.run_sync(_write, stream, text, abandon_on_cancel=True, limiter=self._limiter)
        except (OSError, ValueError) as exc:  # closed stream, broken pipe
            raise ActionError(f"cannot write to stdout: {exc}", retryable=False) from None
        return SendResult()


def _write(stream: TextIO, text: str) -> None:
    with _WRITE_LOCK:
        stream.write(text + "\n")
        stream.flush()
