"""The `email` action: send the rendered message as an HTML mail over SMTP, as Postee does.

Settings are Postee's: `host`, `port`, `sender`, `user`, `password`, `recipients`, `client-host-name`,
`use-mx`; plus `tls-verify` / `ca-file` (how the STARTTLS certificate is checked) and `mx-resolver`
(which DNS server answers MX queries). The subject is the title, the body the description, sent as
`text/html; charset=utf-8` (encoded by the stdlib, so a non-ASCII title or a CR/LF in it cannot
break the headers).

Like Go's `smtp.SendMail` (Postee's), a session upgrades with STARTTLS whenever the server offers it,
verifying the certificate, and authenticates (PLAIN, else LOGIN) when `user` and `password` are set,
refusing to send the password in clear text except to a loopback host. The recipient
`<%application_scope_owner%>` stands for the event's owners (the content's `owners`, `;`-separated,
else the event's `application_scope_owners`).

With `use-mx`, mail goes straight to each recipient domain's mail exchangers (lowest preference
first, the next one when a host is unreachable or answers 4xx), without `host` and without
credentials (a password is never handed to a stranger's MX). MX records come from a small DNS client
here (UDP, TCP when truncated), asking `mx-resolver` or the nameservers of /etc/resolv.conf.

smtplib blocks, so each SMTP session runs in a worker thread, under one deadline (`timeout`) for the
whole session. Errors are classified for the retry loop: no connection, a timeout, a 4xx reply →
retryable; a 5xx reply, a refused login, a bad certificate → not. When some recipients accepted the
mail and others did not, the retry of the same delivery only goes to those still missing: nobody
gets the message twice because somebody else's server was down.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import smtplib
import ssl
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate, make_msgid, parseaddr
from typing import ClassVar, Self

import attrs
import trio

from postee.actions.base import Action, ActionError, ActionSpec, Delivery, SendResult, as_text, excerpt
from postee.actions.httpclient import make_ssl_context
from postee.actions.registry import register
from postee.actions.retry import RETRY_SETTINGS, RetryPolicy
from postee.actions.settings import SettingsReader

DEFAULT_PORT = 25
"""SMTP's standard port; Postee has no default for `port`."""

DEFAULT_TIMEOUT = 60.0
"""Seconds one SMTP session (connect to QUIT, every MX host tried) may take. Postee has no limit."""

DEFAULT_CLIENT_HOST_NAME = "localhost"
"""Name given in EHLO when `client-host-name` is unset: Go's smtp client default (so Postee's)."""

OWNER_PLACEHOLDER = "<%application_scope_owner%>"
OWNERS_SEPARATOR = ";"
OWNERS_CONTENT_KEY = "owners"
OWNERS_EVENT_KEY = "application_scope_owners"

LOOPBACK_NAMES = frozenset({"localhost"})
"""Host names (besides loopback addresses) a password may be sent to without TLS, as in Go's PlainAuth."""

ACCEPTED = frozenset({250, 251})
"""RCPT replies meaning "I take it" (251: "not local, will forward")."""

QUIT_MIN_WAIT = 0.01
QUIT_MAX_WAIT = 1.0
"""Seconds the server gets to answer QUIT (within the session's deadline, but at least QUIT_MIN_WAIT)."""

REMEMBERED_DELIVERIES = 256
"""Deliveries whose partial progress (recipients already served) is kept for their retries."""

DNS_PORT = 53
RESOLV_CONF = "/etc/resolv.conf"
DEFAULT_NAMESERVER = "127.0.0.1"
"""Asked when resolv.conf names no nameserver, as the C library does."""

DNS_QUERY_TIMEOUT = 5.0
"""Seconds one nameserver gets to answer (capped by the session's timeout)."""

DNS_MAX_UDP = 4096
DNS_TYPE_MX = 15
DNS_CLASS_IN = 1
DNS_FLAG_RESPONSE = 0x8000
DNS_FLAG_TRUNCATED = 0x0200
DNS_FLAG_RECURSION_DESIRED = 0x0100
DNS_RCODE_NXDOMAIN = 3
DNS_MAX_NAME_STEPS = 255
"""Labels and compression pointers read for one name before the answer is called malformed (loops)."""

_ENDPOINT = re.compile(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]]+))(?::(?P<port>\d+))?$")


