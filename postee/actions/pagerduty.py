"""The `pagerduty` action: trigger a PagerDuty alert through the Events API v2, as Postee does.

`POST <events-url>` (default `https://events.pagerduty.com/v2/enqueue`) with

    {"routing_key", "event_action": "trigger", "dedup_key",
     "payload": {"summary": title, "source", "severity", "timestamp", "custom_details": description},
     "links": [{"href": url}]}

Where Postee sends a fixed source ("postee"), severity ("critical") and time (now), the alert here
says more when the event allows it:

- `source`: the event's `image`, `host` or `hostName`, else "postee";
- `severity`: the rendered `severity` mapped to PagerDuty's four levels (critical → critical,
  high/error → error, medium/warning → warning, low/negligible/info → info), else "critical";
- `timestamp`: the rendered `date` (epoch seconds or ISO-8601), else now;
- `custom_details`: the description parsed when it is JSON, else the text;
- `dedup_key`: built from the event's `dedup-props` paths like the route's `unique-message-props`
  (so one finding keeps updating one PagerDuty alert); without them, or when the event has none of
  them, `<route>/<event id>`, which makes a retry after a lost reply update the same alert instead
  of opening a second one.

PagerDuty answers 202 Accepted; a 400 `{"status": "invalid event", "errors": [...]}` is reported
with its errors; 429 (rate limited) and 5xx are retried. `pagerduty-auth-token` is accepted for
Postee configs but not sent: the Events API authenticates by routing key alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

from postee.actions.base import ActionError, Delivery, SendResult, as_text, define_action
from postee.actions.httpclient import HttpClientAction, describe_url, send_request
from postee.actions.registry import register
from postee.actions.settings import Kind, setting
from postee.values.eventkeys import dedup_key

DEFAULT_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
"""PagerDuty's Events API v2 (US). EU service regions: `https://events.eu.pagerduty.com/v2/enqueue`."""

DEFAULT_TIMEOUT = 30.0
DEFAULT_SOURCE = "postee"
SOURCE_FIELDS = ("image", "host", "hostName")
"""Top-level event fields naming the affected system, tried in order for `payload.source`."""

DEFAULT_SEVERITY = "critical"
"""Postee sends every alert as critical; still the choice when the content has no known severity."""

SEVERITIES = {
    "critical": "critical",
    "high": "error",
    "error": "error",
    "medium": "warning",
    "moderate": "warning",
    "warning": "warning",
    "low": "info",
    "negligible": "info",
    "info": "info",
    "informational": "info",
}
"""Content severities (Aqua, Trivy, Tracee names; PagerDuty's own) → PagerDuty severities."""

MAX_SUMMARY = 1024
MAX_SOURCE = 255
MAX_DEDUP_KEY = 255
"""PagerDuty's limits (characters). A longer dedup key is replaced by its SHA-256."""

EPOCH_MILLISECONDS_ABOVE = 10**11
"""A numeric date bigger than this is in milliseconds (10**11 seconds is the year 5138)."""

ELLIPSIS = "…"


