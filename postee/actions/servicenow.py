"""The `serviceNow` action: open a record (an incident by default) through ServiceNow's Table API.

As Postee: `POST https://<instance>.service-now.com/api/now/table/<board>` (board default `incident`)
with Basic auth, and the rendered content mapped onto the record:

    short_description = title              description = summary
    work_notes = "[code]" + description + "[/code]"   (ServiceNow renders the HTML between the tags)
    caller_id = user                       category, subcategory
    opened_at = date                       impact = urgency = severity
    assigned_to = assignedTo               assignment_group = assignedGroup

The bundled `servicenow*` templates fill those content fields. ServiceNow answers 201 Created; the
request asks for `sysparm_fields=number,sys_id`, so the answer is short and the result can name the
record created (`created incident INC0010001 (sys_id ...)`).

Where this differs from Postee, on purpose:
- `opened_at` is sent in ServiceNow's own format, `YYYY-MM-DD HH:MM:SS` in UTC (the Table API reads
  values as UTC unless asked for display values). Postee sends Go's RFC 3339 time in the daemon's
  local zone, and `0001-01-01T00:00:00Z` when the date is not epoch seconds. Here `date` may be
  epoch seconds or an ISO 8601 time (the insight template renders one); an empty, zero or unreadable
  date leaves `opened_at` out, so ServiceNow uses "now".
- `impact`/`urgency` are clamped to ServiceNow's 1 (high) .. 3 (low); severity names (critical,
  high, medium, low, negligible) are understood too; no severity leaves them out (Postee sends 0).
- Empty category, subcategory, assigned_to, assignment_group are left out, so the table's defaults
  apply (Postee sends empty category and subcategory).
- Another 2xx than 201 is accepted, with a warning, when its body is a Table API answer (JSON with a
  `result`); otherwise (a login page behind a redirect, a proxy) it is an error: nothing was created.
- `instance-url` (new) replaces `https://<instance>.service-now.com`: a proxy, or a test server.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
from collections.abc import Mapping
from typing import Any, ClassVar

import httpx

from postee.actions.base import ActionError, Delivery, SendResult, as_text, define_action, excerpt
from postee.actions.httpclient import HttpClientAction, send_request
from postee.actions.registry import register
from postee.actions.settings import Kind, SettingsReader, setting

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
"""Seconds per request (Postee sets none)."""

DEFAULT_TABLE = "incident"
"""Postee's default `board`."""

INSTANCE_URL_TEMPLATE = "https://{instance}.service-now.com"
TABLE_API_PATH = "/api/now/table/"
EXPECTED_STATUS = 201

RESPONSE_FIELDS = {"sysparm_fields": "number,sys_id"}
"""Ask for a short answer: the created record's number and id, not its hundred fields."""

DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
"""ServiceNow's internal date-time format (UTC)."""

HIGHEST_LEVEL = 1
LOWEST_LEVEL = 3
"""ServiceNow's impact and urgency choices: 1 = high, 2 = medium, 3 = low."""

SEVERITY_NAMES = {"critical": 1, "high": 1, "medium": 2, "low": 3, "negligible": 3}

_INSTANCE_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_TABLE_RE = re.compile(r"^[A-Za-z0-9_]+$")


def _read_instance(settings: SettingsReader, key: str) -> str:
    instance = settings.string(key)
    if instance and not _INSTANCE_RE.match(instance):
        settings.problem(
            key,
            f"expected the instance name (e.g. 'dev12345' for dev12345.service-now.com), not {instance!r};"
            " set instance-url for a full URL",
        )
    return instance


def _read_table(settings: SettingsReader, key: str) -> str:
    table = settings.string(key, DEFAULT_TABLE)
    if not _TABLE_RE.match(table):
        settings.problem(key, f"expected a table name (letters, digits, _), not {table!r}")
    return table


