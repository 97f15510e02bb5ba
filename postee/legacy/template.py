"""Postee's built-in scan renderers as template evaluators, beside the Rego ones.

A `templates:` entry with `legacy-scan-renderer: html | slack | jira` loads a `LegacyTemplate`: it has
the same interface as a Rego template (`postee.rego.render.Evaluator`), so routes, the render cache,
aggregation and the CLI treat it like any other. Its contents carry the aggregation
`legacy-scan-renderer:<renderer>` (Postee's BuildAggregatedContent for that renderer), which the
route's aggregation queue stores and `postee.rego.render.aggregate_items` resolves, as it does a Rego
aggregation package.

Rendering is pure Python over the parsed event; a large scan report takes a while, so it runs in a
worker thread, never on the event loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from postee.legacy import RENDERERS, LegacyRenderError, aggregate_contents, render_content, server_url
from postee.rego.pool import RegoPool
from postee.rego.render import LEGACY_AGGREGATION_PREFIX, AggregatedContent, Content, TemplateError
from postee.runtime import offload

__all__ = ["LegacyTemplate", "aggregate_legacy", "legacy_template"]


@attrs.frozen
class LegacyTemplate:
    """One of Postee's legacy scan renderers, under a template's name."""

    name: str
    renderer: str

    @property
    def origin(self) -> str:
        return f"legacy-scan-renderer {self.renderer}"

    async def compile(self, pool: RegoPool) -> None:
        """Nothing to prepare: the renderer is code."""

    async def render(self, pool: RegoPool, event: Mapping[str, Any], aqua_server: str = "",
                     text: str | None = None) -> Content:
        try:
            out = await offload(render_content, event, self.renderer, server_url(aqua_server))
        except LegacyRenderError as exc:
            raise TemplateError(f"template {self.name!r} ({self.origin}): {exc}") from None
        return Content(
            title=out["title"],
            description=out["description"],
            url=out["url"],
            owners=out.get("owners"),
            aggregation_pkg=LEGACY_AGGREGATION_PREFIX + self.renderer,
        )


def legacy_template(name: str, renderer: str) -> LegacyTemplate:
    if renderer not in RENDERERS:
        raise TemplateError(f"template {name!r}: unknown layout type {renderer!r} (expected html, slack or jira)")
    return LegacyTemplate(name, renderer)


async def aggregate_legacy(renderer: str, items: Sequence[Mapping[str, Any]]) -> AggregatedContent:
    """Postee's aggregate of `items` (oldest first, as queued): it builds it from the newest first."""
    if renderer not in RENDERERS:
        raise TemplateError(f"aggregation of legacy-scan-renderer {renderer!r}: unknown layout type")
    newest_first = [dict(item) for item in reversed(items)]
    out = await offload(aggregate_contents, renderer, newest_first)
    return AggregatedContent(title=out["title"], description=out["description"], url=out["url"],
                             owners=out.get("owners"))
