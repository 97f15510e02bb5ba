"""What a nats-py failure means for a caller, and the TLS context a transport connects with.

A connect failure is either worth retrying (nothing listens yet, the link is flaky) or not: the
server refused our NKey, the TLS handshake failed on a certificate, client and server disagree on
TLS. The second kind is `TransportAuthError` at once, so a runner with a bad seed file fails fast
instead of retrying until its connect timeout; `is_fatal` tells the two apart from the exception
nats-py or `ssl` raised. Messages never carry a secret: URLs are redacted, seed files are named,
never read back.
"""

from __future__ import annotations

import ssl

import nats.errors

from actors.errors import TransportAuthError

__all__ = ["build_ssl_context", "describe", "is_fatal", "redact"]

#: Words in an `ssl.SSLError` that mean the handshake will fail the same way next time.
FATAL_TLS_HINTS = (
    "certificate",
    "unknown ca",
    "bad certificate",
    "handshake failure",
    "wrong version number",
    "unsupported protocol",
    "no shared cipher",
)


def is_fatal(exc: BaseException) -> str | None:
    """A connect error retrying will not fix: a description, else None."""
    if isinstance(exc, nats.errors.AuthorizationError):
        return "authorization violation (the server refused our credentials)"
    text = str(exc)
    low = text.lower()
    if isinstance(exc, nats.errors.Error) and (
        "authorization violation" in low or ("authentication" in low and "timeout" not in low)
    ):  # not 'Authentication Timeout': that one is a slow handshake, worth retrying
        return f"authorization violation (the server refused our credentials): {text.strip()}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: the server's certificate is not trusted: {exc.verify_message or text}"
    if isinstance(exc, ssl.SSLError) and any(h in low for h in FATAL_TLS_HINTS):
        reason = getattr(exc, "reason", None) or text
        hint = ""
        if "certificate_required" in low or "certificate required" in low:
            hint = " (the server requires a client certificate: give a TLS cert and key)"
        elif "bad certificate" in low or "bad_certificate" in low or "unknown ca" in low or "unknown_ca" in low:
            hint = " (the server does not accept our client certificate)"
        return f"TLS handshake failed: {reason}{hint}"
    if isinstance(exc, (nats.errors.SecureConnRequiredError, nats.errors.SecureConnWantedError)):
        return f"TLS mismatch between client and server: {type(exc).__name__}"
    return None


def redact(url: str) -> str:
    """`nats://user:secret@host:4222` -> `nats://***@host:4222`."""
    scheme, sep, rest = url.rpartition("://")
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return f"{scheme}{sep}{rest}"


def describe(exc: BaseException | None) -> str:
    """`Type: message` (or just the type when the message is empty), for logs and error texts."""
    if exc is None:
        return "no error reported"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def build_ssl_context(tls_ca: str | None, tls_cert: str | None, tls_key: str | None) -> ssl.SSLContext | None:
    """The client TLS context (None without any TLS file); unreadable material is `TransportAuthError`."""
    if not (tls_ca or tls_cert or tls_key):
        return None
    if bool(tls_cert) != bool(tls_key):
        raise TransportAuthError("TLS: a client certificate needs both a cert file and a key file")
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls_ca)
        if tls_cert and tls_key:
            ctx.load_cert_chain(tls_cert, tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise TransportAuthError(
            f"TLS: cannot load the CA {tls_ca!r} / cert {tls_cert!r} / key {tls_key!r}: {type(exc).__name__}: "
            f"{getattr(exc, 'strerror', None) or getattr(exc, 'reason', None) or exc}"
        ) from None
    return ctx
