"""Action types by name: Postee's `type:` key, matched case-insensitively (`Webhook`, `HTTP`, `serviceNow`).

Built-in action modules are imported on first use (`BUILTIN_MODULES`), each registering its class
with `@register`; a new action type is one module plus one line here. `validate_spec` and
`unknown_settings` serve `postee check`; `build_action` serves the config loader and the roles.
"""

from __future__ import annotations

import importlib
from typing import TypeVar

from postee.actions.base import Action, ActionConfigError, ActionSpec, Problem

BUILTIN_MODULES = (
    "postee.actions.stdout",
    "postee.actions.webhook",
    "postee.actions.http",
    "postee.actions.exec",
    "postee.actions.slack",
    "postee.actions.teams",
    "postee.actions.jira",
    "postee.actions.servicenow",
    "postee.actions.splunk",
    "postee.actions.opsgenie",
    "postee.actions.pagerduty",
    "postee.actions.email",
    "postee.actions.dependencytrack",
    "postee.actions.nexusiq",
    "postee.actions.awssecurityhub",
    "postee.actions.kubernetes",
    "postee.actions.docker",
)
"""Modules defining the built-in action types, imported (and so registered) on first lookup."""

A = TypeVar("A", bound=type[Action])

_REGISTRY: dict[str, type[Action]] = {}
_builtins_loaded = False


class UnknownActionType(ActionConfigError):
    """`type:` names no registered action type. The message lists the known ones."""


def register(cls: A) -> A:
    """Class decorator: make `cls` the action for `type: <cls.type_name>` (any letter case)."""
    key = cls.type_name.lower()
    existing = _REGISTRY.get(key)
    if existing is not None and existing is not cls:
        raise ValueError(f"action type {cls.type_name!r} already registered by {existing.__qualname__}")
    _REGISTRY[key] = cls
    return cls


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        for module in BUILTIN_MODULES:
            importlib.import_module(module)
        _builtins_loaded = True


def known_types() -> list[str]:
    """The registered type names, lower-case and sorted (compare with `type.lower()`)."""
    _load_builtins()
    return sorted(_REGISTRY)


def action_class(type_name: str) -> type[Action]:
    """The class for `type_name` (case-insensitive). Raises `KeyError` naming the known types."""
    _load_builtins()
    cls = _REGISTRY.get(str(type_name).strip().lower())
    if cls is None:
        raise KeyError(_unknown_message(type_name))
    return cls


def _unknown_message(type_name: str) -> str:
    return f"unknown action type {type_name!r}; known types: {', '.join(known_types())}"


def build_action(spec: ActionSpec) -> Action:
    """The action for `spec`, its settings validated; raises `ActionConfigError` with every problem."""
    try:
        cls = action_class(spec.type)
    except KeyError:
        raise UnknownActionType(spec.name, [("type", _unknown_message(spec.type))]) from None
    return cls.from_spec(spec)


def validate_spec(spec: ActionSpec) -> list[Problem]:
    """Every problem of `spec` as (key, message) pairs, [] when it is valid. Opens nothing."""
    try:
        build_action(spec)
    except ActionConfigError as exc:
        return list(exc.problems)
    return []


def unknown_settings(spec: ActionSpec) -> list[str]:
    """Settings keys `spec`'s action type does not read (the loader warns about them); [] for an unknown type."""
    try:
        cls = action_class(spec.type)
    except KeyError:
        return []
    return sorted(key for key in spec.settings if key not in cls.settings_keys)
