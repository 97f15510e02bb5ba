"""Jira's REST API as the jira action needs it: requests, metadata looked up once, values shaped per field.

A field's JSON shape depends on its type (a string, a number, a list of strings, an option
`{"value": ...}`, a user `{"name": ...}` or `{"accountId": ...}`, a sprint id), which only Jira
knows. So `JiraApi` asks Jira, once per opened action, and caches the answers:

- `GET /rest/api/2/issue/createmeta?projectKeys=KEY&expand=projects.issuetypes.fields` for the
  project's issue types and their create-screen fields (on a 404, as on Jira 9+/Cloud where that form
  is gone, the per-project form `/rest/api/2/issue/createmeta/KEY/issuetypes[/ID]`);
- `GET /rest/api/2/field` to map the names in `unknowns` (or ids, `customfield_10010`) to field ids
  and schema types, and to find the "Sprint" field;
- `GET /rest/api/2/serverInfo` (only when a user field is set) to tell Cloud (`accountId`, found with
  `/rest/api/2/user/search`) from Server/Data Center (`name`);
- `GET /rest/agile/1.0/board?name=` then `/rest/agile/1.0/board/ID/sprint?state=active` for the
  sprint; the sprint is re-read every `SPRINT_CACHE_SECONDS`, as sprints end.

Replies are read whole (up to `MAX_METADATA_BYTES`: create metadata of a big project runs to
megabytes) and Jira's `errorMessages`/`errors` are put in the error text.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import attrs
import httpx
import trio

from postee.actions.base import ActionError, excerpt
from postee.actions.httpclient import check_response, describe_url, request

DEFAULT_ISSUE_TYPE = "Task"
"""Postee's default issue type, used when the project has it."""

ACTIVE_SPRINT = "active"
"""The `sprint` value (also the default with `board`) meaning the board's active sprint."""

SPRINT_CACHE_SECONDS = 300.0
"""How long the sprint found for `board`/`sprint` is reused before it is looked up again."""

MAX_METADATA_BYTES = 16 * 1024 * 1024
"""Largest reply read: create metadata of a big project runs to megabytes."""

MAX_PAGES = 50
"""Pages of an agile listing (boards, sprints) read at most."""

PAGE_SIZE = 50

SPRINT_CUSTOM_TYPE = "com.pyxis.greenhopper.jira:gh-sprint"
SPRINT_FIELD_NAME = "Sprint"

NAMED_TYPES = frozenset({"priority", "issuetype", "version", "component", "resolution", "securitylevel", "status"})
"""Schema types (and array item types) whose values are objects named by `{"name": ...}`."""


@attrs.frozen
class FieldInfo:
    """A Jira field: its id (`summary`, `customfield_10010`), display name and schema."""

    id: str
    name: str
    schema: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def type(self) -> str:
        return str(self.schema.get("type", "string"))

    @property
    def items(self) -> str:
        return str(self.schema.get("items", "string"))

    @property
    def is_sprint(self) -> bool:
        return self.schema.get("custom") == SPRINT_CUSTOM_TYPE


@attrs.frozen
class IssueTypeMeta:
    """One issue type of the project, with the fields its create screen offers (id → metadata)."""

    id: str
    name: str
    subtask: bool
    fields: Mapping[str, Mapping[str, Any]]

    @property
    def sprint_field(self) -> str | None:
        """The id of the Sprint field when the create screen has it, else None."""
        for field_id, meta in self.fields.items():
            schema = meta.get("schema") or {}
            if schema.get("custom") == SPRINT_CUSTOM_TYPE or meta.get("name") == SPRINT_FIELD_NAME:
                return field_id
        return None

    @property
    def default_priority(self) -> str:
        """The name of the priority field's `defaultValue` in the create metadata, or ""."""
        default = (self.fields.get("priority") or {}).get("defaultValue")
        return str(default.get("name", "")) if isinstance(default, Mapping) else ""


