"""`$VAR` secrets in the configuration: where they are resolved, and what an unset one means.

Postee reads secrets from the environment (`password: $JIRA_PASSWORD`, `${VAR}` too). Which
environment depends on where the action runs:

- standalone, and a controller's own actions: the node's environment; an unset variable is an error
  (the action would otherwise run with the literal text as its secret);
- an action with `runs-on`, seen by the controller: not resolved at all. Its slice carries the `$VAR`
  text to the runner, which resolves it from its own environment, so a secret lives only where it is
  used (the controller still checks the action's shape, see `env_keys`);
- on a runner: an action whose variable is unset there is turned off (`disable_unset`), named in one
  line, and reported upstream, while the runner's other actions and routes keep running.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import attrs

from postee.config.model import ACTION_GENERIC_KEYS

_ENV_REF = re.compile(r"^\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))$")


def env_var(value: Any) -> str | None:
    """The variable `value` refers to when it is a `$VAR` / `${VAR}` string, else None."""
    if not isinstance(value, str):
        return None
    match = _ENV_REF.match(value.strip())
    return (match.group(1) or match.group(2)) if match else None


def env_references(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every `(path, variable)` referenced in `value`, inside lists and maps too."""
    var = env_var(value)
    if var is not None:
        yield path, var
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from env_references(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from env_references(item, join_path(path, str(key)))


def env_keys(settings: Mapping[str, Any]) -> frozenset[str]:
    """The settings keys whose value holds a `$VAR` somewhere: their content is only known on the runner."""
    return frozenset(key for key, value in settings.items() if any(env_references(value, key)))


def join_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


@attrs.frozen
class UnsetSecret:
    """An enabled action on a runner refers to a variable the runner's environment does not set."""

    action: str
    path: str
    """Where, as `postee check` writes it: `actions[2].headers.Authorization[0]`."""
    variable: str

    def __str__(self) -> str:
        return (f"action {self.action!r} disabled: environment variable {self.variable} is not set on this "
                f"runner ({self.path})")


def disable_unset(data: Any, environ: Mapping[str, str]) -> tuple[Any, list[UnsetSecret]]:
    """A copy of the parsed config `data` in which every enabled action that refers to an unset
    variable is disabled (`enable: false`), and what was unset (one entry per action: its first
    unset variable). `data` itself is not changed; anything that is not a config is returned as is,
    for the loader to report.
    """
    if not isinstance(data, dict) or not isinstance(data.get("actions"), list):
        return data, []
    unset: list[UnsetSecret] = []
    actions: list[Any] = []
    for i, action in enumerate(data["actions"]):
        if isinstance(action, dict) and _enabled(action.get("enable")):
            missing = next((
                (path, var) for key, value in action.items() if key not in ACTION_GENERIC_KEYS
                for path, var in env_references(value, f"actions[{i}].{key}") if var not in environ
            ), None)
            if missing is not None:
                unset.append(UnsetSecret(str(action.get("name") or f"actions[{i}]"), *missing))
                action = {**action, "enable": False}
        actions.append(action)
    return {**data, "actions": actions}, unset


def _enabled(value: Any) -> bool:
    """`enable` as the loader reads it (true, or the string "true" in any case)."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def resolve_env(value: Any, path: str, environ: Mapping[str, str], error: Any) -> Any:
    """Replace `$VAR` / `${VAR}` string values (also inside lists and maps) with the environment's.

    A reference to a variable that is not set is reported with `error(path, message)` and becomes "".
    """
    var = env_var(value)
    if var is not None:
        if var not in environ:
            error(path, f"environment variable {var} is not set")
            return ""
        return environ[var]
    if isinstance(value, list):
        return [resolve_env(v, f"{path}[{i}]", environ, error) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: resolve_env(v, join_path(path, str(k)), environ, error) for k, v in value.items()}
    return value