@register
@define_action
class ServiceNowAction(HttpClientAction):
    type_name: ClassVar[str] = "serviceNow"
    default_timeout: ClassVar[float] = DEFAULT_TIMEOUT

    user: str = setting("user", required=True)
    _password: str = setting("password", required=True)
    instance: str = setting("instance", read=_read_instance)
    instance_url: str = setting("instance-url", kind=Kind.URL)
    table: str = setting("board", read=_read_table)

    @classmethod
    def check_settings(cls, reader: SettingsReader, values: dict[str, Any]) -> None:
        reader.exclusive("instance", "instance-url", required=True)

    @property
    def url(self) -> str:
        """The Table API URL records are created with."""
        base = self.instance_url or INSTANCE_URL_TEMPLATE.format(instance=self.instance)
        return base.rstrip("/") + TABLE_API_PATH + self.table

    def client_options(self) -> dict[str, Any]:
        return {
            "auth": httpx.BasicAuth(self.user, self._password),
            "headers": {"Content-Type": "application/json", "Accept": "application/json"},
        }

    def record(self, delivery: Delivery) -> dict[str, Any]:
        """The record sent to the Table API for `delivery`."""
        content = delivery.content
        record: dict[str, Any] = {
            "short_description": delivery.title,
            "work_notes": f"[code]{delivery.description}[/code]",
            "description": as_text(content.get("summary")),
            "caller_id": self.user,
        }
        opened_at = servicenow_date(content.get("date"))
        if opened_at:
            record["opened_at"] = opened_at
        level = severity_level(content.get("severity"))
        if level is not None:
            record["impact"] = level
            record["urgency"] = level
        for field, key in (
            ("category", "category"),
            ("subcategory", "subcategory"),
            ("assigned_to", "assignedTo"),
            ("assignment_group", "assignedGroup"),
        ):
            value = as_text(content.get(key))
            if value:
                record[field] = value
        return record

    async def send(self, delivery: Delivery) -> SendResult:
        body = json.dumps(self.record(delivery), ensure_ascii=False).encode("utf-8")
        result = await send_request(self.client, "POST", self.url, content=body, params=RESPONSE_FIELDS)
        answer = _table_result(result.output)
        if result.status != EXPECTED_STATUS:
            if answer is None:
                raise ActionError(
                    f"POST {self.url}: expected 201 Created from the Table API, got HTTP {result.status}"
                    " without a record (a login page or a proxy?)",
                    retryable=False,
                    status=result.status,
                    output=result.output,
                )
            log.warning("action %s: ServiceNow answered HTTP %s instead of 201 Created", self.name, result.status)
        return SendResult(output=_describe(self.table, answer) or result.output, status=result.status)


def servicenow_date(value: object) -> str:
    """`value` (epoch seconds, or an ISO 8601 time) as ServiceNow's UTC date-time; "" when unusable."""
    moment = _moment(value)
    return moment.astimezone(datetime.UTC).strftime(DATE_FORMAT) if moment is not None else ""


def _moment(value: object) -> datetime.datetime | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return _from_epoch(value)
    text = str(value).strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return _from_epoch(seconds)
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=datetime.UTC)


def _from_epoch(seconds: float) -> datetime.datetime | None:
    """Zero or less means "no date" (templates render 0 for a missing time)."""
    if not seconds > 0:
        return None
    try:
        return datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return None


def severity_level(value: object) -> int | None:
    """ServiceNow's impact/urgency (1..3) for a content severity ("1", "2", 3, "high"); None when absent."""
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip().lower()
    if text in SEVERITY_NAMES:
        return SEVERITY_NAMES[text]
    try:
        level = int(text)
    except ValueError:
        return None
    return min(max(level, HIGHEST_LEVEL), LOWEST_LEVEL)


def _table_result(output: str) -> Mapping[str, Any] | None:
    """The `result` object of a Table API answer, or None when the body is not one."""
    try:
        answer = json.loads(output)
    except ValueError:
        return None
    result = answer.get("result") if isinstance(answer, Mapping) else None
    return result if isinstance(result, Mapping) else None


def _describe(table: str, record: Mapping[str, Any] | None) -> str:
    """`incident INC0010001 (sys_id …)` for a created record, "" when the answer does not say."""
    if not record:
        return ""
    number, sys_id = as_text(record.get("number")), as_text(record.get("sys_id"))
    if not (number or sys_id):
        return ""
    return excerpt(f"created {table} {number}".rstrip() + (f" (sys_id {sys_id})" if sys_id else ""))
