"""The `email` action: send the rendered message as an HTML mail over SMTP, as Postee does.

Settings are Postee's: `host`, `port`, `sender`, `user`, `password`, `recipients`, `client-host-name`,
`use-mx`; plus `tls-verify` / `ca-file` (how the STARTTLS certificate is checked) and `mx-resolver`
(which DNS server answers MX queries). The subject is the title, the body the description, sent as
`text/html; charset=utf-8` (encoded by the stdlib, so a non-ASCII title or a CR/LF in it cannot
break the headers).

Like Go's `smtp.SendMail` (Postee's), a session upgrades with STARTTLS whenever the server offers it,
verifying the certificate, and authenticates (PLAIN, else LOGIN) when `user` and `password` are set,
refusing to send the password in clear text except to a loopback host (see `smtp`). The recipient
`<%application_scope_owner%>` stands for the event's owners (the content's `owners`, `;`-separated,
else the event's `application_scope_owners`). Since whoever posts an event names them, owners are
admitted only as plain addresses, in `recipient-domains` when set, and at most `max-owner-recipients`
(default 50) per event; the others are dropped, counted in the log and the output (see `recipients`).
Recipients written in the config are always kept.

With `use-mx`, mail goes straight to each recipient domain's mail exchangers (lowest preference
first, the next one when a host is unreachable or answers 4xx), without `host` and without
credentials (a password is never handed to a stranger's MX). MX records come from a small DNS client
(`mx`: UDP, TCP when truncated), asking `mx-resolver` or the nameservers of /etc/resolv.conf.

This module is the action: its settings, the message, which SMTP sessions to run and what their
outcomes mean. smtplib blocks, so each session (`smtp.run_session`) runs in a worker thread, under
one deadline (`timeout`) for the whole session; `smtp` classifies its errors for the retry loop. When
some recipients accepted the mail and others did not, the retry of the same delivery only goes to
those still missing: nobody gets the message twice because somebody else's server was down.
"""

from __future__ import annotations

import logging
import ssl
from collections import OrderedDict
from collections.abc import Callable, Iterable
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate, make_msgid, parseaddr
from typing import Any, ClassVar

import attrs
import trio

from postee.actions.base import NOT_OPENED, Action, ActionError, Delivery, SendResult, as_text, define_action, excerpt
from postee.actions.httpclient import Verify, make_ssl_context
from postee.actions.mx import DNS_PORT, DNS_QUERY_TIMEOUT, MxLookupError, lookup_mx, system_nameservers
from postee.actions.recipients import DEFAULT_MAX_OWNER_RECIPIENTS, Admitted, OwnerPolicy, domain_problem
from postee.actions.registry import register
from postee.actions.settings import Kind, SettingsReader, setting
from postee.actions.smtp import Credentials, Endpoint, Failure, Outcome, Session, parse_endpoint, run_session

DEFAULT_PORT = 25
"""SMTP's standard port; Postee has no default for `port`."""

MAX_PORT = 65535

DEFAULT_TIMEOUT = 60.0
"""Seconds one SMTP session (connect to QUIT, every MX host tried) may take. Postee has no limit."""

DEFAULT_CLIENT_HOST_NAME = "localhost"
"""Name given in EHLO when `client-host-name` is unset: Go's smtp client default (so Postee's)."""

OWNER_PLACEHOLDER = "<%application_scope_owner%>"
OWNERS_SEPARATOR = ";"
OWNERS_CONTENT_KEY = "owners"
OWNERS_EVENT_KEY = "application_scope_owners"

REMEMBERED_DELIVERIES = 256
"""Deliveries whose partial progress (recipients already served) is kept for their retries."""

log = logging.getLogger(__name__)


def _read_sender(settings: SettingsReader, key: str) -> str:
    sender = settings.string(key, required=True)
    if sender and "@" not in parseaddr(sender)[1]:
        settings.problem(key, f"expected an e-mail address, not {sender!r}")
    return sender


def _read_recipients(settings: SettingsReader, key: str) -> tuple[str, ...]:
    if not settings.has(key):
        settings.problem(key, "required")
    return tuple(recipient.strip() for recipient in settings.string_list(key))


def _read_domains(settings: SettingsReader, key: str) -> tuple[str, ...]:
    domains = []
    for index, entry in enumerate(settings.string_list(key)):
        entry = entry.strip().lower()
        if problem := domain_problem(entry):
            settings.problem(f"{key}[{index}]", problem)
        else:
            domains.append(entry)
    return tuple(domains)


def _read_resolver(settings: SettingsReader, key: str) -> Endpoint | None:
    text = settings.string(key)
    resolver = parse_endpoint(text, DNS_PORT) if text else None
    if text and resolver is None:
        settings.problem(key, f"expected host or host:port, not {text!r}")
    return resolver


