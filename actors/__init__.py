"""A small, generic actor runtime on Trio: mailboxes, supervisors, lanes, ask, transports.

It imports nothing from the application; see `actors/README.md`.
"""

from actors._groups import one_error
from actors.actor import Actor
from actors.ask import DEFAULT_ASK_TIMEOUT, Reply, ask
from actors.errors import (
    ActorError,
    AskTimeout,
    MailboxClosed,
    NoResponders,
    SupervisorGaveUp,
    TransportAuthError,
    TransportError,
    TransportTimeout,
    TransportUnavailable,
)
from actors.lane import Lane
from actors.mailbox import DEFAULT_CAPACITY, Address, Mailbox, MailboxStats
from actors.memory_transport import InMemoryBus, InMemoryTransport
from actors.supervisor import EventKind, RestartPolicy, Strategy, Supervisor, SupervisorEvent
from actors.transport import Message, Subscription, Transport

__all__ = [
    "DEFAULT_ASK_TIMEOUT",
    "DEFAULT_CAPACITY",
    "Actor",
    "ActorError",
    "Address",
    "AskTimeout",
    "EventKind",
    "InMemoryBus",
    "InMemoryTransport",
    "Lane",
    "Mailbox",
    "MailboxClosed",
    "MailboxStats",
    "Message",
    "NoResponders",
    "Reply",
    "RestartPolicy",
    "Strategy",
    "Subscription",
    "Supervisor",
    "SupervisorEvent",
    "SupervisorGaveUp",
    "Transport",
    "TransportAuthError",
    "TransportError",
    "TransportTimeout",
    "TransportUnavailable",
    "ask",
    "one_error",
]
