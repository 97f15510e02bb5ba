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

import yaml

TOP_LEVEL_KEPT = ("name", "aqua-server", "max-db-size", "db-verify-interval", "delete-old-data", "rules")
"""Top-level keys passed on; `ingest-token` is the controller's own and stays there."""


def runner_slice(data: Mapping[str, Any], runner: str) -> dict[str, Any]:
    """The slice of the raw config `data` (parsed YAML) for `runner`."""
    actions = [
        a for a in _entries(data, "actions")
        if str(a.get("runs-on") or "").strip() == runner and a.get("name")
    ]
    names = {str(a["name"]) for a in actions}
    routes = []
    for route in _entries(data, "routes"):
        listed = route.get("actions") or []
        if isinstance(listed, str):
            listed = [listed]
        mine = []
        for name in listed:
            if str(name) in names and str(name) not in mine:
                mine.append(str(name))
        if mine:
            routes.append({**route, "actions": mine})
    used = {route.get("template") for route in routes}
    templates = [t for t in _entries(data, "templates") if t.get("name") in used]
    out: dict[str, Any] = {key: data[key] for key in TOP_LEVEL_KEPT if key in data}
    out["routes"] = routes
    out["templates"] = templates
    out["actions"] = actions
    return out


def slice_yaml(data: Mapping[str, Any], runner: str) -> str:
    return yaml.safe_dump(runner_slice(data, runner), sort_keys=False, allow_unicode=True)


def config_version(text: str) -> str:
    """A short, stable fingerprint of a config text (reported by runners in heartbeats)."""
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _entries(data: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    value = data.get(key) or []
    return [entry for entry in value if isinstance(entry, dict)] if isinstance(value, list) else []