@attrs.define(eq=False)
class JiraApi:
    """One Jira instance and project, over the action's client, with what was looked up cached."""

    client: httpx.AsyncClient
    url: str
    """The instance's base URL, without a trailing slash."""

    project_key: str
    issuetype: str = ""
    board: str = ""
    sprint: str = ""
    _cache: dict[Any, tuple[Any, float | None]] = attrs.field(factory=dict, init=False)
    _cache_locks: dict[Any, trio.Lock] = attrs.field(factory=dict, init=False)

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request to `url + path`; the JSON reply (None when empty), or an `ActionError`."""
        where = f"{method} {describe_url(self.url)}{path}"
        reply = await request(
            self.client, method, self.url + path, where=where, limit=MAX_METADATA_BYTES, whole=True, **kwargs
        )
        if not reply.ok:
            detail = jira_error_text(reply.body) if reply.body else ""
            check_response(where, reply.status, reply.body, reply.headers, detail=detail)
        if not reply.body.strip():
            return None
        try:
            return json.loads(reply.body)
        except ValueError:
            raise ActionError(
                f"{where}: HTTP {reply.status} but the reply is not JSON: {excerpt(reply.body, 200)}", retryable=False
            ) from None

    async def typed(self, field: FieldInfo, value: Any, key: str) -> Any:
        """`value` (from `unknowns`) in the JSON shape Jira expects for `field`'s schema type."""
        if _is_raw(value):  # already Jira's shape: {"value": "a", "child": {...}}, [{"id": "1"}]
            return value
        kind = field.type
        if field.is_sprint:
            return _number(value, field, key, integer=True)
        if kind == "array":
            return [await self._scalar(field.items, item, field, key) for item in _items(value)]
        return await self._scalar(kind, value, field, key)

    async def _scalar(self, kind: str, value: Any, field: FieldInfo, key: str) -> Any:
        if kind == "number":
            return _number(value, field, key)
        if isinstance(value, list | tuple):
            raise ActionError(f"unknowns.{key}: field {field.name!r} takes one value, not a list", retryable=False)
        text = str(value)
        if kind == "option":
            return {"value": text}
        if kind == "user":
            return await self.user_ref(text)
        if kind == "project":
            return {"key": text}
        if kind in NAMED_TYPES:
            return {"name": text}
        return text  # string, date ("2024-01-31"), datetime, url, any

    async def user_ref(self, user: str) -> dict[str, str]:
        """`{"name": user}` on Server/Data Center; `{"accountId": ...}` on Cloud (searched by email or name)."""
        if not await self.is_cloud():
            return {"name": user}

        async def search() -> str:
            found = await self.call("GET", "/rest/api/2/user/search", params={"query": user})
            for entry in found if isinstance(found, list) else []:
                if isinstance(entry, Mapping) and entry.get("accountId"):
                    return str(entry["accountId"])
            return user  # not found by search: taken as an account id already

        return {"accountId": await self._cached(("user", user), search)}

    async def _cached(self, key: Any, load: Callable[[], Awaitable[Any]], ttl: float | None = None) -> Any:
        """The value cached under `key`, loaded once (concurrent sends wait for the first load).

        A failed load caches nothing: the next send asks again. `ttl` (seconds) makes the value expire.
        """
        async with self._cache_locks.setdefault(key, trio.Lock()):
            entry = self._cache.get(key)
            if entry is not None and (entry[1] is None or trio.current_time() < entry[1]):
                return entry[0]
            value = await load()
            self._cache[key] = (value, None if ttl is None else trio.current_time() + ttl)
            return value

    async def is_cloud(self) -> bool:
        async def load() -> bool:
            info = await self.call("GET", "/rest/api/2/serverInfo")
            return isinstance(info, Mapping) and str(info.get("deploymentType", "")).lower() == "cloud"

        return await self._cached("cloud", load)

    async def issue_type(self) -> IssueTypeMeta:
        return await self._cached("issuetype", self._load_issue_type)

    async def _load_issue_type(self) -> IssueTypeMeta:
        try:
            types = await self._create_meta_expanded()
        except ActionError as exc:
            if exc.status != 404:
                raise
            types = await self._create_meta_per_project()
        if not types:
            raise ActionError(
                f"project {self.project_key!r} not found, or the Jira user may not create issues in it", retryable=False
            )
        chosen = _choose_issue_type(types, self.issuetype)
        if chosen is None:
            names = ", ".join(repr(t.name) for t in types)
            raise ActionError(
                f"project {self.project_key!r} has no issue type {self.issuetype!r} (it has {names})", retryable=False
            )
        if not chosen.fields and chosen.id:  # per-project form: the type's fields come separately
            chosen = attrs.evolve(chosen, fields=await self._create_meta_fields(chosen.id))
        return chosen

    async def _create_meta_expanded(self) -> list[IssueTypeMeta]:
        meta = await self.call(
            "GET",
            "/rest/api/2/issue/createmeta",
            params={"projectKeys": self.project_key, "expand": "projects.issuetypes.fields"},
        )
        for project in _list(meta, "projects"):
            if str(project.get("key", "")).upper() == self.project_key.upper():
                return [_issue_type_meta(entry, entry.get("fields")) for entry in _list(project, "issuetypes")]
        return []

    async def _create_meta_per_project(self) -> list[IssueTypeMeta]:
        path = f"/rest/api/2/issue/createmeta/{self.project_key}/issuetypes"
        try:
            meta = await self.call("GET", path, params={"maxResults": 200})
        except ActionError as exc:
            if exc.status == 404:
                return []
            raise
        return [_issue_type_meta(entry, None) for entry in _list(meta, "values", "issueTypes")]

    async def _create_meta_fields(self, issue_type_id: str) -> dict[str, Mapping[str, Any]]:
        path = f"/rest/api/2/issue/createmeta/{self.project_key}/issuetypes/{issue_type_id}"
        meta = await self.call("GET", path, params={"maxResults": 1000})
        return {
            str(entry.get("fieldId") or entry.get("key")): entry
            for entry in _list(meta, "values", "fields")
            if entry.get("fieldId") or entry.get("key")
        }

    async def fields(self) -> dict[str, FieldInfo]:
        """Every field of the instance, by id and by lower-cased name."""

        async def load() -> dict[str, FieldInfo]:
            listed = await self.call("GET", "/rest/api/2/field")
            by_key: dict[str, FieldInfo] = {}
            for entry in listed if isinstance(listed, list) else []:
                if not isinstance(entry, Mapping) or not entry.get("id"):
                    continue
                info = FieldInfo(str(entry["id"]), str(entry.get("name", entry["id"])), entry.get("schema") or {})
                by_key.setdefault(info.name.lower(), info)
                by_key[info.id.lower()] = info
            return by_key

        return await self._cached("fields", load)

    async def field(self, key: str) -> FieldInfo:
        field = (await self.fields()).get(key.strip().lower())
        if field is None:
            raise ActionError(f"unknowns.{key}: Jira has no field with that name or id", retryable=False)
        return field

    async def sprint_id(self) -> int | None:
        if not self.sprint and not self.board:
            return None
        if self.sprint.isdigit():
            return int(self.sprint)
        return await self._cached("sprint", self._find_sprint, ttl=SPRINT_CACHE_SECONDS)

    async def _find_sprint(self) -> int | None:
        board_id = await self._cached("board", self._find_board)
        wanted = self.sprint or ACTIVE_SPRINT
        if wanted.lower() == ACTIVE_SPRINT:
            sprints = await self._paged(f"/rest/agile/1.0/board/{board_id}/sprint", {"state": "active"})
            return int(sprints[0]["id"]) if sprints else None
        sprints = await self._paged(f"/rest/agile/1.0/board/{board_id}/sprint", {"state": "active,future"})
        for sprint in sprints:
            if str(sprint.get("name", "")).lower() == wanted.lower():
                return int(sprint["id"])
        raise ActionError(f"board {self.board!r} has no active or future sprint named {wanted!r}", retryable=False)

    async def _find_board(self) -> int:
        boards = await self._paged("/rest/agile/1.0/board", {"name": self.board})
        # `name=` matches substrings: take the exact name, else the one that differs only in letter case
        for same in (lambda name: name == self.board, lambda name: name.lower() == self.board.lower()):
            for board in boards:
                if same(str(board.get("name", ""))):
                    return int(board["id"])
        raise ActionError(f"no Jira board named {self.board!r}", retryable=False)

    async def _paged(self, path: str, params: Mapping[str, str]) -> list[Mapping[str, Any]]:
        """The `values` of an agile API listing, page after page (at most `MAX_PAGES`)."""
        values: list[Mapping[str, Any]] = []
        for _ in range(MAX_PAGES):
            page = await self.call("GET", path, params={**params, "startAt": len(values), "maxResults": PAGE_SIZE})
            batch = _list(page, "values")
            values.extend(batch)
            if not batch or not isinstance(page, Mapping) or page.get("isLast", True):
                break
        return values


