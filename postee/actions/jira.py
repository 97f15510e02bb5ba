"""The `jira` action: open a Jira issue per delivery through the REST API v2, as Postee's jira action.

The issue gets summary = title and description = description (Jira wiki markup from the `*.jira`
templates), in project `project-key`, with the configured issue type, priority, assignee, labels,
fix versions (`fix-versions`) and affected versions (`affects-versions`), custom fields from
`unknowns` and, with `board`, the board's active (or a named) sprint.

The issue type, field shapes, user references and the sprint come from Jira's own metadata, looked
up once per opened action (see `jira_api`).

Defaults: an unset `issuetype` is "Task" when the project has it (Postee's default), else its first
non-subtask type; an unset `priority` is the project's default priority from the create metadata
(Postee sends "High", which fails where no such priority exists); an unset `assignee` is `user`, as
in Postee, when the create screen has an assignee field.

Authentication: `user` + `password` is Basic (Jira Cloud: the password is an API token). `token` is
a Personal Access Token sent as `Authorization: Bearer` (Server/Data Center), except on Atlassian
Cloud hosts (`*.atlassian.net`) with `user` set, where Cloud API tokens go as Basic `user:token`.

Postee fails on descriptions past Jira's 32,767 characters; here the description is cut with a
visible note (and a summary past 255 characters is cut too). Once the issue exists, a failure to
move it into the sprint is reported in the result, not raised: a retry would open a second issue.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit

import attrs
import httpx

from postee.actions.base import NOT_OPENED, ActionError, Delivery, SendResult, define_action
from postee.actions.httpclient import HttpClientAction
from postee.actions.jira_api import IssueTypeMeta, JiraApi
from postee.actions.registry import register
from postee.actions.settings import Kind, SettingsReader, setting

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
"""Seconds per HTTP request (Postee uses go-jira's default client, which has no limit)."""

MAX_DESCRIPTION_CHARS = 32_767
"""Jira's limit on a text field, in UTF-16 code units (Java string length)."""

MAX_SUMMARY_CHARS = 255
"""Jira's limit on the summary."""

DESCRIPTION_NOTE = (
    "\n\n----\n_(Truncated by Postee: the description had {total:,} characters; Jira accepts {limit:,}.)_"
)
"""Appended to a cut description, in Jira wiki markup."""

SUMMARY_ELLIPSIS = "…"

CLOUD_HOST_SUFFIX = ".atlassian.net"
APPLICATION_SCOPE_OWNER = "<%application_scope_owner%>"
"""Postee's assignee placeholder: the event's owners (Aqua application scope owners)."""

Fields = dict[str, Any]


@attrs.frozen
class Auth:
    """How requests authenticate: Basic (`user`, `secret`) or Bearer (`secret` alone)."""

    scheme: str  # "basic" or "bearer"
    user: str
    secret: str = attrs.field(repr=False)


def _read_unknowns(settings: SettingsReader, key: str) -> dict[str, Any]:
    unknowns = dict(settings.mapping(key))
    for name in unknowns:
        if not isinstance(name, str) or not name.strip():
            settings.problem(key, f"a field name must be a non-empty string, not {name!r}")
    return unknowns


def _read_verify(settings: SettingsReader, key: str) -> bool | str:
    """`tls-verify`: true (default), false, or the path of a CA bundle to trust."""
    value = settings.raw(key)
    if isinstance(value, str) and value.strip().lower() not in ("true", "false", ""):
        return settings.existing_file(key)
    return settings.boolean(key, True)


@register
@define_action
class JiraAction(HttpClientAction):
    type_name: ClassVar[str] = "jira"
    default_timeout: ClassVar[float] = DEFAULT_TIMEOUT

    url: str = setting("url", kind=Kind.URL, required=True, converter=lambda url: url.rstrip("/"))
    project_key: str = setting("project-key", required=True)
    user: str = setting("user")
    _password: str = setting("password")
    _token: str = setting("token")
    assignees: tuple[str, ...] = setting("assignee", kind=Kind.STRING_LIST)
    board: str = setting("board")
    sprint: str = setting("sprint")
    unknowns: dict[str, Any] = setting("unknowns", read=_read_unknowns)
    verify: bool | str = setting("tls-verify", read=_read_verify)
    issuetype: str = setting("issuetype")
    priority: str = setting("priority")
    labels: tuple[str, ...] = setting("labels", kind=Kind.STRING_LIST)
    fix_versions: tuple[str, ...] = setting("fix-versions", kind=Kind.STRING_LIST)
    affects_versions: tuple[str, ...] = setting("affects-versions", kind=Kind.STRING_LIST)

    _api: JiraApi | None = attrs.field(default=None, init=False)
    """Made by `open`, with the client; it caches Jira's metadata."""

    @classmethod
    def check_settings(cls, reader: SettingsReader, values: dict[str, Any]) -> None:
        reader.exclusive("password", "token")
        if values["password"] and not values["user"]:
            reader.problem("user", "required with password")
        if not reader.has("password") and not reader.has("token"):
            reader.problem("password", "required: set user with password (Jira Cloud API token), or token (a PAT)")
        sprint = values["sprint"]
        if sprint and not values["board"] and not sprint.isdigit():
            reader.problem("sprint", "a sprint name (or 'active') needs `board`; without it give a sprint id")

    @property
    def auth(self) -> Auth:
        """Basic with `user` + `password`; with `token`, Bearer (a PAT), or Basic on Atlassian Cloud hosts."""
        if self._password:
            return Auth("basic", self.user, self._password)
        if self._token:
            host = (urlsplit(self.url).hostname or "").lower()
            if self.user and host.endswith(CLOUD_HOST_SUFFIX):  # Jira Cloud API tokens authenticate as Basic
                return Auth("basic", self.user, self._token)
            return Auth("bearer", self.user, self._token)
        return Auth("basic", self.user, "")

    def client_options(self) -> dict[str, Any]:
        auth = self.auth
        headers = {"Accept": "application/json"}
        if auth.scheme == "bearer":
            headers["Authorization"] = f"Bearer {auth.secret}"
            return {"headers": headers}
        return {"headers": headers, "auth": httpx.BasicAuth(auth.user, auth.secret)}

    async def open(self) -> None:
        await super().open()
        if self._api is None and self.client is not None:
            self._api = JiraApi(self.client, self.url, self.project_key, self.issuetype, self.board, self.sprint)

    async def aclose(self) -> None:
        self._api = None
        await super().aclose()

    async def send(self, delivery: Delivery) -> SendResult:
        api = self._api
        if api is None:
            raise RuntimeError(NOT_OPENED)
        summary = _summary(delivery.title)
        if not summary:
            raise ActionError("the template rendered no title, and Jira needs a summary", retryable=False)
        issue_type = await api.issue_type()
        fields: Fields = {
            "project": {"key": self.project_key},
            "issuetype": {"id": issue_type.id} if issue_type.id else {"name": issue_type.name},
            "summary": summary,
            "description": truncate_description(delivery.description),
        }
        priority = self.priority or issue_type.default_priority
        if priority:
            fields["priority"] = {"name": priority}
        assignee = self._assignee(delivery, issue_type)
        if assignee:
            fields["assignee"] = await api.user_ref(assignee)
        if self.labels:
            fields["labels"] = list(self.labels)
        if self.fix_versions:
            fields["fixVersions"] = [{"name": name} for name in self.fix_versions]
        if self.affects_versions:
            fields["versions"] = [{"name": name} for name in self.affects_versions]
        for key, value in self.unknowns.items():
            field = await api.field(key)
            fields[field.id] = await api.typed(field, value, key)
        sprint_id = await api.sprint_id()
        sprint_field = issue_type.sprint_field if sprint_id is not None else None
        if sprint_id is not None and sprint_field is not None:
            fields[sprint_field] = sprint_id

        created = await api.call("POST", "/rest/api/2/issue", json={"fields": fields})
        key = str(created.get("key", "")) if isinstance(created, Mapping) else ""
        output = f"created {key} {self.url}/browse/{key}" if key else "created an issue"
        if sprint_id is not None and sprint_field is None and key:
            output += await self._move_to_sprint(api, key, sprint_id)
        elif self.board and sprint_id is None:
            output += f"; board {self.board!r} has no active sprint: the issue stays in the backlog"
        return SendResult(output=output, status=201)

    def _assignee(self, delivery: Delivery, issue_type: IssueTypeMeta) -> str:
        if not self.assignees:  # Postee assigns to the reporting user, when the screen allows it
            return self.user if self.user and "assignee" in issue_type.fields else ""
        assignee = self.assignees[0]
        if assignee == APPLICATION_SCOPE_OWNER:
            owners = _owners(delivery.content.get("owners"))
            return owners[0] if owners else ""
        return assignee

    async def _move_to_sprint(self, api: JiraApi, key: str, sprint_id: int) -> str:
        try:
            await api.call("POST", f"/rest/agile/1.0/sprint/{sprint_id}/issue", json={"issues": [key]})
        except ActionError as exc:
            logger.warning("jira action %r: %s created, but not moved to sprint %s: %s", self.name, key, sprint_id, exc)
            return f"; NOT moved to sprint {sprint_id}: {exc.message}"
        return f"; moved to sprint {sprint_id}"


def truncate_description(text: str, limit: int = MAX_DESCRIPTION_CHARS) -> str:
    """`text` cut to fit Jira's `limit` (UTF-16 code units) with a visible note; unchanged when it fits."""
    total = _utf16_len(text)
    if total <= limit:
        return text
    note = DESCRIPTION_NOTE.format(total=total, limit=limit)
    return _utf16_prefix(text, limit - _utf16_len(note)) + note


def _summary(title: str) -> str:
    """The title on one line, cut to Jira's summary limit (Jira rejects line breaks and longer summaries)."""
    summary = " ".join(title.split())
    if _utf16_len(summary) <= MAX_SUMMARY_CHARS:
        return summary
    return _utf16_prefix(summary, MAX_SUMMARY_CHARS - len(SUMMARY_ELLIPSIS)).rstrip() + SUMMARY_ELLIPSIS


def _utf16_len(text: str) -> int:
    return len(text) + sum(1 for char in text if ord(char) > 0xFFFF)


def _utf16_prefix(text: str, units: int) -> str:
    """The longest prefix of `text` of at most `units` UTF-16 code units (never half a surrogate pair)."""
    if len(text) <= units and _utf16_len(text) <= units:
        return text
    used = 0
    for index, char in enumerate(text):
        used += 2 if ord(char) > 0xFFFF else 1
        if used > units:
            return text[:index]
    return text


def _owners(value: Any) -> list[str]:
    if isinstance(value, list | tuple):
        return [str(owner) for owner in value if owner]
    return [owner for owner in str(value or "").replace(",", " ").split() if owner]
