"""The `splunk` action: send the event to a Splunk HTTP Event Collector (HEC), as Postee does.

`POST <url>/services/collector` with `Authorization: Splunk <token>` and the body
`{"sourcetype": "_json", "event": <event>}`. The event is the rendered description parsed as JSON:
with Postee's `raw-message-json` template (the usual choice for Splunk) that is the whole input
event; a description that is not JSON is sent as a text event. Any 2xx is success (HEC answers
200 `{"text":"Success","code":0}`); 503 "server busy" is retried, bad tokens and bad data are not.

Splunk cuts longer events (its `TRUNCATE` default is 10000 bytes), which leaves broken JSON. So an
event whose body is over `size-limit` bytes loses, in this order and only as far as needed, its
`resources` (the long package and vulnerability lists of a scan), `malware` and `sensitive_data`
keys, and gains a `postee_note` saying what was removed and how big it was. An event still too big
after that is sent anyway, with a warning.

Where this differs from Postee, on purpose:
- `tls-verify: true` means "verify the server's certificate" (the default). Postee reads it the
  other way round (its `tls-verify: true` skips verification).
- The limit counts the bytes of the whole request body, not the characters of the description.
- A `url` that already ends with `/services/collector` (or `/services/collector/event`) is used as is.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from postee.actions.base import ActionError, Delivery, SendResult, define_action
from postee.actions.httpclient import HttpClientAction, send_request
from postee.actions.registry import register
from postee.actions.settings import Kind, setting

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
"""Seconds per request (Postee sets none)."""

DEFAULT_SIZE_LIMIT = 10000
"""Postee's default `size-limit`, and Splunk's default `TRUNCATE`, in bytes."""

DEFAULT_TLS_VERIFY = True

COLLECTOR_PATH = "/services/collector"
COLLECTOR_PATHS = (COLLECTOR_PATH, COLLECTOR_PATH + "/event")
"""Paths of the HEC JSON endpoint, accepted at the end of `url`."""

SOURCETYPE = "_json"

TRIMMABLE_KEYS = ("resources", "malware", "sensitive_data")
"""Keys dropped from an event over the size limit, in this order, until it fits."""

NOTE_KEY = "postee_note"

TLS_HINT = " (set tls-verify: false to skip verification; note that Postee's tls-verify: true meant skip)"


def collector_url(url: str) -> str:
    """The HEC endpoint for the configured `url` (a Splunk base URL, or the endpoint itself)."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    if not path.endswith(COLLECTOR_PATHS):
        path += COLLECTOR_PATH
    return urlunsplit(parts._replace(path=path))


@register
@define_action
class SplunkAction(HttpClientAction):
    type_name: ClassVar[str] = "splunk"
    default_timeout: ClassVar[float] = DEFAULT_TIMEOUT

    url: str = setting("url", kind=Kind.URL, required=True, converter=collector_url)
    """The HEC endpoint (`collector_url` of the configured `url`)."""

    _token: str = setting("token", required=True)
    size_limit: int = setting(
        "size-limit",
        kind=Kind.INTEGER,
        default=DEFAULT_SIZE_LIMIT,
        minimum=0,
        converter=lambda limit: limit or DEFAULT_SIZE_LIMIT,  # 0 means the default, as in Postee
    )
    verify: bool = setting("tls-verify", kind=Kind.BOOLEAN, default=DEFAULT_TLS_VERIFY)

    def __attrs_post_init__(self) -> None:
        if self.size_limit < DEFAULT_SIZE_LIMIT:
            log.warning(
                "action %s: size-limit %d is below the default %d", self.name, self.size_limit, DEFAULT_SIZE_LIMIT
            )

    def client_options(self) -> dict[str, Any]:
        return {"headers": {"Authorization": f"Splunk {self._token}", "Content-Type": "application/json"}}

    def body(self, delivery: Delivery) -> bytes:
        """The HEC request body for `delivery`, trimmed to `size_limit` bytes when possible."""
        body, removed = fit_event(delivery_event(delivery), self.size_limit)
        if removed:
            log.info("action %s: removed %s to fit size-limit %d", self.name, ", ".join(removed), self.size_limit)
        if len(body) > self.size_limit:
            log.warning(
                "action %s: event of %d bytes is over size-limit %d even trimmed; Splunk may cut it",
                self.name,
                len(body),
                self.size_limit,
            )
        return body

    async def send(self, delivery: Delivery) -> SendResult:
        try:
            return await send_request(self.client, "POST", self.url, content=self.body(delivery))
        except ActionError as exc:
            if exc.status is None and not exc.retryable and "certificate verification failed" in exc.message:
                raise ActionError(exc.message + TLS_HINT, retryable=False) from None
            raise


def delivery_event(delivery: Delivery) -> Any:
    """The description parsed as JSON (the raw-message-json template's event), or the description text."""
    text = delivery.description
    try:
        return json.loads(text)
    except ValueError:
        return text


def encode(event: Any) -> bytes:
    return json.dumps({"sourcetype": SOURCETYPE, "event": event}, ensure_ascii=False, separators=(",", ":")).encode(
        "utf-8"
    )


def fit_event(event: Any, size_limit: int) -> tuple[bytes, list[str]]:
    """The body for `event`, with trimmable keys removed in order until it fits; and the keys removed."""
    body = encode(event)
    if len(body) <= size_limit or not isinstance(event, Mapping):
        return body, []
    original_size = len(body)
    trimmed = dict(event)
    removed: list[str] = []
    for key in TRIMMABLE_KEYS:
        if key not in trimmed:
            continue
        del trimmed[key]
        removed.append(key)
        trimmed[NOTE_KEY] = (
            f"postee removed {', '.join(removed)} to fit the size limit of {size_limit} bytes"
            f" (the event was {original_size} bytes)"
        )
        body = encode(trimmed)
        if len(body) <= size_limit:
            break
    return body, removed
