"""The message-bus interface shared by the in-memory transport and the NATS bridge.

Subjects are dot-separated tokens as in NATS; subscriptions may use `*` (one token) and `>`
(one or more trailing tokens). A subscription is an async iterator of `Message`s with a bounded
buffer. `request` sends a message with a private reply subject and waits for the first answer.
Keeping this interface small is what lets a controller and its runners run in one process over
`InMemoryTransport` in tests, and over NATS in production, with the same code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import attrs

from actors.errors import TransportError

DEFAULT_SUBSCRIPTION_CAPACITY = 256
DEFAULT_REQUEST_TIMEOUT = 5.0


@attrs.frozen
class Message:
    """One message on the bus. `reply` is the subject to answer on (empty when none)."""

    subject: str
    data: bytes
    headers: Mapping[str, str] = attrs.field(factory=dict)
    reply: str = ""


class Subscription(Protocol):
    subject: str

    def __aiter__(self) -> AsyncIterator[Message]: ...

    async def next(self, timeout: float | None = None) -> Message:
        """The next message; `TransportTimeout` after `timeout` seconds."""
        ...


class Transport(Protocol):
    """What the application needs from a bus."""

    async def publish(self, subject: str, data: bytes, *, headers: Mapping[str, str] | None = None) -> None: ...

    def subscribe(
        self, subject: str, *, queue: str = "", capacity: int = DEFAULT_SUBSCRIPTION_CAPACITY
    ) -> AbstractAsyncContextManager[Subscription]: ...

    async def request(
        self,
        subject: str,
        data: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ) -> Message: ...

    async def respond(self, message: Message, data: bytes, *, headers: Mapping[str, str] | None = None) -> None: ...


def validate_subject(subject: str, *, wildcards: bool) -> None:
    """Reject subjects NATS would reject, so tests catch what production would."""
    if not subject or subject != subject.strip() or " " in subject:
        raise TransportError(f"invalid subject {subject!r}")
    tokens = subject.split(".")
    for i, token in enumerate(tokens):
        if not token:
            raise TransportError(f"invalid subject {subject!r}: empty token")
        if token in ("*", ">"):
            if not wildcards:
                raise TransportError(f"invalid subject {subject!r}: wildcards are for subscriptions")
            if token == ">" and i != len(tokens) - 1:
                raise TransportError(f"invalid subject {subject!r}: '>' must be the last token")


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching with `*` and `>` wildcards."""
    p_tokens = pattern.split(".")
    s_tokens = subject.split(".")
    for i, p in enumerate(p_tokens):
        if p == ">":
            return len(s_tokens) > i
        if i >= len(s_tokens):
            return False
        if p != "*" and p != s_tokens[i]:
            return False
    return len(p_tokens) == len(s_tokens)
