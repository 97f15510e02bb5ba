"""`GET /ui`: the dashboard, one static HTML file shipped in the package (`postee/web/ui/dashboard.html`).

The page holds no data: it asks for the API key (from the URL's fragment, `/ui#key=K`, which browsers
never send to the server, or typed in), keeps it for the tab only (sessionStorage), and reads
everything with it from the node's JSON endpoints and `/feed`. So the page itself is served without
the key, like a login page.

What comes from events (route names, errors, runner names) is shown as text, never as markup, and the
answer's Content-Security-Policy allows only the page's own inline script and style (by hash) and
connections to the node itself: whatever an attacker puts in an event cannot run in an operator's
browser, nor make it load or send anything elsewhere.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.resources
import re

import attrs

__all__ = ["DashboardPage", "dashboard_page"]

_INLINE = re.compile(rb"<(script|style)>(.*?)</\1>", re.DOTALL)


@attrs.frozen
class DashboardPage:
    body: bytes
    headers: dict[str, str]


def _csp(html: bytes) -> str:
    hashes: dict[bytes, list[str]] = {b"script": [], b"style": []}
    for kind, content in _INLINE.findall(html):
        digest = base64.b64encode(hashlib.sha256(content).digest()).decode()
        hashes[kind].append(f"'sha256-{digest}'")
    return "; ".join([
        "default-src 'none'",
        f"script-src {' '.join(hashes[b'script'])}",
        f"style-src {' '.join(hashes[b'style'])}",
        "connect-src 'self'",
        "img-src 'self' data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ])


@functools.cache
def dashboard_page() -> DashboardPage:
    """The page and its headers (read and hashed once)."""
    body = importlib.resources.files("postee.web").joinpath("ui/dashboard.html").read_bytes()
    return DashboardPage(body, {
        "content-type": "text/html; charset=utf-8",
        "content-security-policy": _csp(body),
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
        "cache-control": "no-store",
    })
