"""The content of Postee's legacy scan report, and its aggregation (`BuildAggregatedContent`).

One report, written once against the markup primitives (`markup.py`), gives the html, jira and slack
renderings. The order of sections, the odd 0-based malware index, the `none` placeholders and the
`%!s(<nil>)` title of an event without `image` are Postee's, kept because users' tickets and filters
were built on them; see the compatibility spec for each.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from postee.legacy.godecode import go_string
from postee.legacy.markup import PROVIDERS, Markup
from postee.legacy.scanmodel import Scan, decode_scan, event_owners

RENDERERS: tuple[str, ...] = ("html", "slack", "jira")

UNKNOWN_RENDERER = "unknown layout type"
"""Postee's error for any other `legacy-scan-renderer` value."""

AQUA_IMAGES_PATH = "#/images/"
GO_NIL = "%!s(<nil>)"
"""What Go's `fmt.Sprintf("%s", nil)` writes: the title's image when the event has no `image`."""
AGGREGATED_TITLE = "Vulnerability scan report"

SEVERITIES = (
    ("critical", "Critical"),
    ("high", "High"),
    ("medium", "Medium"),
    ("low", "Low"),
    ("negligible", "Negligible"),
)
"""The severity groups printed, in this order; any other `aqua_severity` is dropped."""
COUNT_COLOURS = (
    ("critical", "#c00000"),
    ("high", "#e0443d"),
    ("medium", "#f79421"),
    ("low", "#e1c930"),
    ("negligible", "green"),
)
VULNERABILITY_HEADER = ("Vulnerability ID", "Resource name", "Installed version", "Fix version")
NONE = "none"

_FIX_VERSION_STRIP = dict.fromkeys([*range(0x20), 0x7F, 0xFFFD])
_GO_LOWER_SPECIAL = str.maketrans({"\u0130": "i"})
"""Go's `unicode.ToLower` maps İ to a plain `i`; Python's full mapping adds a combining dot."""


def markup_for(renderer: str) -> Markup:
    """The markup provider for `renderer`; ValueError (`unknown layout type`) for any other value."""
    try:
        return PROVIDERS[renderer]
    except KeyError:
        raise ValueError(f"{UNKNOWN_RENDERER} {renderer!r} (use one of {', '.join(RENDERERS)})") from None


def server_url(aqua_server: str) -> str:
    """The renderer's server URL from the `aqua-server` setting: "" or `<value>[/]#/images/`."""
    if not aqua_server:
        return ""
    return aqua_server + ("" if aqua_server.endswith("/") else "/") + AQUA_IMAGES_PATH


def query_escape(text: str) -> str:
    """Go's `url.QueryEscape`: unreserved bytes kept, space as `+`, every other UTF-8 byte as `%XX`
    (Python's `quote_plus` keeps the same unreserved set, `A-Za-z0-9-_.~`, and writes upper-case hex)."""
    return urllib.parse.quote_plus(text, safe="", errors="surrogatepass")


def go_lower(text: str) -> str:
    """Go's `strings.ToLower` as far as it decides a severity group."""
    return text.translate(_GO_LOWER_SPECIAL).lower()


def render_content(event: Mapping[str, Any], renderer: str, server_url: str) -> dict[str, str]:
    """The content Postee's legacy renderer makes of `event`: title, description, url (+ owners).

    `event` is the parsed JSON object. Raises `LegacyRenderError` when the event does not decode
    into the scan model (Postee logs it and drops the event for that action), and ValueError for an
    unknown renderer. Pure and synchronous.
    """
    markup = markup_for(renderer)
    scan = decode_scan(event)
    image = event.get("image")
    title = f"{GO_NIL if image is None else go_string(image)} vulnerability scan report"
    url = server_url + scan.registry + "/" + query_escape(scan.image)
    content = {"title": title, "description": describe(scan, markup, server_url, url), "url": url}
    owners = event_owners(event)
    if owners:
        content["owners"] = owners
    return content


