"""YAML in and out through libyaml when the installed PyYAML has it (its wheels do): ten times faster.

A controller parses its whole file (thousands of lines for a large fleet) at every load and reload,
dumps it once to fingerprint it and dumps a slice per runner; each runner parses its slice. With the
pure-Python parser and emitter that was most of the time a thousand-runner simulation spent starting.

The data is the same either way (the constructors and resolver are PyYAML's own). Two differences:
libyaml's emitter escapes characters outside the Basic Multilingual Plane in double-quoted scalars
(`"\\U0001F6A8"`, which every YAML reader loads back to the same text), so a slice's text, and its
version, may differ from the pure emitter's; and its parser's error messages say less. So a document
libyaml refuses is parsed again by the pure parser, whose message (with the offending character and
position) is the one users see; where the pure parser accepts it (libyaml is stricter in a few corners),
its result is used.
"""

from __future__ import annotations

from typing import IO, Any

import yaml

__all__ = ["safe_dump", "safe_load"]

_Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper: type = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def safe_load(stream: str | bytes | IO[Any]) -> Any:
    """`yaml.safe_load`, with libyaml when available (see the module docstring for errors)."""
    if _Loader is yaml.SafeLoader:
        return yaml.safe_load(stream)
    if not isinstance(stream, str | bytes):
        stream = stream.read()
    try:
        return yaml.load(stream, Loader=_Loader)  # noqa: S506 - libyaml's safe loader
    except yaml.YAMLError:
        return yaml.safe_load(stream)  # the pure parser's message, or its result


def safe_dump(data: Any, **options: Any) -> str:
    """`yaml.safe_dump` to a string, with libyaml when available."""
    return yaml.dump(data, Dumper=_Dumper, **options)
