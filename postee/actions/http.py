"""The `http` action: a configurable HTTP request per delivery, as Postee's http action.

Settings: `method` (default POST), `url` (required), `headers` (name → list of values; several
values give several header lines), `timeout` (default 5s), and a body from `body-file` (read once,
at load time: a missing file is a config error) or `body-content`. In the body every
`event.input.<dotted.path>` is replaced by that value of the raw event (see `eventpath`). The
request carries `Postee-Event: base64(description)`. Any 2xx reply is success.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Self

from postee.actions.base import ActionSpec, Delivery, SendResult
from postee.actions.eventpath import substitute
from postee.actions.httpclient import HttpClientAction, send_request
from postee.actions.registry import register
from postee.actions.retry import RETRY_SETTINGS, RetryPolicy
from postee.actions.settings import SettingsReader

DEFAULT_METHOD = "POST"
DEFAULT_TIMEOUT = 5.0
"""Postee's http action timeout."""

EVENT_HEADER = "Postee-Event"
_TOKEN_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
"""An HTTP token (RFC 9110): what a method or a header name may be made of."""

Headers = tuple[tuple[str, str], ...]


@register
class HttpAction(HttpClientAction):
    type_name: ClassVar[str] = "http"
    settings_keys: ClassVar[frozenset[str]] = RETRY_SETTINGS | {"method", "url", "headers", "body-file", "body-content"}
    default_timeout: ClassVar[float] = DEFAULT_TIMEOUT

    def __init__(
        self,
        spec: ActionSpec,
        *,
        retry_policy: RetryPolicy,
        url: str,
        method: str = DEFAULT_METHOD,
        headers: Headers = (),
        body: str | None = None,
    ) -> None:
        super().__init__(spec, retry_policy=retry_policy)
        self.url = url
        self.method = method
        self.headers = headers
        self.body = body

    @classmethod
    def from_spec(cls, spec: ActionSpec) -> Self:
        settings = SettingsReader(spec)
        url = settings.url("url", required=True)
        method = settings.string("method", DEFAULT_METHOD).upper()
        if not _TOKEN_RE.match(method):
            settings.problem("method", f"not an HTTP method: {method!r}")
        headers = _read_headers(settings)
        settings.exclusive("body-file", "body-content")
        body = _read_body(settings)
        policy = settings.retry_policy(DEFAULT_TIMEOUT)
        settings.done()
        return cls(spec, retry_policy=policy, url=url, method=method, headers=headers, body=body)

    def request_headers(self, delivery: Delivery) -> list[tuple[str, str]]:
        encoded = base64.b64encode(delivery.description.encode("utf-8")).decode("ascii")
        return [*self.headers, (EVENT_HEADER, encoded)]

    def request_body(self, delivery: Delivery) -> bytes | None:
        if self.body is None:
            return None
        return substitute(self.body, delivery.event).encode("utf-8")

    async def send(self, delivery: Delivery) -> SendResult:
        return await send_request(
            self.client,
            self.method,
            self.url,
            headers=self.request_headers(delivery),
            content=self.request_body(delivery),
        )


def _read_headers(settings: SettingsReader) -> Headers:
    raw = settings.mapping("headers")
    headers: list[tuple[str, str]] = []
    for name, values in raw.items():
        key = f"headers.{name}"
        if not isinstance(name, str) or not _TOKEN_RE.match(name):
            settings.problem(key, "not a valid header name")
            continue
        for value in _header_values(settings, key, values):
            if "\r" in value or "\n" in value:
                settings.problem(key, "a header value cannot contain a line break")
            else:
                headers.append((name, value))
    return tuple(headers)


def _header_values(settings: SettingsReader, key: str, values: Any) -> list[str]:
    """Postee writes header values as lists; a single scalar is accepted too."""
    if isinstance(values, str | int | float) and not isinstance(values, bool):
        return [str(values)]
    if isinstance(values, Sequence) and not isinstance(values, str | bytes | Mapping):
        good = []
        for index, value in enumerate(values):
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                settings.problem(f"{key}[{index}]", f"expected a string, not {type(value).__name__}")
            else:
                good.append(str(value))
        return good
    settings.problem(key, f"expected a list of strings, not {type(values).__name__}")
    return []


def _read_body(settings: SettingsReader) -> str | None:
    path = settings.existing_file("body-file")
    if path:
        try:
            with open(path, encoding="utf-8") as file:
                return file.read()
        except (OSError, UnicodeDecodeError) as exc:
            settings.problem("body-file", f"cannot read {path}: {exc}")
            return None
    content = settings.string("body-content")
    return content if content else None