def describe(scan: Scan, markup: Markup, server_url: str, url: str) -> str:
    """The report's description, section by section (Postee's `GenTicketDescription`)."""
    parts = [
        markup.p(f"Image name: {scan.image}"),
        markup.p(f"Registry: {scan.registry}"),
        markup.p("Image is non-compliant" if scan.disallowed else "Image is compliant"),
    ]
    if scan.scan_malware:
        parts.append(markup.p("Malware found: " + ("Yes" if scan.counts["malware"] > 0 else "No")))
    if scan.scan_sensitive_data:
        parts.append(markup.p("Sensitive data found: " + ("Yes" if scan.counts["sensitive"] > 0 else "No")))
    parts.append(
        markup.table(
            [
                [name.upper() for name, _ in COUNT_COLOURS],
                [markup.colour(str(scan.counts[name]), colour) for name, colour in COUNT_COLOURS],
            ]
        )
    )
    if scan.checks:
        rows = [["#", "Control", "Policy Name", "Status"]]
        rows += [
            [str(number), check.control, check.policy_name, "FAIL" if check.failed else "PASS"]
            for number, check in enumerate(scan.checks, 1)
        ]
        parts += [markup.h2("Assurance controls"), markup.table(rows)]
    if scan.resources:
        parts.append(markup.h2("Found vulnerabilities"))
        parts += _vulnerability_groups(scan, markup)
    if scan.malware:
        rows = [["#", "Malware", "Hash", "Path"]]
        rows += [[str(index), m.malware, m.hash, m.path] for index, m in enumerate(scan.malware)]
        parts += ["\n", markup.h2("Malware"), markup.table(rows)]
    if scan.sensitive_data:
        rows = [["File name", "Path", "Type", "Hash"]]
        rows += [[s.filename, s.path, s.type, s.hash] for s in scan.sensitive_data]
        parts += ["\n", markup.h2("Sensitive Data"), markup.table(rows)]
    if server_url:
        parts.append(markup.p("See more: " + markup.link(url, url)))
    return "".join(parts)


def _vulnerability_groups(scan: Scan, markup: Markup) -> list[str]:
    groups: dict[str, list[list[str]]] = {key: [] for key, _ in SEVERITIES}
    for resource in scan.resources:
        for vulnerability in resource.vulnerabilities:
            rows = groups.get(go_lower(vulnerability.aqua_severity))
            if rows is not None:
                rows.append(
                    [
                        vulnerability.name or NONE,
                        resource.name or NONE,
                        resource.version or NONE,
                        _fix_version(vulnerability.fix_version),
                    ]
                )
    parts = []
    for key, label in SEVERITIES:
        if groups[key]:
            parts += [
                markup.h3(f"{label} severity vulnerabilities"),
                markup.table([list(VULNERABILITY_HEADER), *groups[key]]),
            ]
    return parts


def _fix_version(fix_version: str) -> str:
    """`none` when empty; else without control characters and U+FFFD (which may leave it empty)."""
    if not fix_version:
        return NONE
    return fix_version.translate(_FIX_VERSION_STRIP)


def aggregate_contents(renderer: str, items: Sequence[Mapping[str, str]]) -> dict[str, str]:
    """Postee's `BuildAggregatedContent` over `items` in the given order (Postee passes newest first).

    Each item's title becomes an H1 before its description; urls are joined by newlines (a newline
    only once the text is non-empty); non-empty owners are joined with `;` (key absent when none).
    """
    markup = markup_for(renderer)
    description = "".join(markup.h1(item.get("title", "")) + item.get("description", "") for item in items)
    url = ""
    for item in items:
        if url:
            url += "\n"
        url += item.get("url", "")
    content = {"title": AGGREGATED_TITLE, "description": description, "url": url}
    owners = ";".join(owner for item in items if (owner := item.get("owners", "")))
    if owners:
        content["owners"] = owners
    return content
