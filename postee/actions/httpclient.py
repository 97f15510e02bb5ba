"""The HTTP side shared by every HTTP-based action: one reused client, one way to ask, what replies mean.

Each action opens ONE `httpx.AsyncClient` in `open()` and reuses it (connection pooling, one TLS
context), and makes its requests through `stream` / `request` / `send_request`, so the body is read
bounded and failures become `ActionError`s classified the same way for the retry loop:

- timeouts, refused/reset connections, 5xx, 408 and 429 → retryable (429/503 with Retry-After);
- other 4xx, an unusable URL, a certificate that fails verification → not retryable.

The actions configured by one URL (`UrlAction`: webhook, http, slack, teams) hold a `LeanClient`
instead (`postee.actions.lean_http`, issue #15): the same requests and the same failures for a fraction
of httpx's CPU, with the httpx client inside for what it does not do itself; `request` and
`send_request` take either.

Error messages name the remote by scheme, host and port only: webhook URLs often carry secrets in
their path (Slack, Teams), and errors end up in logs.
"""

from __future__ import annotations

import functools
import http.cookiejar
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import attrs
import httpx
import trio

from postee import __version__
from postee.actions.base import MAX_OUTPUT_CHARS, NOT_OPENED, Action, ActionError, SendResult, define_action, excerpt
from postee.actions.lean_http import LeanClient, Plan
from postee.actions.settings import Kind, setting

USER_AGENT = f"postee-py/{__version__}"

MAX_RESPONSE_BYTES = 64 * 1024
"""Bytes of a response body read at most: actions only keep an excerpt, a huge reply must not cost memory."""

RETRYABLE_STATUSES = frozenset({408, 425, 429})
"""4xx statuses that say "try again later"; every 5xx is retryable too."""

Verify = bool | str | ssl.SSLContext
"""True (system CAs), False (no verification), a CA bundle path, or a ready SSL context."""

Client = httpx.AsyncClient | LeanClient
"""What `request` and `send_request` take: an httpx client, or the lean one (which holds an httpx client)."""


def make_ssl_context(verify: Verify) -> ssl.SSLContext:
    """The TLS context for `verify`. Loads CA files, so run it off the event loop."""
    if isinstance(verify, ssl.SSLContext):
        return verify
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    return ssl.create_default_context()


async def open_http_client(
    *, timeout: float, verify: Verify = True, headers: Mapping[str, str] | None = None, **options: Any
) -> httpx.AsyncClient:
    """A client with `timeout` for each phase, following redirects as Go's client (Postee's) does.

    The TLS context is built in a worker thread (it reads CA files). `options` go to
    `httpx.AsyncClient` as they are (`auth`, `base_url`, a `transport` for a unix socket, ...).
    """
    context = await trio.to_thread.run_sync(make_ssl_context, verify)
    return _httpx_client(context, timeout, headers, options)


def _httpx_client(
    context: ssl.SSLContext, timeout: float, headers: Mapping[str, str] | None, options: Mapping[str, Any]
) -> httpx.AsyncClient:
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(timeout),
        verify=context,
        follow_redirects=True,
        headers={"User-Agent": USER_AGENT, **(headers or {})},
        **options,
    )
    if "cookies" not in options:
        keep_no_cookies(client)
    return client


async def open_lean_client(*, timeout: float, verify: Verify = True, **options: Any) -> LeanClient:
    """A `LeanClient` around the client `open_http_client` would make (same TLS context, headers, cookies).

    With `options` (auth, base_url, a transport, ...), which only httpx implements, every request goes
    through the httpx client.
    """
    context = await trio.to_thread.run_sync(make_ssl_context, verify)
    fallback = _httpx_client(context, timeout, None, options)
    return LeanClient(fallback, context, timeout, enabled=not options)