@attrs.frozen
class Endpoint:
    """A host and port to connect to."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_endpoint(text: str, default_port: int) -> Endpoint | None:
    """`host`, `host:port`, `[v6]` or `[v6]:port`; None when it is none of these."""
    match = _ENDPOINT.match(text.strip())
    if match is None:
        return None
    port = int(match["port"]) if match["port"] else default_port
    if not 0 < port < 65536:
        return None
    return Endpoint(match["v6"] or match["host"], port)


@attrs.frozen
class Credentials:
    user: str
    password: str = attrs.field(repr=False)


@attrs.frozen
class Failure:
    """Recipients a session (or the MX lookup) did not deliver to, and why."""

    recipients: tuple[str, ...]
    reason: str
    retryable: bool
    code: int | None = None


@attrs.frozen
class Outcome:
    """What one SMTP session achieved: recipients that accepted the mail, failures, the final reply."""

    delivered: tuple[str, ...] = ()
    failures: tuple[Failure, ...] = ()
    reply: str = ""

    @property
    def worth_another_host(self) -> bool:
        """Nothing delivered and every failure transient: the next MX host may do better."""
        return not self.delivered and all(failure.retryable for failure in self.failures)


@attrs.frozen
class Session:
    """Everything one blocking SMTP session needs (it runs in a worker thread)."""

    endpoint: Endpoint
    sender: str
    recipients: tuple[str, ...]
    message: bytes
    client_host: str
    tls_context: ssl.SSLContext
    credentials: Credentials | None
    timeout: float


@register
class EmailAction(Action):
    type_name: ClassVar[str] = "email"
    settings_keys: ClassVar[frozenset[str]] = RETRY_SETTINGS | {
        "host",
        "port",
        "sender",
        "user",
        "password",
        "recipients",
        "client-host-name",
        "use-mx",
        "tls-verify",
        "ca-file",
        "mx-resolver",
    }
    default_timeout: ClassVar[float] = DEFAULT_TIMEOUT

    def __init__(
        self,
        spec: ActionSpec,
        *,
        retry_policy: RetryPolicy,
        host: str,
        port: int,
        sender: str,
        recipients: Iterable[str],
        credentials: Credentials | None = None,
        client_host: str = DEFAULT_CLIENT_HOST_NAME,
        use_mx: bool = False,
        verify: bool | str = True,
        mx_resolver: Endpoint | None = None,
    ) -> None:
        super().__init__(spec, retry_policy=retry_policy)
        self.host = host
        self.port = port
        self.sender = sender
        self.recipients = tuple(recipients)
        self.credentials = credentials
        self.client_host = client_host
        self.use_mx = use_mx
        self.verify = verify
        self.mx_resolver = mx_resolver
        self._tls_context: ssl.SSLContext | None = None
        self._nameservers: tuple[Endpoint, ...] = ()
        self._progress = _Progress(REMEMBERED_DELIVERIES)

    @property
    def timeout(self) -> float:
        return self.retry_policy.timeout

    @classmethod
    def from_spec(cls, spec: ActionSpec) -> Self:
        settings = SettingsReader(spec)
        use_mx = settings.boolean("use-mx", False)
        host = settings.string("host", required=not use_mx)
        port = settings.integer("port", DEFAULT_PORT, minimum=1)
        if port > 65535:
            settings.problem("port", f"must be at most 65535, not {port}")
        sender = settings.string("sender", required=True)
        if sender and "@" not in parseaddr(sender)[1]:
            settings.problem("sender", f"expected an e-mail address, not {sender!r}")
        user = settings.string("user")
        password = settings.string("password")
        if user and not password:
            settings.problem("password", "required when user is set")
        elif password and not user:
            settings.problem("user", "required when password is set")
        if not settings.has("recipients"):
            settings.problem("recipients", "required")
        recipients = [r.strip() for r in settings.string_list("recipients")]
        for index, recipient in enumerate(recipients):
            if recipient == OWNER_PLACEHOLDER:
                continue
            address = parseaddr(recipient)[1]
            if not address or (use_mx and "@" not in address):
                settings.problem(f"recipients[{index}]", f"expected an e-mail address, not {recipient!r}")
        client_host = settings.string("client-host-name", DEFAULT_CLIENT_HOST_NAME)
        tls_verify = settings.boolean("tls-verify", True)
        ca_file = settings.existing_file("ca-file")
        resolver_text = settings.string("mx-resolver")
        mx_resolver = parse_endpoint(resolver_text, DNS_PORT) if resolver_text else None
        if resolver_text and mx_resolver is None:
            settings.problem("mx-resolver", f"expected host or host:port, not {resolver_text!r}")
        policy = settings.retry_policy(DEFAULT_TIMEOUT)
        settings.done()
        return cls(
            spec,
            retry_policy=policy,
            host=host,
            port=port,
            sender=sender,
            recipients=recipients,
            credentials=Credentials(user, password) if user and password else None,
            client_host=client_host,
            use_mx=use_mx,
            verify=(ca_file or True) if tls_verify else False,
            mx_resolver=mx_resolver,
        )

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
            raise RuntimeError("the action was not opened: call `await action.open()` (or `async with action:`) first")
        recipients = expand_recipients(self.recipients, delivery)
        if not recipients:
            raise ActionError(f"no recipients: {OWNER_PLACEHOLDER} found no owners in the event", retryable=False)
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
        return SendResult(output=excerpt(f"sent to {len(recipients)} recipient(s): {replies}"), status=250)

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


def expand_recipients(configured: Iterable[str], delivery: Delivery) -> tuple[str, ...]:
    """The configured recipients with the owner placeholder replaced by the event's owners, deduplicated."""
    result: list[str] = []
    for recipient in configured:
        if recipient.strip() == OWNER_PLACEHOLDER:
            result.extend(owners_of(delivery))
        else:
            result.append(recipient.strip())
    return tuple(dict.fromkeys(r for r in result if r))


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


