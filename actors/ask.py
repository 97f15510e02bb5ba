"""Request/reply between actors.

The asker builds a message that carries a one-shot `Reply`; the actor answers with
`reply.send(value)` or `reply.fail(exc)`. The asker waits at most `timeout` seconds in total
(including waiting for room in a full mailbox) and then gets `AskTimeout`, the runtime's own
exception, never a bare `trio.TooSlowError`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import outcome
import trio

from actors.errors import AskTimeout
from actors.mailbox import Address

R = TypeVar("R")
T = TypeVar("T")

DEFAULT_ASK_TIMEOUT = 5.0


class Reply(Generic[R]):
    """A one-shot reply slot. Answering twice, or after the asker gave up, is a no-op."""

    __slots__ = ("_receive", "_send")

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[outcome.Outcome](1)

    def send(self, value: R) -> bool:
        """Answer with a value; False when nobody waits any more (or already answered)."""
        return self._deliver(outcome.Value(value))

    def fail(self, error: BaseException) -> bool:
        """Answer with an exception, raised in the asker."""
        return self._deliver(outcome.Error(error))

    def _deliver(self, result: outcome.Outcome) -> bool:
        try:
            self._send.send_nowait(result)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        self._send.close()
        return True

    async def wait(self) -> R:
        result = await self._receive.receive()
        return result.unwrap()

    def abandon(self) -> None:
        self._receive.close()


async def ask(
    address: Address[T],
    build: Callable[[Reply[Any]], T],
    *,
    timeout: float = DEFAULT_ASK_TIMEOUT,
) -> Any:
    """Send `build(reply)` to `address` and return what the actor answers.

    Raises `AskTimeout` after `timeout` seconds, `MailboxClosed` if the actor is gone, or
    whatever exception the actor passed to `reply.fail`.
    """
    reply: Reply[Any] = Reply()
    try:
        with trio.fail_after(timeout):
            await address.send(build(reply))
            return await reply.wait()
    except trio.TooSlowError:
        raise AskTimeout(f"no reply from {address.name!r} within {timeout:g}s") from None
    finally:
        reply.abandon()
