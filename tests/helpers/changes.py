"""Waiting for a condition on state that recording servers change (requests, connections)."""

from __future__ import annotations

from collections.abc import Callable

import trio


class Changes:
    """Whoever waits for a condition is woken whenever the state changes (`note`), and fails after
    `timeout` seconds: a test waits for a positive signal, never for a quiet period."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._changed = trio.Event()

    def note(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait(self, condition: Callable[[], bool]) -> None:
        """Until `condition()` holds (checked at every change); `TooSlowError` after the timeout."""
        with trio.fail_after(self.timeout):
            while not condition():
                await self._changed.wait()
