"""The `opsgenie` action: create an Opsgenie alert per delivery, as Postee's opsgenie output does.

Postee goes through Opsgenie's Go SDK; here the same request is made directly: `POST
<api-url>/v2/alerts` with `Authorization: GenieKey <token>` and

    {"message": title, "description": description, "alias", "entity", "priority", "tags",
     "responders": [{"type": "user", "username": assignee}...],
     "visibleTo": [{"type": "user", "username": recipient}...], "user", "source": "postee"}

Opsgenie answers 202 Accepted (it processes alerts asynchronously); any 2xx is success. Fields are
cut to Opsgenie's limits (message 130 characters, description 15,000, ...) instead of being rejected.

A template may steer the alert: when the rendered description is a JSON object, its keys
`description`, `alias`, `entity`, `priority` and `tags` override the configured values (an object
without `description` is sent whole as the description). `alias` and `entity` settings may hold
`event.input.<path>` references (e.g. one alert per image: `alias: event.input.image`).

`api-url` defaults to Opsgenie's US endpoint; EU accounts use `https://api.eu.opsgenie.com`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from postee.actions.base import ActionError, Delivery, SendResult, define_action
from postee.actions.httpclient import HttpClientAction, describe_url, send_request
from postee.actions.registry import register
from postee.actions.settings import Kind, SettingsReader, setting
from postee.values.eventpath import substitute

DEFAULT_API_URL = "https://api.opsgenie.com"
"""Opsgenie's API (US). EU accounts: `https://api.eu.opsgenie.com`."""

ALERTS_PATH = "/v2/alerts"
DEFAULT_PRIORITY = "P3"
"""Opsgenie's own default, and Postee's."""

PRIORITIES = ("P1", "P2", "P3", "P4", "P5")
DEFAULT_TIMEOUT = 30.0
SOURCE = "postee"
AUTH_SCHEME = "GenieKey"

MAX_MESSAGE = 130
MAX_DESCRIPTION = 15000
MAX_ALIAS = 512
MAX_ENTITY = 512
MAX_USER = 100
MAX_TAGS = 20
MAX_TAG = 50
"""Opsgenie's field limits (characters); longer values are cut, with "…" at the end."""

ELLIPSIS = "…"

OVERRIDE_KEYS = frozenset({"description", "alias", "entity", "priority", "tags"})
"""Keys of a JSON-object description that override the action's settings."""


def _read_priority(settings: SettingsReader, key: str) -> str:
    priority = settings.string(key, DEFAULT_PRIORITY).strip().upper()
    if priority not in PRIORITIES:
        settings.problem(key, f"expected one of {', '.join(PRIORITIES)}, not {priority!r}")
        return DEFAULT_PRIORITY
    return priority


@register
@define_action
class OpsgenieAction(HttpClientAction):
    type_name: ClassVar[str] = "opsgenie"
    default_timeout: ClassVar[float] = DEFAULT_TIMEOUT

    _token: str = setting("token", required=True)
    api_url: str = setting("api-url", kind=Kind.URL, default=DEFAULT_API_URL)
    priority: str = setting("priority", read=_read_priority)
    user: str = setting("user")
    assignees: tuple[str, ...] = setting("assignee", kind=Kind.STRING_LIST)
    recipients: tuple[str, ...] = setting("recipients", kind=Kind.STRING_LIST)
    tags: tuple[str, ...] = setting("tags", kind=Kind.STRING_LIST)
    alias: str = setting("alias")
    entity: str = setting("entity")

    @property
    def alerts_url(self) -> str:
        return self.api_url.rstrip("/") + ALERTS_PATH

    def alert(self, delivery: Delivery) -> dict[str, Any]:
        """The alert request body for `delivery`; raises a non-retryable `ActionError` for bad overrides."""
        description = delivery.description
        alias = substitute(self.alias, delivery.event)
        entity = substitute(self.entity, delivery.event)
        priority = self.priority
        tags: Sequence[str] = self.tags
        overrides = _json_object(description)
        if overrides is not None:
            if "description" in overrides:
                description = _text(overrides["description"])
            if "alias" in overrides:
                alias = _text(overrides["alias"])
            if "entity" in overrides:
                entity = _text(overrides["entity"])
            if "priority" in overrides:
                priority = _priority(overrides["priority"])
            if "tags" in overrides:
                tags = _tags(overrides["tags"])
        body: dict[str, Any] = {
            "message": cut(delivery.title, MAX_MESSAGE),
            "description": cut(description, MAX_DESCRIPTION),
            "priority": priority,
            "source": SOURCE,
        }
        if alias:
            body["alias"] = cut(alias, MAX_ALIAS)
        if entity:
            body["entity"] = cut(entity, MAX_ENTITY)
        if tags:
            body["tags"] = [cut(tag, MAX_TAG) for tag in tags[:MAX_TAGS]]
        if self.assignees:
            body["responders"] = [{"type": "user", "username": name} for name in self.assignees]
        if self.recipients:
            body["visibleTo"] = [{"type": "user", "username": name} for name in self.recipients]
        if self.user:
            body["user"] = cut(self.user, MAX_USER)
        return body

    async def send(self, delivery: Delivery) -> SendResult:
        if not delivery.title.strip():
            raise ActionError(
                f"POST {describe_url(self.alerts_url)}: the template rendered no title; "
                "an Opsgenie alert needs a message",
                retryable=False,
            )
        return await send_request(
            self.client,
            "POST",
            self.alerts_url,
            content=json.dumps(self.alert(delivery), ensure_ascii=False).encode("utf-8"),
            headers={"Content-Type": "application/json", "Authorization": f"{AUTH_SCHEME} {self._token}"},
        )


def cut(text: str, limit: int) -> str:
    """`text` shortened to at most `limit` characters, ending with "…" when it was cut."""
    return text if len(text) <= limit else text[: limit - len(ELLIPSIS)] + ELLIPSIS


def _json_object(text: str) -> Mapping[str, Any] | None:
    """The description as a JSON object with at least one override key, else None (plain text)."""
    stripped = text.strip()
    if not stripped.startswith("{"):
        return None
    try:
        value = json.loads(stripped)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict) or not OVERRIDE_KEYS & value.keys():
        return None
    return value


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, indent=2)


def _priority(value: Any) -> str:
    priority = str(value).strip().upper()
    if priority not in PRIORITIES:
        raise ActionError(f"the template's priority {value!r} is not one of {', '.join(PRIORITIES)}", retryable=False)
    return priority


def _tags(value: Any) -> list[str]:
    """Tags from a template: a list, or a comma-separated string."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ActionError(
            f"the template's tags must be a list or a string, not {type(value).__name__}", retryable=False
        )
    return [tag for tag in (_text(item).strip() for item in items) if tag]