def _is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Refused(Exception):
    """We refuse to go on (e.g. no TLS for a password); never worth a retry."""


def run_session(session: Session) -> Outcome:
    """One blocking SMTP session: connect, EHLO, STARTTLS if offered, AUTH, MAIL, RCPT..., DATA, QUIT."""
    deadline = time.monotonic() + session.timeout
    all_recipients = session.recipients
    smtp: smtplib.SMTP | None = None
    try:
        # Connecting in the constructor also records the host STARTTLS checks the certificate against.
        smtp = smtplib.SMTP(
            session.endpoint.host, session.endpoint.port, local_hostname=session.client_host, timeout=session.timeout
        )
        _budget(smtp, deadline)
        smtp.ehlo_or_helo_if_needed()
        encrypted = False
        if smtp.has_extn("starttls"):
            _budget(smtp, deadline)
            smtp.starttls(context=session.tls_context)
            _budget(smtp, deadline)
            smtp.ehlo()
            encrypted = True
        if session.credentials is not None:
            _authenticate(smtp, session, encrypted, deadline)
        _budget(smtp, deadline)
        code, reply = smtp.mail(session.sender)
        if code != 250:
            return Outcome(failures=(_reply_failure(all_recipients, "MAIL FROM", code, reply),))
        accepted: list[str] = []
        failures: list[Failure] = []
        for recipient in all_recipients:
            _budget(smtp, deadline)
            code, reply = smtp.rcpt(parseaddr(recipient)[1] or recipient)
            if code in ACCEPTED:
                accepted.append(recipient)
            else:
                failures.append(_reply_failure((recipient,), "RCPT TO", code, reply))
        if not accepted:
            return Outcome(failures=tuple(failures))
        _budget(smtp, deadline)
        code, reply = smtp.data(session.message)
        if code != 250:
            return Outcome(failures=(*failures, _reply_failure(tuple(accepted), "DATA", code, reply)))
        return Outcome(
            delivered=tuple(accepted), failures=tuple(failures), reply=f"{session.endpoint}: {code} {_text(reply)}"
        )
    except Exception as exc:  # noqa: BLE001 - every failure becomes a classified Failure
        return Outcome(failures=(_exception_failure(all_recipients, session.endpoint, exc),))
    finally:
        if smtp is not None:
            _quit(smtp, deadline)


def _quit(smtp: smtplib.SMTP, deadline: float) -> None:
    """Say QUIT politely (briefly: the mail is already sent or lost) and close the connection."""
    try:
        if smtp.sock is not None:
            smtp.sock.settimeout(max(QUIT_MIN_WAIT, min(QUIT_MAX_WAIT, deadline - time.monotonic())))
            smtp.quit()
    except (smtplib.SMTPException, OSError):
        pass
    smtp.close()


