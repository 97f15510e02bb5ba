"""The `stdout` action: print the rendered description, as Postee does.

Writes to a terminal or a pipe can block (a slow reader, a full pipe), so they run in a worker
thread; one lock for the whole process keeps two actions' messages from interleaving mid-line.
"""

from __future__ import annotations

import sys
import threading
from typing import ClassVar, Self, TextIO

import trio

from postee.actions.base import Action, ActionError, ActionSpec, Delivery, SendResult
from postee.actions.registry import register
from postee.actions.retry import RETRY_SETTINGS, RetryPolicy
from postee.actions.settings import SettingsReader

DEFAULT_TIMEOUT = 10.0
"""Seconds a write may take before the attempt is reported as timed out."""

_WRITE_LOCK = threading.Lock()


@register
class StdoutAction(Action):
    """Print each delivery's description followed by a newline, then flush."""

    type_name: ClassVar[str] = "stdout"
    settings_keys: ClassVar[frozenset[str]] = RETRY_SETTINGS
    default_timeout: ClassVar[float] = DEFAULT_TIMEOUT

    def __init__(self, spec: ActionSpec, *, retry_policy: RetryPolicy, stream: TextIO | None = None) -> None:
        super().__init__(spec, retry_policy=retry_policy)
        self._stream = stream

    @classmethod
    def from_spec(cls, spec: ActionSpec, *, stream: TextIO | None = None) -> Self:
        """`stream` (default: `sys.stdout` at send time) lets tests and embedders capture the output."""
        settings = SettingsReader(spec)
        policy = settings.retry_policy(DEFAULT_TIMEOUT)
        settings.done()
        return cls(spec, retry_policy=policy, stream=stream)

    async def send(self, delivery: Delivery) -> SendResult:
        text = delivery.description
        stream = self._stream if self._stream is not None else sys.stdout
        try:
            await trio.to_thread.run_sync(_write, stream, text, abandon_on_cancel=True)
        except (OSError, ValueError) as exc:  # closed stream, broken pipe
            raise ActionError(f"cannot write to stdout: {exc}", retryable=False) from None
        return SendResult()


def _write(stream: TextIO, text: str) -> None:
    with _WRITE_LOCK:
        stream.write(text + "\n")
        stream.flush()