def keep_no_cookies(client: httpx.AsyncClient) -> None:
    """Make `client`'s cookie jar keep nothing: Postee's Go client has no jar, so a remote's `Set-Cookie`
    never comes back on later requests (with a jar, one non-ASCII cookie broke every later request)."""
    client.cookies.jar.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


@functools.lru_cache(maxsize=256)
def describe_url(url: str | httpx.URL) -> str:
    """`scheme://host:port` of `url`, safe to log. Cached: each send names its URL, mostly the same one."""
    parts = urlsplit(str(url))
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


@attrs.frozen
class Reply:
    """A reply as `request` read it: status, headers and the body, bounded."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@asynccontextmanager
async def stream(
    client: Client | None, method: str, url: str, *, where: str = "", unreachable: str = "", **kwargs: Any
) -> AsyncIterator[httpx.Response]:
    """A streamed request whose failures, while connecting or while the caller reads, become `ActionError`s.

    The classification every HTTP action shares: a timeout or a lost connection is retryable; an
    unusable URL, a certificate that fails verification, too many redirects are not. Messages
    start with `where` (default `METHOD scheme://host:port`); `unreachable` is put before the
    cause of a connection failure (e.g. "cannot reach the Docker daemon at ...: "). The status is
    not checked: that is the caller's (see `check_response`). A `LeanClient` streams through its httpx client.
    """
    if client is None:
        raise RuntimeError(NOT_OPENED)
    if isinstance(client, LeanClient):
        client = client.fallback
    where = where or f"{method} {describe_url(url)}"
    try:
        async with client.stream(method, url, **kwargs) as response:
            yield response
    except (httpx.RequestError, httpx.InvalidURL) as exc:
        raise action_error(exc, where, unreachable) from None


def action_error(exc: httpx.RequestError | httpx.InvalidURL, where: str, unreachable: str = "") -> ActionError:
    """The `ActionError` for an httpx failure to get a reply, classified as `stream` documents."""
    if isinstance(exc, httpx.TimeoutException):
        return ActionError(f"{where}: timed out ({type(exc).__name__})", retryable=True)
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return ActionError(f"{where}: unusable URL: {exc}", retryable=False)
    if isinstance(exc, httpx.TransportError):
        if _caused_by(exc, ssl.SSLCertVerificationError):  # a bad certificate stays bad
            return ActionError(f"{where}: TLS certificate verification failed: {exc}", retryable=False)
        return ActionError(f"{where}: {unreachable}{type(exc).__name__}: {exc}", retryable=True)
    # too many redirects, undecodable body: trying again will not help
    return ActionError(f"{where}: {type(exc).__name__}: {exc}", retryable=False)


async def read_bounded(response: httpx.Response, limit: int, *, where: str = "") -> bytes:
    """At most `limit` bytes of the body. Past that the rest is left unread; with `where` it is an error
    instead (for replies that are parsed, where a cut body is no use)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            if where:
                raise ActionError(f"{where}: reply larger than {limit} bytes", retryable=False)
            break
    return b"".join(chunks)[:limit]


async def request(
    client: Client | None,
    method: str,
    url: str,
    *,
    where: str = "",
    limit: int = MAX_RESPONSE_BYTES,
    whole: bool = False,
    unreachable: str = "",
    **kwargs: Any,
) -> Reply:
    """One request, its body read up to `limit` bytes (`whole`: a longer one is an error, not cut).

    Failures to get a reply are `ActionError`s as `stream` classifies them; any status is returned.
    A `LeanClient` sends what it can itself (`LeanClient.plan`), the rest through its httpx client.
    """
    where = where or f"{method} {describe_url(url)}"
    if isinstance(client, LeanClient):
        plan = client.plan(method, url, **kwargs)
        if plan is not None:
            return await _lean_request(client, plan, where, limit, whole, unreachable)
    async with stream(client, method, url, where=where, unreachable=unreachable, **kwargs) as response:
        body = await read_bounded(response, limit, where=where if whole else "")
    return Reply(response.status_code, response.headers, body)


