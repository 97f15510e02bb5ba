"""Backend selection: `--rego-engine` / `POSTEE_REGO_ENGINE` name -> backend instance."""

from __future__ import annotations

import importlib

from postee.rego.engine import RegoBackend

DEFAULT_BACKEND = "regopy"

_BACKENDS = {
    "regopy": ("postee.rego.regopy_backend", "RegopyBackend"),
    "regorus": ("postee.rego.regorus_backend", "RegorusBackend"),
}


class UnknownBackendError(ValueError):
    """The named Rego backend does not exist or its package is not installed."""


def backend_names() -> list[str]:
    return sorted(_BACKENDS)


def get_backend(name: str = DEFAULT_BACKEND) -> RegoBackend:
    """Return a backend by name; a missing optional package is reported with the install hint."""
    try:
        module_name, class_name = _BACKENDS[name.lower()]
    except KeyError:
        raise UnknownBackendError(
            f"unknown Rego engine {name!r}; choose one of {', '.join(backend_names())}"
        ) from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = " (install with: pip install 'postee-py[regorus]')" if name == "regorus" else ""
        raise UnknownBackendError(f"Rego engine {name!r} is not available: {exc}{hint}") from None
    return getattr(module, class_name)()
