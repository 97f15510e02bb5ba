"""Reading an action's settings while collecting every problem, so `postee check` reports them all.

Each action declares its settings once, as attrs fields made with `setting(...)`: the YAML key, its
kind (string, url, integer, ...), whether it is required, its default. From that one declaration
the base class reads the settings (`read_settings`, in declaration order), `define_action` derives
`settings_keys` (`declared_keys`: the registry warns about the keys no action reads), and attrs
builds the constructor:

    url: str = setting("url", kind=Kind.URL, required=True)
    size_limit: int = setting("size-limit", kind=Kind.INTEGER, default=10000, minimum=0)
    headers: Headers = setting("headers", read=_read_headers)   # a reader of its own

A custom reader is called as `read(reader, *keys)`. Checks that span several keys and values
derived from several settings belong in the action's `check_settings` hook.

Underneath, `SettingsReader` gives typed access that returns a usable value (or a placeholder) even
when the setting is wrong, and records a (key, message) problem instead of raising; `done()` raises
one `ActionConfigError` listing them all.
"""

from __future__ import annotations

import contextvars
import enum
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import attrs

from postee.actions.model import ActionConfigError, ActionSpec, Problem
from postee.actions.retry import RETRY_SETTINGS, RetryPolicy, read_retry_policy
from postee.values.durations import DurationError, parse_duration

URL_SCHEMES = ("http", "https")

_HERE = contextvars.ContextVar("postee_action_runs_here", default=True)


@contextmanager
def checking_elsewhere() -> Iterator[None]:
    """Check actions that run on another host (a controller checking a runner's actions).

    Within it, a `SettingsReader` is not `local`: the action's shape is checked (required keys,
    kinds, values), but not what only its own host has: files (`existing_file`), a kubeconfig or
    the pod's service account, Docker's TLS material.
    """
    token = _HERE.set(False)
    try:
        yield
    finally:
        _HERE.reset(token)


