"""Reading an action's settings while collecting every problem, so `postee check` reports them all.

Each accessor returns a usable value (or a placeholder) even when the setting is wrong, and records
a (key, message) problem instead of raising; `done()` raises one `ActionConfigError` listing them
all. Action modules read their keys in a few lines:

    settings = SettingsReader(spec)
    url = settings.url("url", required=True)
    timeout = settings.duration("timeout", DEFAULT_TIMEOUT)
    policy = settings.retry_policy(timeout)
    settings.done()
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from postee.actions.base import ActionConfigError, ActionSpec, Problem
from postee.actions.durations import DurationError, parse_duration
from postee.actions.retry import RetryPolicy, read_retry_policy

URL_SCHEMES = ("http", "https")


class SettingsReader:
    """Typed access to `spec.settings` that accumulates problems instead of stopping at the first."""

    def __init__(self, spec: ActionSpec) -> None:
        self.spec = spec
        self.problems: list[Problem] = []
        self.read_keys: set[str] = set()

    def problem(self, key: str, message: str) -> None:
        self.problems.append((key, message))

    def has(self, key: str) -> bool:
        """True when `key` is set to something other than null or an empty string."""
        value = self.spec.settings.get(key)
        return value is not None and value != ""

    def raw(self, key: str) -> Any:
        self.read_keys.add(key)
        return self.spec.settings.get(key)

    def string(self, key: str, default: str = "", *, required: bool = False) -> str:
        value = self.raw(key)
        if value is None or value == "":
            if required:
                self.problem(key, "required")
            return default
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.problem(key, f"expected a string, not {type(value).__name__}")
            return default
        return str(value)

    def url(self, key: str, *, required: bool = False, schemes: tuple[str, ...] = URL_SCHEMES) -> str:
        """An absolute URL with one of `schemes` and a host."""
        value = self.string(key, required=required)
        if not value:
            return ""
        parts = urlsplit(value)
        if parts.scheme.lower() not in schemes or not parts.hostname:
            self.problem(key, f"expected an absolute {'/'.join(schemes)} URL, not {value!r}")
            return ""
        return value

    def duration(self, key: str, default: float) -> float:
        value = self.raw(key)
        if value is None or value == "":
            return default
        try:
            return parse_duration(value)
        except DurationError as exc:
            self.problem(key, str(exc))
            return default

    def positive_duration(self, key: str, default: float) -> float:
        seconds = self.duration(key, default)
        if seconds <= 0:
            self.problem(key, "must be greater than zero")
            return default
        return seconds

    def integer(self, key: str, default: int, *, minimum: int | None = None) -> int:
        value = self.raw(key)
        if value is None or value == "":
            return default
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(key, f"expected an integer, not {value!r}")
            return default
        if minimum is not None and value < minimum:
            self.problem(key, f"must be at least {minimum}, not {value}")
            return default
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key)
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        self.problem(key, f"expected true or false, not {value!r}")
        return default

    def string_list(self, key: str) -> list[str]:
        """A list of strings; a single string is taken as a one-element list."""
        value = self.raw(key)
        if value is None or value == "":
            return []
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list | tuple):
            self.problem(key, f"expected a list of strings, not {type(value).__name__}")
            return []
        result = []
        for index, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, str | int | float):
                self.problem(f"{key}[{index}]", f"expected a string, not {type(item).__name__}")
            else:
                result.append(str(item))
        return result

    def mapping(self, key: str) -> Mapping[str, Any]:
        value = self.raw(key)
        if value is None or value == "":
            return {}
        if not isinstance(value, Mapping):
            self.problem(key, f"expected a mapping, not {type(value).__name__}")
            return {}
        return value

    def existing_file(self, key: str, *, required: bool = False) -> str:
        """A path that names an existing regular file (checked now, at load time)."""
        path = self.string(key, required=required)
        if path and not os.path.isfile(path):
            self.problem(key, f"file not found: {path}")
            return ""
        return path

    def exclusive(self, *keys: str, required: bool = False) -> None:
        """At most one (exactly one when `required`) of `keys` may be set."""
        present = [key for key in keys if self.has(key)]
        names = " or ".join(keys)
        if len(present) > 1:
            self.problem(present[1], f"set either {names}, not both")
        elif required and not present:
            self.problem(keys[0], f"required: set {names}")

    def retry_policy(self, default_timeout: float) -> RetryPolicy:
        """The action's `RetryPolicy` from `retries`, `retry-backoff`, `retry-backoff-max`, `timeout`."""
        return read_retry_policy(self, default_timeout)

    def done(self) -> None:
        """Raise `ActionConfigError` listing every problem recorded, if any."""
        if self.problems:
            raise ActionConfigError(self.spec.name, self.problems)
