"""The runtime's own exceptions: callers catch these, never a nested exception group."""

from __future__ import annotations


class ActorError(Exception):
    """Base class of every exception the actors runtime raises on purpose."""


class MailboxClosed(ActorError):
    """The mailbox no longer accepts messages (its actor is stopping or gone)."""


class AskTimeout(ActorError, TimeoutError):
    """`ask` got no reply within its timeout."""


class SupervisorGaveUp(ActorError):
    """A supervisor exceeded its restart intensity and escalates to its own parent.

    `child` names the child whose crash tipped it over; the crash is the `__cause__`.
    """

    def __init__(self, supervisor: str, child: str, restarts: int, window: float) -> None:
        super().__init__(
            f"supervisor {supervisor!r} gave up: child {child!r} crashed after "
            f"{restarts} restarts within {window:g}s"
        )
        self.supervisor = supervisor
        self.child = child
        self.restarts = restarts
        self.window = window


class TransportError(ActorError):
    """Base class for transport (bus) failures."""


class TransportTimeout(TransportError, TimeoutError):
    """A request got no reply in time."""


class NoResponders(TransportError):
    """A request was sent to a subject nobody subscribes to."""


class TransportUnavailable(TransportError):
    """The transport is disconnected (the bus is down or this client was cut off)."""


class TransportAuthError(TransportError):
    """The bus refused our credentials or TLS identity: retrying will not help, tell the user."""
