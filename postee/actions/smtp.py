"""One SMTP session, blocking, as the email action runs it in a worker thread.

Like Go's `smtp.SendMail` (Postee's), a session upgrades with STARTTLS whenever the server offers it,
verifying the certificate, and authenticates (PLAIN, else LOGIN) when credentials are given, refusing
to send the password in clear text except to a loopback host.

The whole session (connect to QUIT) runs under one deadline. It never raises: what it achieved comes
back as an `Outcome` (recipients that accepted the mail, and `Failure`s classified for the retry
loop: no connection, a timeout, a 4xx reply → retryable; a 5xx reply, a refused login, a bad
certificate → not).
"""

from __future__ import annotations

import ipaddress
import re
import smtplib
import ssl
import time
from email.utils import parseaddr

import attrs

from postee.actions.base import excerpt

LOOPBACK_NAMES = frozenset({"localhost"})
"""Host names (besides loopback addresses) a password may be sent to without TLS, as in Go's PlainAuth."""

ACCEPTED = frozenset({250, 251})
"""RCPT replies meaning "I take it" (251: "not local, will forward")."""

QUIT_MIN_WAIT = 0.01
QUIT_MAX_WAIT = 1.0
"""Seconds the server gets to answer QUIT (within the session's deadline, but at least QUIT_MIN_WAIT)."""

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
    except Exception as exc:  # every failure, expected or not, becomes a classified Failure
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