def jira_error_text(body: bytes) -> str:
    """Jira's `{"errorMessages": [...], "errors": {field: message}}` as one line; else an excerpt of the body."""
    try:
        reply = json.loads(body)
    except ValueError:
        return excerpt(body, 200)
    if not isinstance(reply, Mapping):
        return excerpt(body, 200)
    parts = [str(message) for message in reply.get("errorMessages") or []]
    errors = reply.get("errors")
    if isinstance(errors, Mapping):
        parts += [f"{field}: {message}" for field, message in errors.items()]
    return excerpt("; ".join(parts), 500) if parts else excerpt(body, 200)


def _choose_issue_type(types: Sequence[IssueTypeMeta], wanted: str) -> IssueTypeMeta | None:
    if wanted:
        return next((t for t in types if wanted.lower() in (t.name.lower(), t.id)), None)
    default = next((t for t in types if t.name.lower() == DEFAULT_ISSUE_TYPE.lower()), None)
    return default or next((t for t in types if not t.subtask), types[0])


def _issue_type_meta(entry: Mapping[str, Any], fields: Any) -> IssueTypeMeta:
    return IssueTypeMeta(
        id=str(entry.get("id", "")),
        name=str(entry.get("name", "")),
        subtask=bool(entry.get("subtask", False)),
        fields=dict(fields) if isinstance(fields, Mapping) else {},
    )


def _list(container: Any, *keys: str) -> list[Mapping[str, Any]]:
    """The list of objects under the first of `keys` present in `container` (empty when none)."""
    if not isinstance(container, Mapping):
        return []
    for key in keys:
        value = container.get(key)
        if isinstance(value, list):
            return [item for item in value if isinstance(item, Mapping)]
    return []


def _items(value: Any) -> list[Any]:
    """Values for an array field: a YAML list, or a comma-separated string."""
    if isinstance(value, list | tuple):
        return list(value)
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [value]


def _is_raw(value: Any) -> bool:
    if isinstance(value, Mapping):
        return True
    return isinstance(value, list | tuple) and any(isinstance(item, Mapping) for item in value)


def _number(value: Any, field: FieldInfo, key: str, *, integer: bool = False) -> int | float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value) if integer else value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            pass
        else:
            return int(number) if integer or number.is_integer() else number
    raise ActionError(f"unknowns.{key}: field {field.name!r} takes a number, not {value!r}", retryable=False)
