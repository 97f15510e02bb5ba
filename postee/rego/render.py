"""Templates -> content: what a route hands its actions (Postee 2.x semantics).

A `templates:` entry names its evaluator four ways, in precedence order: an inline `body`, a `url`
fetched once at load time, a `rego-package` from the template library, or one of Postee's built-in
scan renderers (`legacy-scan-renderer: html | slack | jira`, `postee.legacy.template`). Every loaded
template is an `Evaluator`: routes, the render cache and the CLI use that interface only, whichever
kind it is. A package template is
evaluated as `data.<package>`; a body/url module is loaded with the library's common helpers, `data`
is evaluated and the first object with a `result` key is the template's output. That output must
have `title` and `result`; any non-string value is written as Go's `json.Marshal` would, because that
is what Postee users see and diff.

Before evaluation the event gets `postee: {"AquaServer": <aqua-server or "">}`, as Postee does, so
templates can link back to the console.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import attrs
import httpx
import trio

from postee.rego import gojson
from postee.rego.engine import UNDEFINED, RegoCompileError, RegoError, RegoEvalError
from postee.rego.library import TemplateLibrary, TemplateLibraryError
from postee.rego.pool import QuerySpec, RegoPool

URL_FETCH_TIMEOUT = 30.0
"""Seconds to fetch a `url:` template at load time (the whole download, redirects included)."""

MAX_TEMPLATE_BYTES = 1024 * 1024
"""Largest `url:` template read (the bundled ones are a few KiB); past it the download is abandoned."""

MAX_TEMPLATE_REDIRECTS = 5
"""Redirects followed for a `url:` template, each one checked like the URL itself."""

_LOOPBACK_NAMES = ("localhost", "localhost.")

OWNERS_KEY = "application_scope_owners"
OWNERS_SEPARATOR = ";"

# Template output key -> content key; title and result are required, the rest default to "".
_OPTIONAL_FIELDS = (
    ("url", "url"),
    ("result_date", "date"),
    ("result_severity", "severity"),
    ("result_summary", "summary"),
    ("result_category", "category"),
    ("result_subcategory", "subcategory"),
    ("result_assigned_to", "assignedTo"),
    ("result_assigned_group", "assignedGroup"),
)

SAMPLE_EVENT: Mapping[str, Any] = {
    "image": "sample/image:latest",
    "registry": "sample-registry",
    "vulnerability_summary": {"critical": 0, "high": 0, "medium": 0, "low": 0, "negligible": 0},
    "resources": [],
}
"""A small Aqua-scan-like event used at load time to check a template yields `title` and `result`."""


class TemplateError(RegoError):
    """A template cannot be loaded, or its output is unusable. The message names the template."""


@attrs.frozen
class TemplateSpec:
    """A `templates:` entry of the config (only the fields rendering needs)."""

    name: str
    rego_package: str | None = None
    body: str | None = None
    url: str | None = None
    legacy_scan_renderer: str | None = None


class Evaluator(Protocol):
    """A loaded template, whatever its kind: what routes, the render cache and the CLI use."""

    @property
    def name(self) -> str: ...

    @property
    def origin(self) -> str:
        """For messages: "rego-package postee.vuls.html", "body", "legacy-scan-renderer html", ..."""
        ...

    async def compile(self, pool: RegoPool) -> None:
        """Load-time preparation (a Rego template compiles in the pool); raises `TemplateError`."""
        ...

    async def render(self, pool: RegoPool, event: Mapping[str, Any], aqua_server: str = "",
                     text: str | None = None) -> Content:
        """The content of `event` (`text`: its JSON text, when at hand); raises `TemplateError`."""
        ...


@attrs.frozen
class Template:
    """A loaded Rego template: the query to evaluate and how to read its output."""

    name: str
    origin: str  # for messages: "rego-package postee.vuls.html", "body", "url https://..."
    spec: QuerySpec
    search_result: bool  # body/url: find the first object with a `result` key in `data`

    async def compile(self, pool: RegoPool) -> None:
        try:
            await pool.compile(self.spec)
        except RegoCompileError as exc:
            raise TemplateError(f"template {self.name!r} ({self.origin}): {exc}") from None

    async def render(self, pool: RegoPool, event: Mapping[str, Any], aqua_server: str = "",
                     text: str | None = None) -> Content:
        return await render_rego(pool, self, event, aqua_server, text)


@attrs.frozen
class Content:
    """The rendered message handed to actions (Postee's content map)."""

    title: str
    description: str
    url: str = ""
    date: str = ""
    severity: str = ""
    summary: str = ""
    category: str = ""
    subcategory: str = ""
    assigned_to: str = ""
    assigned_group: str = ""
    owners: str | None = None
    aggregation_pkg: str | None = attrs.field(default=None, eq=False)

    def as_map(self) -> dict[str, str]:
        """Postee's key names; `owners` only when the event named owners."""
        content = {
            "title": self.title,
            "description": self.description,
            "url": self.url,
            "date": self.date,
            "severity": self.severity,
            "summary": self.summary,
            "category": self.category,
            "subcategory": self.subcategory,
            "assignedTo": self.assigned_to,
            "assignedGroup": self.assigned_group,
        }
        if self.owners is not None:
            content["owners"] = self.owners
        return content


@attrs.frozen
class AggregatedContent:
    """What an aggregation (a Rego package, or a legacy renderer's) produces from several contents."""

    title: str
    description: str
    url: str = ""
    owners: str | None = None
    """The items' owners joined with ';' (legacy renderers; None: no key, as in Postee)."""

    def as_map(self) -> dict[str, str]:
        content = {"title": self.title, "description": self.description, "url": self.url}
        if self.owners is not None:
            content["owners"] = self.owners
        return content


def as_text(value: Any) -> str:
    """A template field as text: strings as they are, anything else as Go's `json.Marshal`."""
    if isinstance(value, str):
        return value
    return gojson.marshal(value)


def find_result_object(value: Any) -> dict[str, Any] | None:
    """The first object (depth first, keys in sorted order) that has a `result` key."""
    if not isinstance(value, dict):
        return None
    if "result" in value:
        return value
    for key in sorted(value):
        found = find_result_object(value[key])
        if found is not None:
            return found
    return None


def augment_event(event: Mapping[str, Any], aqua_server: str = "") -> dict[str, Any]:
    """The event as templates see it: with `postee.AquaServer` (Postee adds it too)."""
    augmented = dict(event)
    augmented["postee"] = {"AquaServer": aqua_server or ""}
    return augmented


def augmented_json(event: Mapping[str, Any], aqua_server: str = "", text: str | None = None) -> str:
    """`augment_event` as JSON text. With the event's own text (`Event.text`, which reads as exactly
    `event`), `"postee"` is spliced in before its closing brace instead of encoding the whole event again;
    an event with a `postee` key of its own is encoded again (the server's value must win)."""
    if text is not None and "postee" not in event:
        head = text.rstrip()
        if head.endswith("}"):
            head = head[:-1].rstrip()
            separator = "" if head.endswith("{") else ","
            return f'{head}{separator}"postee":{{"AquaServer":{json.dumps(aqua_server or "")}}}}}'
    return json.dumps(augment_event(event, aqua_server), ensure_ascii=False)


async def fetch_template(url: str, client: httpx.AsyncClient | None = None, *, name: str | None = None) -> str:
    """Download a `url:` template once (status > 399 is an error, like Postee).

    Bounded, because the URL's server decides what we read: https only (plain http only to a loopback
    host, as for a template served beside the node), each redirect checked the same way before it is
    followed, and the body read as a stream and abandoned past `MAX_TEMPLATE_BYTES`, all within
    `URL_FETCH_TIMEOUT` (a server dripping bytes cannot hold the load). Errors name the template
    (`name`) and the URL.
    """
    what = f"template {name!r}: " if name else ""
    try:
        with trio.fail_after(URL_FETCH_TIMEOUT):
            return await _fetch(url, client, what)
    except trio.TooSlowError:
        raise TemplateError(f"{what}cannot fetch {url}: no complete answer within {URL_FETCH_TIMEOUT:g}s") from None


async def _fetch(url: str, client: httpx.AsyncClient | None, what: str) -> str:
    current = url
    try:
        async with contextlib.AsyncExitStack() as stack:
            if client is None:
                client = await stack.enter_async_context(httpx.AsyncClient(timeout=URL_FETCH_TIMEOUT))
            for _ in range(MAX_TEMPLATE_REDIRECTS + 1):
                _check_template_url(current, url, what)
                async with client.stream("GET", current, follow_redirects=False) as response:
                    if response.is_redirect and "location" in response.headers:
                        current = str(response.url.join(response.headers["location"]))
                        continue
                    if response.status_code > 399:
                        raise TemplateError(f"{what}cannot fetch {_hop(url, current)}: HTTP {response.status_code}")
                    body = await _read_capped(response, f"{what}the download of {_hop(url, current)}")
                    return _decode(body, response.charset_encoding)
            raise TemplateError(f"{what}cannot fetch {url}: more than {MAX_TEMPLATE_REDIRECTS} redirects")
    except httpx.HTTPError as exc:
        raise TemplateError(f"{what}cannot fetch {_hop(url, current)}: {exc}") from None


def _decode(body: bytes, charset: str | None) -> str:
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know: Rego sources are UTF-8 anyway
        return body.decode("utf-8", errors="replace")


def _hop(url: str, current: str) -> str:
    return url if current == url else f"{url} (redirected to {current})"


def _check_template_url(current: str, url: str, what: str) -> None:
    """https anywhere; http only to a loopback host (a literal loopback address or `localhost`)."""
    try:
        parsed = httpx.URL(current)
    except (httpx.InvalidURL, TypeError) as exc:
        raise TemplateError(f"{what}invalid URL {_hop(url, current)}: {exc}") from None
    if parsed.scheme == "https":
        return
    if parsed.scheme == "http" and _is_loopback(parsed.host):
        return
    raise TemplateError(
        f"{what}refusing to fetch {_hop(url, current)}: templates are fetched over https only "
        "(plain http only from a loopback host such as 127.0.0.1 or localhost)"
    )


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: what it resolves to is not checked, so it does not count as loopback


async def _read_capped(response: httpx.Response, what: str) -> bytes:
    limit = f"{MAX_TEMPLATE_BYTES // (1024 * 1024)} MiB"
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_TEMPLATE_BYTES:
        raise TemplateError(f"{what} is {int(declared)} bytes, over the {limit} a template may have")
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_TEMPLATE_BYTES:
            raise TemplateError(f"{what} was abandoned past {limit}: a template may have {limit} at most")
        chunks.append(chunk)
    return b"".join(chunks)


async def load_template(
    spec: TemplateSpec,
    library: TemplateLibrary,
    client: httpx.AsyncClient | None = None,
) -> Evaluator:
    """Resolve a `templates:` entry into its evaluator (body > url > rego-package > legacy-scan-renderer,
    like Postee)."""
    if spec.body:
        modules = library.with_common(f"template-{spec.name}.rego", spec.body)
        return Template(spec.name, "body", QuerySpec.build(modules, "data"), True)
    if spec.url:
        source = await fetch_template(spec.url, client, name=spec.name)
        modules = library.with_common(spec.url, source)
        return Template(spec.name, f"url {spec.url}", QuerySpec.build(modules, "data"), True)
    if spec.rego_package:
        try:
            modules = library.modules_for(spec.rego_package)
        except TemplateLibraryError as exc:
            raise TemplateError(f"template {spec.name!r}: {exc}") from None
        query = QuerySpec.build(modules, f"data.{spec.rego_package}")
        return Template(spec.name, f"rego-package {spec.rego_package}", query, False)
    if spec.legacy_scan_renderer:
        from postee.legacy.template import legacy_template  # postee.legacy builds on this module

        return legacy_template(spec.name, spec.legacy_scan_renderer)
    raise TemplateError(f"template {spec.name!r}: needs one of body, url, rego-package or legacy-scan-renderer")


def package_template(package: str, library: TemplateLibrary) -> Template:
    """A template for a library package (what `rego-package: P` loads)."""
    try:
        modules = library.modules_for(package)
    except TemplateLibraryError as exc:
        raise TemplateError(str(exc)) from None
    return Template(package, f"rego-package {package}", QuerySpec.build(modules, f"data.{package}"), False)


def _output_of(template: Template, value: Any) -> dict[str, Any]:
    if template.search_result:
        value = find_result_object(value)
    if not isinstance(value, dict):
        raise TemplateError(
            f"template {template.name!r} ({template.origin}) produced no object"
            + (" with a 'result' key" if template.search_result else "")
        )
    missing = [key for key in ("title", "result") if key not in value]
    if missing:
        raise TemplateError(f"template {template.name!r} ({template.origin}) produced no {' and no '.join(missing)}")
    return value


def owners_of(event: Mapping[str, Any]) -> str | None:
    """`application_scope_owners` joined with ';' (None when the event has none)."""
    owners = event.get(OWNERS_KEY)
    if owners is None:
        return None
    if isinstance(owners, list):
        return OWNERS_SEPARATOR.join(o if isinstance(o, str) else as_text(o) for o in owners)
    return as_text(owners)


async def _evaluate(pool: RegoPool, template: Template, input_value: Any, input_json: str | None = None
                    ) -> dict[str, Any]:
    if input_json is None:
        input_json = json.dumps(input_value, ensure_ascii=False)
    try:
        value = await pool.evaluate(template.spec, input_json)
    except (RegoCompileError, RegoEvalError) as exc:
        value = exc
    return _output_from(template, value)


def _output_from(template: Template, outcome: Any) -> dict[str, Any]:
    """The template's output from its evaluation's outcome (a value, or the error it raised)."""
    if isinstance(outcome, RegoCompileError | RegoEvalError):
        raise TemplateError(f"template {template.name!r} ({template.origin}): {outcome}")
    return _output_of(template, None if outcome is UNDEFINED else outcome)


async def render(pool: RegoPool, template: Evaluator, event: Mapping[str, Any], aqua_server: str = "",
                 text: str | None = None) -> Content:
    """The content `template` makes of `event` (`text`: its JSON text, when at hand), whatever kind of
    template it is; raises `TemplateError`."""
    return await template.render(pool, event, aqua_server, text)


async def render_rego(pool: RegoPool, template: Template, event: Mapping[str, Any], aqua_server: str = "",
                      text: str | None = None) -> Content:
    """Evaluate a Rego `template` on `event` and build the content map; raises `TemplateError`."""
    output = await _evaluate(pool, template, None, augmented_json(event, aqua_server, text))
    return _content_of(output, event)


def rendered_content(template: Template, outcome: Any, event: Mapping[str, Any]) -> Content:
    """The content from `template`'s evaluation on `event` made elsewhere (`outcome`: its value, or the
    error it raised, as `RegoPool.evaluate_rules` gives it): what `render_rego` returns, or
    raises, for the same evaluation."""
    return _content_of(_output_from(template, outcome), event)


def _content_of(output: dict[str, Any], event: Mapping[str, Any]) -> Content:
    fields = {attr: as_text(output[key]) if key in output else "" for key, attr in _OPTIONAL_FIELDS}
    aggregation_pkg = output.get("aggregation_pkg")
    return Content(
        title=as_text(output["title"]),
        description=as_text(output["result"]),
        url=fields["url"],
        date=fields["date"],
        severity=fields["severity"],
        summary=fields["summary"],
        category=fields["category"],
        subcategory=fields["subcategory"],
        assigned_to=fields["assignedTo"],
        assigned_group=fields["assignedGroup"],
        owners=owners_of(event),
        aggregation_pkg=aggregation_pkg if isinstance(aggregation_pkg, str) and aggregation_pkg else None,
    )


def aggregation_item(content: Content) -> dict[str, Any]:
    """One input item of an aggregation (for a Rego package, the description is parsed when it is a
    JSON array; a legacy renderer's aggregation gets the content map as it is, owners included)."""
    if is_legacy_aggregation(content.aggregation_pkg):
        return content.as_map()
    description: Any = content.description
    if description.lstrip().startswith("["):
        try:
            parsed = json.loads(description)
        except ValueError:
            parsed = None
        if isinstance(parsed, list):
            description = parsed
    content_map = content.as_map()
    content_map.pop("owners", None)
    content_map["description"] = description
    return content_map


async def aggregate(
    pool: RegoPool, aggregation_pkg: str, library: TemplateLibrary, contents: Sequence[Content]
) -> AggregatedContent:
    """Render several contents through an aggregation package into one message.

    Postee prepends one `null` per item to the input array (a `make` + `append` slip); we do not.
    """
    return await aggregate_items(pool, aggregation_pkg, library, [aggregation_item(c) for c in contents])


LEGACY_AGGREGATION_PREFIX = "legacy-scan-renderer:"
"""The `aggregation_pkg` of a legacy renderer's contents: its aggregation, not a Rego package (a Rego
package name has no `:`, so the two cannot meet)."""


def is_legacy_aggregation(aggregation_pkg: str | None) -> bool:
    return bool(aggregation_pkg) and aggregation_pkg.startswith(LEGACY_AGGREGATION_PREFIX)  # type: ignore[union-attr]


async def aggregate_items(
    pool: RegoPool, aggregation_pkg: str, library: TemplateLibrary, items: Sequence[Mapping[str, Any]]
) -> AggregatedContent:
    """Like `aggregate`, from items already in aggregation form (as queued in the store), oldest first."""
    if is_legacy_aggregation(aggregation_pkg):
        from postee.legacy.template import aggregate_legacy  # postee.legacy builds on this module

        return await aggregate_legacy(aggregation_pkg[len(LEGACY_AGGREGATION_PREFIX):], items)
    template = package_template(aggregation_pkg, library)
    output = await _evaluate(pool, template, list(items))
    return AggregatedContent(
        title=as_text(output["title"]),
        description=as_text(output["result"]),
        url=as_text(output["url"]) if "url" in output else "",
    )


async def check_template(pool: RegoPool, template: Evaluator, sample_event: Mapping[str, Any] | None = None) -> None:
    """Load-time validation: the template compiles, and yields `title` and `result` on a sample event.

    Raises `TemplateError` naming the template and the problem.
    """
    await template.compile(pool)
    event = SAMPLE_EVENT if sample_event is None else sample_event
    try:
        await render(pool, template, event)
    except TemplateError as exc:
        raise TemplateError(f"{exc} on a sample event") from None


async def check_templates(
    pool: RegoPool, templates: Sequence[Evaluator], sample_event: Mapping[str, Any] | None = None
) -> list[TemplateError]:
    """Validate every template (see `check_template`); returns all problems, not just the first."""
    problems: list[TemplateError] = []
    for template in templates:
        try:
            await check_template(pool, template, sample_event)
        except TemplateError as exc:
            problems.append(exc)
    return problems