class SettingsReader:
    """Typed access to `spec.settings` that accumulates problems instead of stopping at the first."""

    def __init__(self, spec: ActionSpec) -> None:
        self.spec = spec
        self.problems: list[Problem] = []
        self.local = _HERE.get()
        """False while `checking_elsewhere`: resources of the action's own host are not looked at."""

    def problem(self, key: str, message: str) -> None:
        self.problems.append((key, message))

    def has(self, key: str) -> bool:
        """True when `key` is set to something other than null or an empty string."""
        value = self.spec.settings.get(key)
        return value is not None and value != ""

    def raw(self, key: str) -> Any:
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

    def integer(self, key: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
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
        if maximum is not None and value > maximum:
            self.problem(key, f"must be at most {maximum}, not {value}")
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

    def environment(self, key: str) -> dict[str, str]:
        """A list of `NAME=value` strings (environment variables to set), as a dict."""
        variables: dict[str, str] = {}
        for index, item in enumerate(self.string_list(key)):
            name, equals, value = item.partition("=")
            if not equals or not name or "\0" in item:
                self.problem(f"{key}[{index}]", f"expected NAME=value, not {item!r}")
            else:
                variables[name] = value
        return variables

    def mapping(self, key: str) -> Mapping[str, Any]:
        value = self.raw(key)
        if value is None or value == "":
            return {}
        if not isinstance(value, Mapping):
            self.problem(key, f"expected a mapping, not {type(value).__name__}")
            return {}
        return value

    def existing_file(self, key: str, *, required: bool = False) -> str:
        """A path that names an existing regular file (checked now, at load time, where the action runs)."""
        path = self.string(key, required=required)
        if path and self.local and not os.path.isfile(path):
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


# --- declarations: one attrs field per setting ------------------------------------------------------

SETTING_METADATA = "postee.setting"
"""The attrs metadata key under which `setting(...)` stores a field's `Setting`."""


class Kind(enum.Enum):
    """How a declared setting is read (each one a `SettingsReader` accessor)."""

    STRING = "string"
    URL = "url"
    DURATION = "duration"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    STRING_LIST = "string list"
    """Read as a tuple; a single string is a one-element tuple."""
    ENVIRONMENT = "environment"
    """A list of `NAME=value` strings, read as a dict."""
    MAPPING = "mapping"
    EXISTING_FILE = "existing file"


_EMPTY: dict[Kind, Any] = {
    Kind.STRING: "",
    Kind.URL: "",
    Kind.EXISTING_FILE: "",
    Kind.STRING_LIST: (),
}
"""The default of a kind when the declaration gives none (other kinds must give one, or have a reader)."""

_FACTORIES: dict[Kind, Callable[[], Any]] = {Kind.ENVIRONMENT: dict, Kind.MAPPING: dict}

Reader = Callable[..., Any]
"""A custom reader: `read(settings_reader, *keys) -> value`, recording problems on the reader."""


@attrs.frozen
class Setting:
    """How one field of an action is read: its YAML key(s), kind, requirement, default and bounds."""

    keys: tuple[str, ...]
    kind: Kind | None = None
    required: bool = False
    default: Any = None
    minimum: int | None = None
    maximum: int | None = None
    read_with: Reader | None = None

    @property
    def key(self) -> str:
        return self.keys[0]

    def read(self, reader: SettingsReader) -> Any:
        """The setting's value from `reader`'s spec; problems are recorded on `reader`."""
        if self.read_with is not None:
            return self.read_with(reader, *self.keys)
        key, default = self.key, self.default
        match self.kind:
            case Kind.STRING:
                return reader.string(key, default, required=self.required)
            case Kind.URL:
                return reader.url(key, required=self.required) or default
            case Kind.DURATION:
                return reader.duration(key, default)
            case Kind.INTEGER:
                return reader.integer(key, default, minimum=self.minimum, maximum=self.maximum)
            case Kind.BOOLEAN:
                return reader.boolean(key, default)
            case Kind.STRING_LIST:
                if self.required and not reader.has(key):
                    reader.problem(key, "required")
                return tuple(reader.string_list(key)) or default
            case Kind.ENVIRONMENT:
                return reader.environment(key)
            case Kind.MAPPING:
                return dict(reader.mapping(key))
            case Kind.EXISTING_FILE:
                return reader.existing_file(key, required=self.required)
        raise AssertionError(f"unhandled kind {self.kind}")


def setting(
    *keys: str,
    kind: Kind = Kind.STRING,
    required: bool = False,
    default: Any = attrs.NOTHING,
    minimum: int | None = None,
    maximum: int | None = None,
    read: Reader | None = None,
    converter: Callable[[Any], Any] | None = None,
) -> Any:
    """An attrs field read from the YAML key `keys[0]` (a custom `read` may read all of `keys`).

    Without a `default`, strings and URLs default to "", lists to (), mappings to {}; other kinds
    need a `default`, and a field with its own `read` has none (the reader always gives a value).
    """
    if not keys:
        raise TypeError("setting() needs at least one YAML key")
    if read is None and len(keys) > 1:
        raise TypeError(f"setting{keys}: several keys need a reader of their own (read=...)")
    if default is attrs.NOTHING and read is None:
        if kind in _FACTORIES:
            default = attrs.Factory(_FACTORIES[kind])
        elif kind in _EMPTY:
            default = _EMPTY[kind]
        else:
            raise TypeError(f"setting({keys[0]!r}): a {kind.value} setting needs a default")
    plain_default = None if isinstance(default, attrs.Factory) or default is attrs.NOTHING else default
    declared = Setting(
        keys=keys,
        kind=None if read is not None else kind,
        required=required,
        default=plain_default,
        minimum=minimum,
        maximum=maximum,
        read_with=read,
    )
    return attrs.field(default=default, converter=converter, metadata={SETTING_METADATA: declared})


def declared_settings(cls: type) -> list[tuple[str, Setting]]:
    """(constructor argument, `Setting`) of each declared setting of the attrs class `cls`, in order."""
    return [
        (field.alias or field.name, field.metadata[SETTING_METADATA])
        for field in attrs.fields(cls)
        if SETTING_METADATA in field.metadata
    ]


def declared_keys(cls: type) -> frozenset[str]:
    """Every settings key an action class reads: its declared keys and the retry keys."""
    return RETRY_SETTINGS | {key for _, declared in declared_settings(cls) for key in declared.keys}


def read_settings(cls: type, reader: SettingsReader) -> dict[str, Any]:
    """The declared settings of `cls` read from `reader`, by constructor argument, in declaration order."""
    return {name: declared.read(reader) for name, declared in declared_settings(cls)}
