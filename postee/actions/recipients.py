"""Which recipients an event may add to a mail: plain addresses, in allowed domains, a bounded number.

The email action's `<%application_scope_owner%>` recipient stands for owners named by the event (the
rendered content's `owners`, or the event's `application_scope_owners`). Whoever can post an event
can therefore choose who receives the alert: hundreds of addresses, any domain. So owners are
admitted only when each is one plain address (`local@domain`: no display name, no angle brackets,
no comma, no CR/LF, nothing that SMTP or a header could read as syntax), in one of
`recipient-domains` when that is set, and at most `max-owner-recipients` of them (default 50).
What is dropped is counted by reason, for the log and the execution's output: never silently.
Recipients written in the config are not subject to any of this.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import attrs

DEFAULT_MAX_OWNER_RECIPIENTS = 50
"""Owners taken from one event. RFC 5321 servers accept at least 100 recipients per message; an owner
list names a team or two, and 50 leaves room below that floor for the configured recipients."""

MAX_ADDRESS_LENGTH = 254
MAX_LOCAL_PART = 64
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
DOMAIN_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
ADDRESS_RE = re.compile(rf"(?P<local>{_ATOM}(?:\.{_ATOM})*)@(?P<domain>{DOMAIN_RE.pattern})")
"""A plain address: a dot-atom local part and a host name (no quoted strings, no address literals)."""

WILDCARD = "*."
"""A `recipient-domains` entry starting with it allows the subdomains of what follows, not the domain itself."""

NOT_AN_ADDRESS = "not a plain e-mail address"
OUTSIDE_DOMAINS = "outside recipient-domains"
OVER_LIMIT = "over max-owner-recipients"


def is_plain_address(text: str) -> bool:
    """True when `text` is exactly one `local@domain` address, with nothing around it."""
    match = ADDRESS_RE.fullmatch(text)
    return bool(match) and len(text) <= MAX_ADDRESS_LENGTH and len(match["local"]) <= MAX_LOCAL_PART


def domain_problem(entry: str) -> str | None:
    """Why `entry` is not a `recipient-domains` entry (`example.com` or `*.example.com`), or None."""
    name = entry.removeprefix(WILDCARD)
    if not DOMAIN_RE.fullmatch(name):
        return f"expected a domain such as example.com or *.example.com, not {entry!r}"
    return None


@attrs.frozen
class Admitted:
    """The owners let through, in order, and how many were dropped for each reason."""

    owners: tuple[str, ...]
    dropped: dict[str, int] = attrs.field(factory=dict)

    @property
    def dropped_count(self) -> int:
        return sum(self.dropped.values())

    def describe_dropped(self, limit: int) -> str:
        """E.g. `dropped 3 recipient(s) taken from the event: 1 not a plain e-mail address, 2 outside ...`."""
        reasons = [
            f"{count} {reason}" + (f" ({limit})" if reason == OVER_LIMIT else "")
            for reason, count in self.dropped.items()
        ]
        return f"dropped {self.dropped_count} recipient(s) taken from the event: {', '.join(reasons)}"


@attrs.frozen
class OwnerPolicy:
    """What an event may add: plain addresses, in `domains` (all when empty), at most `limit`."""

    limit: int = DEFAULT_MAX_OWNER_RECIPIENTS
    domains: tuple[str, ...] = attrs.field(default=(), converter=lambda names: tuple(n.lower() for n in names))

    def allows_domain(self, domain: str) -> bool:
        domain = domain.lower()
        for entry in self.domains:
            if entry.startswith(WILDCARD):
                if domain.endswith("." + entry.removeprefix(WILDCARD)):
                    return True
            elif domain == entry:
                return True
        return not self.domains

    def admit(self, owners: Iterable[str]) -> Admitted:
        """The owners this policy lets through (deduplicated, in order), and what it dropped."""
        kept: list[str] = []
        dropped: dict[str, int] = {}
        for owner in dict.fromkeys(owners):
            if not is_plain_address(owner):
                reason = NOT_AN_ADDRESS
            elif not self.allows_domain(owner.rpartition("@")[2]):
                reason = OUTSIDE_DOMAINS
            elif len(kept) >= self.limit:
                reason = OVER_LIMIT
            else:
                kept.append(owner)
                continue
            dropped[reason] = dropped.get(reason, 0) + 1
        return Admitted(tuple(kept), dropped)
