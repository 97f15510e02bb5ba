"""The part of a controller's configuration a runner receives (`postee.config` replies).

Only the actions whose `runs-on` names the runner, only the routes that list at least one of them
(each with only those actions, once), and only the templates those routes use. Nothing else leaves
the controller: no other action, and so no other action's secret. Values are sent as written in the
controller's file (a `$VAR` stays `$VAR`), so secrets of runner actions are resolved from the
runner's own environment. The YAML keeps Postee's keys, so a Postee runner can read it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from postee.config import yamlio
from postee.config.loader import PLAN_KEY

TOP_LEVEL_KEPT = ("name", "aqua-server", "max-db-size", "db-verify-interval", "delete-old-data", "rules")
"""Top-level keys passed on; `ingest-token` is the controller's own and stays there."""


class SliceIndex:
    """A configuration's actions grouped by runner, made once: with a thousand runners, cutting each
    slice by scanning every action would make the controller's work grow with the square of the fleet."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data
        self.actions: dict[str, list[dict[str, Any]]] = {}
        self.sides: dict[str, str] = {}
        """Every action's side: its runner, or "" for the controller (for routes' plans)."""
        for action in _entries(data, "actions"):
            runner = str(action.get("runs-on") or "").strip()
            if action.get("name"):
                self.sides.setdefault(str(action["name"]), runner)
            if runner and action.get("name"):
                self.actions.setdefault(runner, []).append(action)
        self.routes = _entries(data, "routes")
        self.templates = _entries(data, "templates")

    def slice(self, runner: str) -> dict[str, Any]:
        """The slice of the configuration for `runner` (see the module docstring)."""
        data = self.data
        actions = self.actions.get(runner, [])
        names = {str(a["name"]) for a in actions}
        routes = []
        for route in self.routes if names else ():
            listed = route.get("actions") or []
            if isinstance(listed, str):
                listed = [listed]
            mine: list[str] = []
            for name in listed:
                if str(name) in names and str(name) not in mine:
                    mine.append(str(name))
            if mine:
                routes.append(self._with_plan({**route, "actions": mine}, listed))
        used = {route.get("template") for route in routes}
        templates = [t for t in self.templates if t.get("name") in used]
        out: dict[str, Any] = {key: data[key] for key in TOP_LEVEL_KEPT if key in data}
        out["routes"] = routes
        out["templates"] = templates
        out["actions"] = actions
        return out


    def _with_plan(self, route: dict[str, Any], listed: list[Any]) -> dict[str, Any]:
        """A serialized route whose actions run on several sides carries all of its steps (`x-postee-plan`):
        the runner hands its events over to the side of the next one (`postee.pipeline.plan`). Other
        routes' slices are Postee's, as they were."""
        serialized = route.get("serialize-actions")
        if not (serialized is True or (isinstance(serialized, str) and serialized.strip().lower() == "true")):
            route.pop(PLAN_KEY, None)
            return route
        steps = [{"action": str(name), "runs-on": self.sides[str(name)]} for name in listed
                 if str(name) in self.sides]
        if len({step["runs-on"] for step in steps}) > 1:
            route[PLAN_KEY] = steps
        else:
            route.pop(PLAN_KEY, None)
        return route


def runner_slice(data: Mapping[str, Any], runner: str) -> dict[str, Any]:
    """The slice of the raw config `data` (parsed YAML) for `runner`."""
    return SliceIndex(data).slice(runner)


def slice_yaml(data: Mapping[str, Any] | SliceIndex, runner: str) -> str:
    index = data if isinstance(data, SliceIndex) else SliceIndex(data)
    return yamlio.safe_dump(index.slice(runner), sort_keys=False, allow_unicode=True)


def config_version(text: str) -> str:
    """A short, stable fingerprint of a config text (reported by runners in heartbeats)."""
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _entries(data: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    value = data.get(key) or []
    return [entry for entry in value if isinstance(entry, dict)] if isinstance(value, list) else []
