"""The `jira` action: open a Jira issue per delivery through the REST API v2, as Postee's jira action.

The issue gets summary = title and description = description (Jira wiki markup from the `*.jira`
templates), in project `project-key`, with the configured issue type, priority, assignee, labels,
fix versions (`fix-versions`) and affected versions (`affects-versions`), custom fields from
`unknowns` and, with `board`, the board's active (or a named) sprint.

Why the metadata lookups: a field's JSON shape depends on its type (a string, a number, a list of
strings, an option `{"value": ...}`, a user `{"name": ...}` or `{"accountId": ...}`, a sprint id),
which only Jira knows. So the action asks Jira, once per action, and caches the answers:

- `GET /rest/api/2/issue/createmeta?projectKeys=KEY&expand=projects.issuetypes.fields` for the
  project's issue types and their create-screen fields (on a 404, as on Jira 9+/Cloud where that form
  is gone, the per-project form `/rest/api/2/issue/createmeta/KEY/issuetypes[/ID]`);
- `GET /rest/api/2/field` to map the names in `unknowns` (or ids, `customfield_10010`) to field ids
  and schema types, and to find the "Sprint" field;
- `GET /rest/api/2/serverInfo` (only when a user field is set) to tell Cloud (`accountId`, found with
  `/rest/api/2/user/search`) from Server/Data Center (`name`);
- `GET /rest/agile/1.0/board?name=` then `/rest/agile/1.0/board/ID/sprint?state=active` for the
  sprint; the sprint is re-read every `SPRINT_CACHE_SECONDS`, as sprints end.

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

import json
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar, Self
from urllib.parse import urlsplit

import attrs
import httpx
import trio

from postee.actions.base import ActionError, ActionSpec, Delivery, SendResult, excerpt
from postee.actions.httpclient import RETRYABLE_STATUSES, HttpClientAction, describe_url, parse_retry_after
from postee.actions.registry import register
from postee.actions.retry import RETRY_SETTINGS, RetryPolicy
from postee.actions.settings import SettingsReader

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
"""Seconds per HTTP request (Postee uses go-jira's default client, which has no limit)."""

DEFAULT_ISSUE_TYPE = "Task"
"""Postee's default issue type, used when the project has it."""

MAX_DESCRIPTION_CHARS = 32_767
"""Jira's limit on a text field, in UTF-16 code units (Java string length)."""

MAX_SUMMARY_CHARS = 255
"""Jira's limit on the summary."""

DESCRIPTION_NOTE = (
    "\n\n----\n_(Truncated by Postee: the description had {total:,} characters; Jira accepts {limit:,}.)_"
)
"""Appended to a cut description, in Jira wiki markup."""

SUMMARY_ELLIPSIS = "…"

ACTIVE_SPRINT = "active"
"""The `sprint` value (also the default with `board`) meaning the board's active sprint."""

SPRINT_CACHE_SECONDS = 300.0
"""How long the sprint found for `board`/`sprint` is reused before it is looked up again."""

MAX_METADATA_BYTES = 16 * 1024 * 1024
"""Largest metadata reply read: create metadata of a big project runs to megabytes."""

MAX_PAGES = 50
"""Pages of an agile listing (boards, sprints) read at most."""

PAGE_SIZE = 50

CLOUD_HOST_SUFFIX = ".atlassian.net"
APPLICATION_SCOPE_OWNER = "<%application_scope_owner%>"
"""Postee's assignee placeholder: the event's owners (Aqua application scope owners)."""

SPRINT_CUSTOM_TYPE = "com.pyxis.greenhopper.jira:gh-sprint"
SPRINT_FIELD_NAME = "Sprint"

NAMED_TYPES = frozenset({"priority", "issuetype", "version", "component", "resolution", "securitylevel", "status"})
"""Schema types (and array item types) whose values are objects named by `{"name": ...}`."""

Fields = dict[str, Any]


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


@attrs.frozen
class Auth:
    """How requests authenticate: Basic (`user`, `secret`) or Bearer (`secret` alone)."""

    scheme: str  # "basic" or "bearer"
    user: str
    secret: str = attrs.field(repr=False)


@register
class JiraAction(HttpClientAction):
    type_name: ClassVar[str] = "jira"
    settings_keys: ClassVar[frozenset[str]] = RETRY_SETTINGS | {
        "url",
        "user",
        "password",
        "token",
        "project-key",
        "issuetype",
        "priority",
        "assignee",
        "labels",
        "fix-versions",
        "affects-versions",
        "board",
        "sprint",
        "unknowns",
        "tls-verify",
    }
    default_timeout: ClassVar[float] = DEFAULT_TIMEOUT

    def __init__(
        self,
        spec: ActionSpec,
        *,
        retry_policy: RetryPolicy,
        url: str,
        auth: Auth,
        project_key: str,
        issuetype: str = "",
        priority: str = "",
        assignees: Sequence[str] = (),
        labels: Sequence[str] = (),
        fix_versions: Sequence[str] = (),
        affects_versions: Sequence[str] = (),
        board: str = "",
        sprint: str = "",
        unknowns: Mapping[str, Any] | None = None,
        verify: bool | str = True,
    ) -> None:
        super().__init__(spec, retry_policy=retry_policy)
        self.url = url.rstrip("/")
        self.auth = auth
        self.project_key = project_key
        self.issuetype = issuetype
        self.priority = priority
        self.assignees = tuple(assignees)
        self.labels = tuple(labels)
        self.fix_versions = tuple(fix_versions)
        self.affects_versions = tuple(affects_versions)
        self.board = board
        self.sprint = sprint
        self.unknowns = dict(unknowns or {})
        self.verify = verify
        self._cache: dict[Any, tuple[Any, float | None]] = {}
        self._cache_locks: dict[Any, trio.Lock] = {}

    @classmethod
    def from_spec(cls, spec: ActionSpec) -> Self:
        settings = SettingsReader(spec)
        url = settings.url("url", required=True)
        project_key = settings.string("project-key", required=True)
        auth = _read_auth(settings, url)
        assignees = settings.string_list("assignee")
        board = settings.string("board")
        sprint = settings.string("sprint")
        if sprint and not board and not sprint.isdigit():
            settings.problem("sprint", "a sprint name (or 'active') needs `board`; without it give a sprint id")
        unknowns = settings.mapping("unknowns")
        for key in unknowns:
            if not isinstance(key, str) or not key.strip():
                settings.problem("unknowns", f"a field name must be a non-empty string, not {key!r}")
        verify = _read_verify(settings)
        kwargs = dict(
            issuetype=settings.string("issuetype"),
            priority=settings.string("priority"),
            labels=settings.string_list("labels"),
            fix_versions=settings.string_list("fix-versions"),
            affects_versions=settings.string_list("affects-versions"),
        )
        policy = settings.retry_policy(DEFAULT_TIMEOUT)
        settings.done()
        return cls(
            spec,
            retry_policy=policy,
            url=url,
            auth=auth,
            project_key=project_key,
            assignees=assignees,
            board=board,
            sprint=sprint,
            unknowns=unknowns,
            verify=verify,
            **kwargs,
        )

    def client_options(self) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if self.auth.scheme == "bearer":
            headers["Authorization"] = f"Bearer {self.auth.secret}"
            return {"headers": headers}
        return {"headers": headers, "auth": httpx.BasicAuth(self.auth.user, self.auth.secret)}

    # ------------------------------------------------------------------ sending

    async def send(self, delivery: Delivery) -> SendResult:
        summary = _summary(delivery.title)
        if not summary:
            raise ActionError("the template rendered no title, and Jira needs a summary", retryable=False)
        issue_type = await self._issue_type()
        fields: Fields = {
            "project": {"key": self.project_key},
            "issuetype": {"id": issue_type.id} if issue_type.id else {"name": issue_type.name},
            "summary": summary,
            "description": truncate_description(delivery.description),
        }
        priority = self.priority or _default_name(issue_type.fields.get("priority"))
        if priority:
            fields["priority"] = {"name": priority}
        assignee = self._assignee(delivery, issue_type)
        if assignee:
            fields["assignee"] = await self._user_ref(assignee)
        if self.labels:
            fields["labels"] = list(self.labels)
        if self.fix_versions:
            fields["fixVersions"] = [{"name": name} for name in self.fix_versions]
        if self.affects_versions:
            fields["versions"] = [{"name": name} for name in self.affects_versions]
        for key, value in self.unknowns.items():
            field = await self._field(key)
            fields[field.id] = await self._typed(field, value, key)
        sprint_id = await self._sprint_id()
        sprint_field = _sprint_field(issue_type) if sprint_id is not None else None
        if sprint_id is not None and sprint_field is not None:
            fields[sprint_field] = sprint_id

        created = await self._call("POST", "/rest/api/2/issue", json={"fields": fields})
        key = str(created.get("key", "")) if isinstance(created, Mapping) else ""
        output = f"created {key} {self.url}/browse/{key}" if key else "created an issue"
        if sprint_id is not None and sprint_field is None and key:
            output += await self._move_to_sprint(key, sprint_id)
        elif self.board and sprint_id is None:
            output += f"; board {self.board!r} has no active sprint: the issue stays in the backlog"
        return SendResult(output=output, status=201)

    def _assignee(self, delivery: Delivery, issue_type: IssueTypeMeta) -> str:
        if not self.assignees:  # Postee assigns to the reporting user, when the screen allows it
            return self.auth.user if self.auth.user and "assignee" in issue_type.fields else ""
        assignee = self.assignees[0]
        if assignee == APPLICATION_SCOPE_OWNER:
            owners = _owners(delivery.content.get("owners"))
            return owners[0] if owners else ""
        return assignee

    async def _move_to_sprint(self, key: str, sprint_id: int) -> str:
        try:
            await self._call("POST", f"/rest/agile/1.0/sprint/{sprint_id}/issue", json={"issues": [key]})
        except ActionError as exc:
            logger.warning("jira action %r: %s created, but not moved to sprint %s: %s", self.name, key, sprint_id, exc)
            return f"; NOT moved to sprint {sprint_id}: {exc.message}"
        return f"; moved to sprint {sprint_id}"

    # ------------------------------------------------------------------ field values

    async def _typed(self, field: FieldInfo, value: Any, key: str) -> Any:
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
            return await self._user_ref(text)
        if kind == "project":
            return {"key": text}
        if kind in NAMED_TYPES:
            return {"name": text}
        return text  # string, date ("2024-01-31"), datetime, url, any

    async def _user_ref(self, user: str) -> dict[str, str]:
        """`{"name": user}` on Server/Data Center; `{"accountId": ...}` on Cloud (searched by email or name)."""
        if not await self._is_cloud():
            return {"name": user}

        async def search() -> str:
            found = await self._call("GET", "/rest/api/2/user/search", params={"query": user})
            for entry in found if isinstance(found, list) else []:
                if isinstance(entry, Mapping) and entry.get("accountId"):
                    return str(entry["accountId"])
            return user  # not found by search: taken as an account id already

        return {"accountId": await self._cached(("user", user), search)}

    # ------------------------------------------------------------------ metadata (cached)

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

    async def _is_cloud(self) -> bool:
        async def load() -> bool:
            info = await self._call("GET", "/rest/api/2/serverInfo")
            return isinstance(info, Mapping) and str(info.get("deploymentType", "")).lower() == "cloud"

        return await self._cached("cloud", load)

    async def _issue_type(self) -> IssueTypeMeta:
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
        meta = await self._call(
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
            meta = await self._call("GET", path, params={"maxResults": 200})
        except ActionError as exc:
            if exc.status == 404:
                return []
            raise
        return [_issue_type_meta(entry, None) for entry in _list(meta, "values", "issueTypes")]

    async def _create_meta_fields(self, issue_type_id: str) -> dict[str, Mapping[str, Any]]:
        path = f"/rest/api/2/issue/createmeta/{self.project_key}/issuetypes/{issue_type_id}"
        meta = await self._call("GET", path, params={"maxResults": 1000})
        return {
            str(entry.get("fieldId") or entry.get("key")): entry
            for entry in _list(meta, "values", "fields")
            if entry.get("fieldId") or entry.get("key")
        }

    async def _fields(self) -> dict[str, FieldInfo]:
        """Every field of the instance, by id and by lower-cased name."""

        async def load() -> dict[str, FieldInfo]:
            listed = await self._call("GET", "/rest/api/2/field")
            by_key: dict[str, FieldInfo] = {}
            for entry in listed if isinstance(listed, list) else []:
                if not isinstance(entry, Mapping) or not entry.get("id"):
                    continue
                info = FieldInfo(str(entry["id"]), str(entry.get("name", entry["id"])), entry.get("schema") or {})
                by_key.setdefault(info.name.lower(), info)
                by_key[info.id.lower()] = info
            return by_key

        return await self._cached("fields", load)

    async def _field(self, key: str) -> FieldInfo:
        field = (await self._fields()).get(key.strip().lower())
        if field is None:
            raise ActionError(f"unknowns.{key}: Jira has no field with that name or id", retryable=False)
        return field

    async def _sprint_id(self) -> int | None:
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
            page = await self._call("GET", path, params={**params, "startAt": len(values), "maxResults": PAGE_SIZE})
            batch = _list(page, "values")
            values.extend(batch)
            if not batch or not isinstance(page, Mapping) or page.get("isLast", True):
                break
        return values

    # ------------------------------------------------------------------ HTTP

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request to `url + path`; the JSON reply (None when empty), or an `ActionError`.

        As `httpclient.send_request`, but reads whole metadata replies (up to `MAX_METADATA_BYTES`) and
        puts Jira's `errorMessages`/`errors` in the error text.
        """
        if self.client is None:
            raise RuntimeError("the action was not opened: call `await action.open()` (or `async with action:`) first")
        where = f"{method} {describe_url(self.url)}{path}"
        try:
            async with self.client.stream(method, self.url + path, **kwargs) as response:
                body = await _read_bounded(response, where)
        except httpx.TimeoutException as exc:
            raise ActionError(f"{where}: timed out ({type(exc).__name__})", retryable=True) from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise ActionError(f"{where}: unusable URL: {exc}", retryable=False) from None
        except httpx.TransportError as exc:
            if _caused_by_certificate(exc):  # a bad certificate stays bad
                raise ActionError(f"{where}: TLS certificate verification failed: {exc}", retryable=False) from None
            raise ActionError(f"{where}: {type(exc).__name__}: {exc}", retryable=True) from None
        except httpx.RequestError as exc:
            raise ActionError(f"{where}: {type(exc).__name__}: {exc}", retryable=False) from None
        status = response.status_code
        if not 200 <= status < 300:
            raise ActionError(
                f"{where}: HTTP {status}" + (f": {jira_error_text(body)}" if body else ""),
                retryable=status >= 500 or status in RETRYABLE_STATUSES,
                status=status,
                output=excerpt(body),
                retry_after=parse_retry_after(response.headers.get("retry-after")),
            )
        if not body.strip():
            return None
        try:
            return json.loads(body)
        except ValueError:
            raise ActionError(
                f"{where}: HTTP {status} but the reply is not JSON: {excerpt(body, 200)}", retryable=False
            ) from None


# ---------------------------------------------------------------------- helpers


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


def _caused_by_certificate(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLCertVerificationError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


async def _read_bounded(response: httpx.Response, where: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_METADATA_BYTES:
            raise ActionError(f"{where}: reply larger than {MAX_METADATA_BYTES} bytes", retryable=False)
    return b"".join(chunks)


def _read_auth(settings: SettingsReader, url: str) -> Auth:
    user = settings.string("user")
    password = settings.string("password")
    token = settings.string("token")
    settings.exclusive("password", "token")
    if password:
        if not user:
            settings.problem("user", "required with password")
        return Auth("basic", user, password)
    if token:
        host = (urlsplit(url).hostname or "").lower()
        if user and host.endswith(CLOUD_HOST_SUFFIX):  # Jira Cloud API tokens authenticate as Basic
            return Auth("basic", user, token)
        return Auth("bearer", user, token)
    if not settings.has("password") and not settings.has("token"):
        settings.problem("password", "required: set user with password (Jira Cloud API token), or token (a PAT)")
    return Auth("basic", user, "")


def _read_verify(settings: SettingsReader) -> bool | str:
    """`tls-verify`: true (default), false, or the path of a CA bundle to trust."""
    value = settings.raw("tls-verify")
    if isinstance(value, str) and value.strip().lower() not in ("true", "false", ""):
        return settings.existing_file("tls-verify")
    return settings.boolean("tls-verify", True)


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


def _sprint_field(issue_type: IssueTypeMeta) -> str | None:
    """The id of the Sprint field when the issue type's create screen has it, else None."""
    for field_id, meta in issue_type.fields.items():
        schema = meta.get("schema") or {}
        if schema.get("custom") == SPRINT_CUSTOM_TYPE or meta.get("name") == SPRINT_FIELD_NAME:
            return field_id
    return None


def _default_name(meta: Mapping[str, Any] | None) -> str:
    """The name of a field's `defaultValue` in create metadata (e.g. the default priority), or ""."""
    default = (meta or {}).get("defaultValue")
    return str(default.get("name", "")) if isinstance(default, Mapping) else ""


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


def _owners(value: Any) -> list[str]:
    if isinstance(value, list | tuple):
        return [str(owner) for owner in value if owner]
    return [owner for owner in str(value or "").replace(",", " ").split() if owner]
