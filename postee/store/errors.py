"""Errors of the store, so callers handle one family instead of `sqlite3`'s.

Every `sqlite3.Error` that escapes an operation is wrapped in a `StoreError` whose message names the
database file: when a daemon logs "disk I/O error" the operator needs to know *which* file.
"""

from __future__ import annotations


class StoreError(Exception):
    """The store cannot do what was asked (cannot open, corrupt file, I/O error, closed...)."""


class StoreCorrupt(StoreError):
    """The file exists but is not a usable SQLite database of ours (or is damaged)."""


class StoreClosed(StoreError):
    """An operation was attempted on a store after `aclose()`."""
