"""Render each (event, template) once, however many routes ask for it at the same time.

Several routes often share a template (and every action of a route shares the route's). Rego
evaluation is the most expensive step of the pipeline, so renders are single-flight: the first
route to ask evaluates, the others wait for its result. A small LRU bounds the memory. The rule book fills it
ahead (`prime`): the templates of the routes an event matched are rendered in the rules' own worker
call, one round trip per event instead of two.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from typing import Any

import trio

from postee.metrics import Metrics
from postee.rego.pool import RegoPool
from postee.rego.render import Content, Evaluator, Template, TemplateError, render, rendered_content

DEFAULT_RENDER_CACHE = 512


class _Entry:
    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.value: Content | None = None
        self.error: BaseException | None = None


class RenderCache:
    def __init__(
        self,
        pool: RegoPool,
        *,
        aqua_server: str = "",
        metrics: Metrics | None = None,
        size: int = DEFAULT_RENDER_CACHE,
    ) -> None:
        self.pool = pool
        self.aqua_server = aqua_server
        self.metrics = metrics
        self.size = size
        self._entries: collections.OrderedDict[tuple[str, str], _Entry] = collections.OrderedDict()
        self.evaluations = 0

    async def render(self, template: Evaluator, event_id: str, event: Mapping[str, Any],
                     text: str | None = None) -> Content:
        """The content of `event` (`text`: its JSON text, when at hand) through `template`; raises TemplateError."""
        key = (event_id, template.name)
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            await entry.done.wait()
            if entry.error is not None:
                raise entry.error
            assert entry.value is not None
            return entry.value
        entry = self._entries[key] = _Entry()
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        self.evaluations += 1
        try:
            entry.value = await render(self.pool, template, event, self.aqua_server, text)
        except TemplateError as exc:
            entry.error = exc
            self._count(template, "error")
            raise
        except BaseException:
            # Cancelled (or a bug): do not cache; waiters retry on their own.
            entry.error = TemplateError(f"template {template.name!r}: render was interrupted")
            self._entries.pop(key, None)
            raise
        finally:
            entry.done.set()
        self._count(template, "ok")
        return entry.value

    def ready(self, template: Evaluator | None, event_id: str) -> tuple[Content | None, TemplateError | None] | None:
        """The render of the event through `template` when it is done (its content, or its error), else None."""
        if template is None:
            return None
        entry = self._entries.get((event_id, template.name))
        if entry is None or not entry.done.is_set():
            return None
        if entry.error is not None and not isinstance(entry.error, TemplateError):
            return None  # not a template's error: `render` raises it, and so it goes
        return entry.value, entry.error

    def prime(self, template: Template, event_id: str, event: Mapping[str, Any], outcome: Any) -> None:
        """Keep the render of `event` through `template` evaluated elsewhere (`outcome`: the value or the
        error, `rendered_content`'s input): the rule book renders, in the same worker call as the rules,
        the templates of the routes an event matched, and the routes find their content here."""
        key = (event_id, template.name)
        if key in self._entries:
            return
        entry = _Entry()
        try:
            entry.value = rendered_content(template, outcome, event)
        except TemplateError as exc:
            entry.error = exc
        except Exception:  # a bug (an output that cannot be written): the route renders, and reports it
            return
        entry.done.set()  # synchronous: nobody saw the entry unfinished
        self._entries[key] = entry
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        self.evaluations += 1
        self._count(template, "ok" if entry.error is None else "error")

    def _count(self, template: Evaluator, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.renders.labels(template.name, outcome).inc()