def _budget(smtp: smtplib.SMTP, deadline: float) -> None:
    """Give the next command what is left of the session's time, or stop now."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the session's time is up")
    if smtp.sock is not None:
        smtp.sock.settimeout(left)


def _authenticate(smtp: smtplib.SMTP, session: Session, encrypted: bool, deadline: float) -> None:
    credentials = session.credentials
    assert credentials is not None
    if not encrypted and not _is_loopback(session.endpoint.host):
        raise _Refused("the server offers no STARTTLS: refusing to send the password unencrypted")
    offered = smtp.esmtp_features.get("auth", "").upper().split()
    smtp.user, smtp.password = credentials.user, credentials.password
    for mechanism, respond in (("PLAIN", smtp.auth_plain), ("LOGIN", smtp.auth_login)):
        if mechanism in offered:
            _budget(smtp, deadline)
            smtp.auth(mechanism, respond)
            return
    raise _Refused(f"the server offers no AUTH PLAIN or LOGIN (offered: {' '.join(offered) or 'none'})")


def _text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", errors="replace") if isinstance(reply, bytes) else reply
    return excerpt(" ".join(text.split()), 300)


def _reply_failure(recipients: tuple[str, ...], command: str, code: int, reply: bytes | str) -> Failure:
    return Failure(recipients, f"{command}: {code} {_text(reply)}", retryable=not 500 <= code < 600, code=code)


def _exception_failure(recipients: tuple[str, ...], endpoint: Endpoint, exc: Exception) -> Failure:
    where = f"SMTP {endpoint}"
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return Failure(
            recipients,
            f"{where}: authentication refused: {exc.smtp_code} {_text(exc.smtp_error)}",
            retryable=400 <= exc.smtp_code < 500,
            code=exc.smtp_code,
        )
    if isinstance(exc, smtplib.SMTPResponseException):
        failure = _reply_failure(recipients, where, exc.smtp_code, exc.smtp_error)
        return attrs.evolve(failure, retryable=failure.retryable or exc.smtp_code < 400)
    if isinstance(exc, _Refused | smtplib.SMTPNotSupportedError):
        return Failure(recipients, f"{where}: {exc}", retryable=False)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return Failure(recipients, f"{where}: TLS certificate verification failed: {exc.verify_message}", False)
    if isinstance(exc, TimeoutError):
        return Failure(recipients, f"{where}: timed out", retryable=True)
    if isinstance(exc, OSError | smtplib.SMTPException):  # refused, reset, unresolvable, disconnected, TLS
        return Failure(recipients, f"{where}: {type(exc).__name__}: {exc}", retryable=True)
    return Failure(recipients, f"{where}: {type(exc).__name__}: {exc}", retryable=False)


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


# --- MX lookup: a minimal DNS client (RFC 1035), asynchronous on Trio sockets ---------------------


class MxLookupError(Exception):
    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def system_nameservers(path: str = RESOLV_CONF) -> tuple[Endpoint, ...]:
    """The `nameserver` lines of resolv.conf (blocking read: call it in a thread)."""
    servers: list[Endpoint] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            for line in file:
                fields = line.split()
                if len(fields) >= 2 and fields[0] == "nameserver":
                    servers.append(Endpoint(fields[1].partition("%")[0], DNS_PORT))
    except OSError:
        pass
    return tuple(servers) or (Endpoint(DEFAULT_NAMESERVER, DNS_PORT),)


async def lookup_mx(domain: str, nameservers: Iterable[Endpoint], timeout: float) -> list[str]:
    """The mail hosts of `domain`, by preference; the domain itself when it has no MX (RFC 5321 §5.1)."""
    try:
        qname = domain.rstrip(".").encode("idna")
    except UnicodeError:
        raise MxLookupError(f"MX {domain}: not a valid domain name", retryable=False) from None
    errors: list[str] = []
    for server in nameservers:
        query_id = secrets.randbits(16)
        query = _dns_query(query_id, qname)
        try:
            with trio.fail_after(timeout):
                response = await _ask_udp(server, query)
                if _flags(response) & DNS_FLAG_TRUNCATED:
                    response = await _ask_tcp(server, query)
            records = parse_mx_response(response, query_id)
        except MxLookupError as exc:
            if not exc.retryable:
                raise MxLookupError(f"MX {domain}: {exc}", retryable=False) from None
            errors.append(f"{server}: {exc}")
            continue
        except trio.TooSlowError:
            errors.append(f"{server}: timed out")
            continue
        except OSError as exc:
            errors.append(f"{server}: {type(exc).__name__}: {exc}")
            continue
        if not records:
            return [domain]
        if len(records) == 1 and records[0][1] == "":
            raise MxLookupError(f"MX {domain}: the domain accepts no mail (null MX)", retryable=False)
        return [host for _, host in sorted(records, key=lambda record: record[0]) if host]
    raise MxLookupError(f"MX {domain}: no answer ({'; '.join(errors) or 'no nameserver'})", retryable=True)


def _dns_query(query_id: int, qname: bytes) -> bytes:
    labels = b"".join(bytes([len(label)]) + label for label in qname.split(b".") if label)
    return (
        struct.pack("!6H", query_id, DNS_FLAG_RECURSION_DESIRED, 1, 0, 0, 0)
        + labels
        + b"\0"
        + struct.pack("!2H", DNS_TYPE_MX, DNS_CLASS_IN)
    )


def _flags(response: bytes) -> int:
    return struct.unpack_from("!H", response, 2)[0] if len(response) >= 4 else 0


async def _ask_udp(server: Endpoint, query: bytes) -> bytes:
    infos = await trio.socket.getaddrinfo(server.host, server.port, type=trio.socket.SOCK_DGRAM)
    family, kind, proto, _, address = infos[0]
    with trio.socket.socket(family, kind, proto) as sock:
        await sock.connect(address)  # a connected socket only hears from that server
        await sock.send(query)
        while True:
            response = await sock.recv(DNS_MAX_UDP)
            if response[:2] == query[:2]:  # anything else is a stray or late answer
                return response


async def _ask_tcp(server: Endpoint, query: bytes) -> bytes:
    stream = await trio.open_tcp_stream(server.host, server.port)
    async with stream:
        await stream.send_all(struct.pack("!H", len(query)) + query)
        (length,) = struct.unpack("!H", await _receive_exactly(stream, 2))
        return await _receive_exactly(stream, length)


async def _receive_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        if not chunk:
            raise MxLookupError("the nameserver closed the connection", retryable=True)
        data += chunk
    return bytes(data)


def parse_mx_response(response: bytes, query_id: int) -> list[tuple[int, str]]:
    """(preference, host) of the MX answers; [] when the domain exists without MX. Raises MxLookupError."""
    try:
        ident, flags, questions, answers, _, _ = struct.unpack_from("!6H", response, 0)
        if ident != query_id or not flags & DNS_FLAG_RESPONSE:
            raise MxLookupError("not an answer to our query", retryable=True)
        rcode = flags & 0xF
        if rcode == DNS_RCODE_NXDOMAIN:
            raise MxLookupError("no such domain", retryable=False)
        if rcode != 0:
            raise MxLookupError(f"DNS error (rcode {rcode})", retryable=True)
        offset = 12
        for _ in range(questions):
            _, offset = _read_name(response, offset)
            offset += 4
        records: list[tuple[int, str]] = []
        for _ in range(answers):
            _, offset = _read_name(response, offset)
            rtype, rclass, _ttl, length = struct.unpack_from("!2HIH", response, offset)
            offset += 10
            if rtype == DNS_TYPE_MX and rclass == DNS_CLASS_IN:
                (preference,) = struct.unpack_from("!H", response, offset)
                host, _ = _read_name(response, offset + 2)
                records.append((preference, host))
            offset += length
        return records
    except (struct.error, IndexError, UnicodeError):
        raise MxLookupError("malformed DNS answer", retryable=True) from None


def _read_name(data: bytes, offset: int) -> tuple[str, int]:
    """The (possibly compressed) name at `offset`, and the offset just after it."""
    labels: list[str] = []
    end: int | None = None
    for _ in range(DNS_MAX_NAME_STEPS):
        length = data[offset]
        if length & 0xC0 == 0xC0:
            if end is None:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | data[offset + 1]
            continue
        if length == 0:
            return ".".join(labels), (end if end is not None else offset + 1)
        label = data[offset + 1 : offset + 1 + length]
        if len(label) != length:
            raise IndexError("label past the end")
        labels.append(label.decode("ascii"))
        offset += 1 + length
    raise IndexError("name too long, or a pointer loop")