@register
@define_action
class EmailAction(Action):
    type_name: ClassVar[str] = "email"
    default_timeout: ClassVar[float] = DEFAULT_TIMEOUT

    use_mx: bool = setting("use-mx", kind=Kind.BOOLEAN, default=False)
    host: str = setting("host")
    """Required unless `use_mx`."""

    port: int = setting("port", kind=Kind.INTEGER, default=DEFAULT_PORT, minimum=1, maximum=MAX_PORT)
    sender: str = setting("sender", read=_read_sender)
    user: str = setting("user")
    _password: str = setting("password")
    recipients: tuple[str, ...] = setting("recipients", read=_read_recipients)
    client_host: str = setting("client-host-name", default=DEFAULT_CLIENT_HOST_NAME)
    tls_verify: bool = setting("tls-verify", kind=Kind.BOOLEAN, default=True)
    ca_file: str = setting("ca-file", kind=Kind.EXISTING_FILE)
    mx_resolver: Endpoint | None = setting("mx-resolver", read=_read_resolver)
    max_owner_recipients: int = setting(
        "max-owner-recipients", kind=Kind.INTEGER, default=DEFAULT_MAX_OWNER_RECIPIENTS, minimum=0
    )
    recipient_domains: tuple[str, ...] = setting("recipient-domains", read=_read_domains)
    """Domains an owner's address must be in (`*.example.com`: its subdomains); empty: any domain."""

    _tls_context: ssl.SSLContext | None = attrs.field(default=None, init=False)
    _nameservers: tuple[Endpoint, ...] = attrs.field(default=(), init=False)
    _progress: _Progress = attrs.field(factory=lambda: _Progress(REMEMBERED_DELIVERIES), init=False)

    @classmethod
    def check_settings(cls, reader: SettingsReader, values: dict[str, Any]) -> None:
        use_mx = values["use_mx"]
        if not use_mx and not reader.has("host"):
            reader.problem("host", "required")
        user, password = values["user"], values["password"]
        if user and not password:
            reader.problem("password", "required when user is set")
        elif password and not user:
            reader.problem("user", "required when password is set")
        for index, recipient in enumerate(values["recipients"]):
            if recipient == OWNER_PLACEHOLDER:
                continue
            address = parseaddr(recipient)[1]
            if not address or (use_mx and "@" not in address):
                reader.problem(f"recipients[{index}]", f"expected an e-mail address, not {recipient!r}")

    @property
    def credentials(self) -> Credentials | None:
        return Credentials(self.user, self._password) if self.user and self._password else None

    @property
    def owner_policy(self) -> OwnerPolicy:
        return OwnerPolicy(self.max_owner_recipients, self.recipient_domains)

    @property
    def verify(self) -> Verify:
        """How the STARTTLS certificate is checked: `ca-file`, else the system CAs; or not at all."""
        return (self.ca_file or True) if self.tls_verify else False

    async def open(self) -> None:
        if self._tls_context is None:
            self._tls_context = await trio.to_thread.run_sync(make_ssl_context, self.verify)
        if self.use_mx and not self._nameservers:
            if self.mx_resolver is not None:
                self._nameservers = (self.mx_resolver,)
            else:
                self._nameservers = await trio.to_thread.run_sync(system_nameservers)

    async def aclose(self) -> None:
        self._tls_context = None
        self._nameservers = ()

    async def send(self, delivery: Delivery) -> SendResult:
        if self._tls_context is None:
            raise RuntimeError(NOT_OPENED)
        recipients, admitted = expand_recipients(self.recipients, delivery, self.owner_policy)
        dropped = admitted.describe_dropped(self.max_owner_recipients) if admitted.dropped else ""
        if dropped:
            log.warning("email action %s: %s", self.name, dropped)
        if not recipients:
            why = dropped or "found no owners in the event"
            raise ActionError(f"no recipients: {OWNER_PLACEHOLDER} {why}", retryable=False)
        message = self._message(delivery, recipients)
        done = self._progress.delivered(delivery)
        pending = tuple(r for r in recipients if r not in done)
        outcomes: list[Outcome] = []

        def record(outcome: Outcome) -> None:  # as each session ends, so a timeout keeps what was done
            outcomes.append(outcome)
            done.update(outcome.delivered)

        if not pending:  # an earlier attempt served everybody, but was cut short before it could say so
            pass
        elif self.use_mx:
            await self._send_via_mx(pending, message, record)
        else:
            record(await self._run_session(Endpoint(self.host, self.port), pending, message))
        failures = [failure for outcome in outcomes for failure in outcome.failures]
        if failures:
            error = _error_from(failures, delivered=len(done), total=len(recipients))
            if not error.retryable:
                self._progress.forget(delivery)
            raise error
        self._progress.forget(delivery)
        replies = "; ".join(dict.fromkeys(outcome.reply for outcome in outcomes if outcome.reply))
        output = f"sent to {len(recipients)} recipient(s): {replies}" + (f"; {dropped}" if dropped else "")
        return SendResult(output=excerpt(output), status=250)

    def _message(self, delivery: Delivery, recipients: tuple[str, ...]) -> bytes:
        try:
            return build_message(
                sender=self.sender,
                recipients=recipients,
                subject=delivery.title,
                body=delivery.description,
                domain=_domain_of(self.sender) or self.client_host,
            )
        except (ValueError, TypeError) as exc:  # an owner that is not an address, ...
            raise ActionError(f"cannot build the mail: {exc}", retryable=False) from None

    async def _run_session(self, endpoint: Endpoint, recipients: tuple[str, ...], message: bytes) -> Outcome:
        assert self._tls_context is not None
        session = Session(
            endpoint=endpoint,
            sender=parseaddr(self.sender)[1],
            recipients=recipients,
            message=message,
            client_host=self.client_host,
            tls_context=self._tls_context,
            credentials=None if self.use_mx else self.credentials,
            timeout=self.timeout,
        )
        # Abandoned on cancel: the thread ends by itself at the session's deadline.
        return await trio.to_thread.run_sync(run_session, session, abandon_on_cancel=True)

    async def _send_via_mx(
        self, recipients: tuple[str, ...], message: bytes, record: Callable[[Outcome], None]
    ) -> None:
        by_domain: dict[str, list[str]] = {}
        for recipient in recipients:
            domain = _domain_of(recipient)
            if not domain:
                record(Outcome(failures=(Failure((recipient,), "no domain to look up", retryable=False),)))
            else:
                by_domain.setdefault(domain, []).append(recipient)

        async def deliver(domain: str, group: tuple[str, ...]) -> None:
            try:
                hosts = await lookup_mx(domain, self._nameservers, min(self.timeout, DNS_QUERY_TIMEOUT))
            except MxLookupError as exc:
                record(Outcome(failures=(Failure(group, str(exc), exc.retryable),)))
                return
            outcome = Outcome()
            for host in hosts:
                outcome = await self._run_session(Endpoint(host, self.port), group, message)
                if not outcome.worth_another_host:
                    break
            record(outcome)

        async with trio.open_nursery() as nursery:
            for domain, group in by_domain.items():
                nursery.start_soon(deliver, domain, tuple(group))


