"""The `http` action: a configurable HTTP request per delivery, as Postee's http action.

Settings: `method` (default POST), `url` (required), `headers` (name → list of values; several
values give several header lines), `timeout` (default 5s), and a body from `body-file` (read once,
at load time: a missing file is a config error) or `body-content`. In the body every
`event.input.<dotted.path>` is replaced by that value of the raw event (see `eventpath`). The
request carries `Postee-Event: base64(description)`. Any 2xx reply is success.

Event values are data, never syntax. A body template that is a JSON object or array (with its
references standing for values) is compiled at load time (`jsonbody`): a reference inside a JSON
string gets the value JSON-escaped, a reference standing as a whole value gets the value as JSON, so
the body sent is always valid JSON with exactly the template's keys (Postee pastes the raw text). So
is an NDJSON body (one document per line: an NDJSON/JSON Lines `Content-Type`, or several documents
one per line) line by line, and an `application/json-seq` body record by record. A body with
references that starts with `{` or `[`, or whose `Content-Type` says JSON, but cannot be compiled is
a config error, as escaping would be impossible. Other (plain text) bodies keep plain substitution.
Header values are sent as written (never substituted), and the description travels base64-encoded,
so an event cannot add a header line.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from postee.actions.base import Delivery, SendResult, define_action
from postee.actions.httpclient import UrlAction, send_request
from postee.actions.jsonbody import JsonTemplate, UnsafeBodyTemplate, compile_body_template
from postee.actions.registry import register
from postee.actions.settings import SettingsReader, setting
from postee.values.eventpath import substitute

DEFAULT_METHOD = "POST"
DEFAULT_TIMEOUT = 5.0
"""Postee's http action timeout."""

EVENT_HEADER = "Postee-Event"
_TOKEN_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
"""An HTTP token (RFC 9110): what a method or a header name may be made of."""

Headers = tuple[tuple[str, str], ...]


def _read_method(settings: SettingsReader, key: str) -> str:
    method = settings.string(key, DEFAULT_METHOD).upper()
    if not _TOKEN_RE.match(method):
        settings.problem(key, f"not an HTTP method: {method!r}")
    return method


def _read_headers(settings: SettingsReader, key: str) -> Headers:
    raw = settings.mapping(key)
    headers: list[tuple[str, str]] = []
    for name, values in raw.items():
        where = f"{key}.{name}"
        if not isinstance(name, str) or not _TOKEN_RE.match(name):
            settings.problem(where, "not a valid header name")
            continue
        for value in _header_values(settings, where, values):
            if "\r" in value or "\n" in value:
                settings.problem(where, "a header value cannot contain a line break")
            elif not value.isascii():  # every send would fail encoding it
                settings.problem(where, "a header value must be ASCII text")
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


def _read_body(settings: SettingsReader, file_key: str, content_key: str) -> str | None:
    """The body template: the file's text, read now (a missing file is a config error), or the content."""
    settings.exclusive(file_key, content_key)
    path = settings.existing_file(file_key)
    if path and not settings.local:
        return None  # read where the action runs
    if path:
        try:
            with open(path, encoding="utf-8") as file:
                return file.read()
        except (OSError, UnicodeDecodeError) as exc:
            settings.problem(file_key, f"cannot read {path}: {exc}")
            return None
    content = settings.string(content_key)
    return content if content else None


@register
@define_action
class HttpAction(UrlAction):
    type_name: ClassVar[str] = "http"
    default_timeout: ClassVar[float] = DEFAULT_TIMEOUT

    method: str = setting("method", read=_read_method)
    headers: Headers = setting("headers", read=_read_headers)
    body: str | None = setting("body-file", "body-content", read=_read_body)
    json_body: JsonTemplate | None = None
    """`body` compiled, when it is JSON or NDJSON (set in `check_settings`): rendered with escaping."""

    @classmethod
    def check_settings(cls, reader: SettingsReader, values: dict[str, Any]) -> None:
        body = values["body"]
        if body is None:
            return
        content_type = next((v for name, v in values["headers"] if name.lower() == "content-type"), "")
        try:
            values["json_body"] = compile_body_template(body, content_type)
        except UnsafeBodyTemplate as exc:
            reader.problem("body-file" if reader.has("body-file") else "body-content", str(exc))

    def request_headers(self, delivery: Delivery) -> list[tuple[str, str]]:
        encoded = base64.b64encode(delivery.description.encode("utf-8")).decode("ascii")
        return [*self.headers, (EVENT_HEADER, encoded)]

    def request_body(self, delivery: Delivery) -> bytes | None:
        if self.body is None:
            return None
        if self.json_body is not None:
            return self.json_body.render(delivery.event).encode("utf-8")
        return substitute(self.body, delivery.event).encode("utf-8", errors="replace")

    async def send(self, delivery: Delivery) -> SendResult:
        return await send_request(
            self.client,
            self.method,
            self.url,
            headers=self.request_headers(delivery),
            content=self.request_body(delivery),
        )