@register
@define_action
class PagerDutyAction(HttpClientAction):
    type_name: ClassVar[str] = "pagerduty"
    default_timeout: ClassVar[float] = DEFAULT_TIMEOUT

    _auth_token: str = setting("pagerduty-auth-token")
    """Read (and type-checked) for Postee configs; not sent: the Events API authenticates by routing key."""

    _routing_key: str = setting("pagerduty-routing-key", required=True)
    events_url: str = setting("events-url", kind=Kind.URL, default=DEFAULT_EVENTS_URL)
    dedup_props: tuple[str, ...] = setting("dedup-props", kind=Kind.STRING_LIST)

    def dedup_key(self, delivery: Delivery) -> str | None:
        """The alert's dedup key: from `dedup-props`, else `<route>/<event id>`, else None (PagerDuty picks)."""
        key = dedup_key(delivery.event, self.dedup_props) if self.dedup_props else None
        if key is None and delivery.event_id:
            key = f"{delivery.route}/{delivery.event_id}"
        if key is not None and len(key) > MAX_DEDUP_KEY:
            key = hashlib.sha256(key.encode("utf-8")).hexdigest()
        return key

    def event(self, delivery: Delivery, now: datetime | None = None) -> dict[str, Any]:
        """The Events v2 body for `delivery`."""
        content = delivery.content
        payload = {
            "summary": cut(delivery.title, MAX_SUMMARY),
            "source": cut(event_source(delivery.event), MAX_SOURCE),
            "severity": severity(content.get("severity")),
            "timestamp": timestamp(content.get("date"), now),
            "custom_details": details(delivery.description),
        }
        body: dict[str, Any] = {"routing_key": self._routing_key, "event_action": "trigger"}
        key = self.dedup_key(delivery)
        if key is not None:
            body["dedup_key"] = key
        body["payload"] = payload
        url = as_text(content.get("url")).strip()
        if url:
            body["links"] = [{"href": url, "text": url}]
        return body

    async def send(self, delivery: Delivery) -> SendResult:
        if not delivery.title.strip():
            raise ActionError(
                f"POST {describe_url(self.events_url)}: the template rendered no title; "
                "a PagerDuty alert needs a summary",
                retryable=False,
            )
        content = json.dumps(self.event(delivery), ensure_ascii=False).encode("utf-8")
        try:
            return await send_request(
                self.client, "POST", self.events_url, content=content, headers={"Content-Type": "application/json"}
            )
        except ActionError as exc:
            raise _with_event_errors(exc, f"POST {describe_url(self.events_url)}") from None


def _with_event_errors(exc: ActionError, where: str) -> ActionError:
    """PagerDuty's `{"status": ..., "message": ..., "errors": [...]}` spelled out in the error message."""
    try:
        reply = json.loads(exc.output)
    except (ValueError, RecursionError):
        return exc
    if not isinstance(reply, Mapping) or not isinstance(reply.get("errors"), list):
        return exc
    status = as_text(reply.get("status") or reply.get("message")) or "rejected"
    errors = "; ".join(as_text(error) for error in reply["errors"])
    return ActionError(
        f"{where}: HTTP {exc.status}: {status}: {errors}",
        retryable=exc.retryable,
        status=exc.status,
        output=exc.output,
        retry_after=exc.retry_after,
    )


def event_source(event: Mapping[str, Any]) -> str:
    """The first non-empty `SOURCE_FIELDS` string of the event, else "postee"."""
    for field in SOURCE_FIELDS:
        value = event.get(field)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return DEFAULT_SOURCE


def severity(value: Any) -> str:
    """PagerDuty's severity for a rendered severity name; "critical" for anything else."""
    return SEVERITIES.get(as_text(value).strip().lower(), DEFAULT_SEVERITY)


def timestamp(value: Any, now: datetime | None = None) -> str:
    """ISO-8601 (UTC when no zone is given) from epoch seconds/milliseconds or an ISO date; else now."""
    moment = _parse_date(value)
    if moment is None:
        moment = now or datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()


def _parse_date(value: Any) -> datetime | None:
    if isinstance(value, bool) or value is None:
        return None
    text = as_text(value).strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            return None
    if seconds <= 0 or seconds != seconds:
        return None  # templates render a missing date as 0
    if seconds > EPOCH_MILLISECONDS_ABOVE:
        seconds /= 1000
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def details(description: str) -> Any:
    """The description as JSON when it is JSON, else as text."""
    stripped = description.strip()
    if stripped[:1] in ("{", "["):
        try:
            return json.loads(stripped)
        except (ValueError, RecursionError):
            pass
    return description


def cut(text: str, limit: int) -> str:
    """`text` shortened to at most `limit` characters, ending with "…" when it was cut."""
    return text if len(text) <= limit else text[: limit - len(ELLIPSIS)] + ELLIPSIS