def expand_recipients(
    configured: Iterable[str], delivery: Delivery, policy: OwnerPolicy | None = None
) -> tuple[tuple[str, ...], Admitted]:
    """The configured recipients with the owner placeholder replaced by the event's owners that
    `policy` admits, deduplicated; and what the policy admitted and dropped."""
    configured = [recipient.strip() for recipient in configured]
    wanted = OWNER_PLACEHOLDER in configured
    admitted = (policy or OwnerPolicy()).admit(owners_of(delivery) if wanted else ())
    result: list[str] = []
    for recipient in configured:
        if recipient == OWNER_PLACEHOLDER:
            result.extend(admitted.owners)
        else:
            result.append(recipient)
    return tuple(dict.fromkeys(r for r in result if r)), admitted


def owners_of(delivery: Delivery) -> list[str]:
    """The content's `owners` (`;`-separated), else the event's `application_scope_owners`."""
    for value in (delivery.content.get(OWNERS_CONTENT_KEY), delivery.event.get(OWNERS_EVENT_KEY)):
        items = value if isinstance(value, list | tuple) else as_text(value).split(OWNERS_SEPARATOR)
        owners = [as_text(item).strip() for item in items]
        if any(owners):
            return [owner for owner in owners if owner]
    return []


def build_message(*, sender: str, recipients: Iterable[str], subject: str, body: str, domain: str) -> bytes:
    """The mail as bytes: From, To, Subject (one line), Date, Message-ID, an HTML UTF-8 body."""
    message = EmailMessage(policy=SMTP_POLICY)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = " ".join(subject.split())
    message["Date"] = formatdate()
    message["Message-ID"] = make_msgid(domain=domain)  # with a domain: no blocking getfqdn()
    message.set_content(body, subtype="html", charset="utf-8")
    return message.as_bytes()


def _domain_of(address: str) -> str:
    return parseaddr(address)[1].rpartition("@")[2].strip().lower() if "@" in address else ""


def _error_from(failures: list[Failure], *, delivered: int, total: int) -> ActionError:
    """One ActionError for every failure; retryable when one of them is (the retry skips the served)."""
    details = "; ".join(f"{', '.join(f.recipients)}: {f.reason}" for f in failures)
    prefix = f"delivered to {delivered} of {total} recipient(s); " if delivered else ""
    codes = [f.code for f in failures if f.code is not None]
    return ActionError(
        excerpt(prefix + details, 1000),
        retryable=any(f.retryable for f in failures),
        status=codes[0] if codes else None,
        output=excerpt(details),
    )


class _Progress:
    """Recipients already served, per delivery being retried (the retry loop passes the same object).

    Keyed by identity; the entry holds the delivery itself, so its id cannot be reused while remembered.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[int, tuple[Delivery, set[str]]] = OrderedDict()

    def delivered(self, delivery: Delivery) -> set[str]:
        entry = self._entries.get(id(delivery))
        if entry is None or entry[0] is not delivery:
            entry = (delivery, set())
            self._entries[id(delivery)] = entry
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        self._entries.move_to_end(id(delivery))
        return entry[1]

    def forget(self, delivery: Delivery) -> None:
        entry = self._entries.get(id(delivery))
        if entry is not None and entry[0] is delivery:
            del self._entries[id(delivery)]