async def _lean_request(client: LeanClient, plan: Plan, where: str, limit: int, whole: bool, unreachable: str) -> Reply:
    """`request` through the lean client: the same reply, the same `ActionError`s."""
    try:
        status, headers, body = await client.send(plan, limit)
    except (httpx.RequestError, httpx.InvalidURL) as exc:  # InvalidURL: a redirect's Location, as in `stream`
        raise action_error(exc, where, unreachable) from None
    if len(body) > limit:
        if whole:
            raise ActionError(f"{where}: reply larger than {limit} bytes", retryable=False)
        body = body[:limit]
    return Reply(status, headers, body)


async def send_request(client: Client | None, method: str, url: str, **kwargs: Any) -> SendResult:
    """Send one request; a 2xx reply becomes a `SendResult`, anything else an `ActionError`."""
    where = f"{method} {describe_url(url)}"
    reply = await request(client, method, url, where=where, **kwargs)
    return check_response(where, reply.status, reply.body, reply.headers)


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def check_response(
    where: str, status: int, body: bytes, headers: Mapping[str, str] | None = None, *, detail: str | None = None
) -> SendResult:
    """2xx → `SendResult`; otherwise an `ActionError`, retryable for 5xx, 408, 425 and 429.

    The error message quotes `detail` (default: the start of the body) after the status.
    """
    output = excerpt(body, MAX_OUTPUT_CHARS)
    if 200 <= status < 300:
        return SendResult(output=output, status=status)
    retryable = status >= 500 or status in RETRYABLE_STATUSES
    detail = excerpt(output, 200) if detail is None else detail
    raise ActionError(
        f"{where}: HTTP {status}" + (f": {detail}" if detail else ""),
        retryable=retryable,
        status=status,
        output=output,
        retry_after=parse_retry_after((headers or {}).get("retry-after")),
    )


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header given in seconds; None for absent or HTTP-date forms."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


@define_action
class HttpClientAction(Action):
    """Base of actions that talk HTTP: one reused `httpx.AsyncClient`, opened and closed with the action.

    `verify` (True, False, a CA file or a ready SSL context) is how the server's certificate is
    checked; subclasses may declare it as a setting, or derive it in `check_settings`. They may
    override `client_options()` (auth, base_url, default headers, a transport for a unix socket);
    `self.client` is ready in `send`.
    """

    verify: Verify = True
    _client: httpx.AsyncClient | None = attrs.field(default=None, init=False)

    @property
    def client(self) -> httpx.AsyncClient | None:
        return self._client

    def client_options(self) -> dict[str, Any]:
        """Extra keyword arguments for `open_http_client` (e.g. `auth=`, `base_url=`, `headers=`)."""
        return {}

    async def open(self) -> None:
        if self._client is None:
            self._client = await open_http_client(timeout=self.timeout, verify=self.verify, **self.client_options())

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


@define_action
class UrlAction(HttpClientAction):
    """An HTTP action configured by a single `url` (webhook, http, slack, teams): the settings part they share.

    Its `client` is a `LeanClient` (`postee.actions.lean_http`), which `send_request` and `request`
    accept: the same requests and failures as the httpx client, which it holds for what it does not do
    itself (see its module doc), for a fraction of the CPU (issue #15). With `client_options()` (auth, a
    base_url, a transport), everything goes through that httpx client.
    """

    url: str = setting("url", kind=Kind.URL, required=True)
    _lean: LeanClient | None = attrs.field(default=None, init=False)

    @property
    def client(self) -> LeanClient | None:  # type: ignore[override]
        return self._lean

    async def open(self) -> None:
        if self._lean is None:
            self._lean = await open_lean_client(timeout=self.timeout, verify=self.verify, **self.client_options())
            self._client = self._lean.fallback

    async def aclose(self) -> None:
        lean, self._lean, self._client = self._lean, None, None
        if lean is not None:
            await lean.aclose()
