"""Where the database lives: Postee's default path and its `PATH_TO_DB` override.

Kept apart from the SQLite code because the CLI needs the path (for `postee apikey` and for error
messages) without opening anything.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

PATH_ENV_VAR = "PATH_TO_DB"
"""Environment variable that overrides the database path, as in Postee."""

DEFAULT_DB_PATH = "/server/database/webhooks.db"
"""Postee's default database path (it holds a BoltDB file there; ours is SQLite)."""


def db_path_from_env(environ: Mapping[str, str] | None = None) -> str:
    """The database path: `PATH_TO_DB` when set and non-empty, else `DEFAULT_DB_PATH`.

    An empty value counts as unset: a stray `PATH_TO_DB=` in a compose file should not make the
    daemon try to open a database called "".
    """
    env = os.environ if environ is None else environ
    return env.get(PATH_ENV_VAR) or DEFAULT_DB_PATH
