"""The ordered record of a simulation: every delivery on the bus, every action attempt, every fault.

Each entry is one canonical line (kind, virtual time to the microsecond, fields in the caller's order) folded
into a running SHA-256: the same seed must give the same hash, run after run, and any difference in
what happened, or in the order it happened, changes it. The last entries are kept to print next to
a violated invariant.
"""

from __future__ import annotations

import collections
import hashlib
from typing import Any

import trio

KEEP_LAST = 200
"""Entries kept in memory for a failure report (the hash covers them all)."""


class Trace:
    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.entries = 0
        self.counts: collections.Counter[str] = collections.Counter()
        self.last: collections.deque[str] = collections.deque(maxlen=KEEP_LAST)

    def add(self, kind: str, **fields: Any) -> None:
        """Record one happening of `kind` now (virtual time)."""
        # repr, not JSON: callers pass their fields in a fixed order and plain values (str, int,
        # float, bool, None, lists of them), so the text is as canonical and a few times cheaper.
        line = f"{kind} {trio.current_time():.6f} {fields!r}"
        self._hash.update(line.encode())
        self._hash.update(b"\n")
        self.entries += 1
        self.counts[kind] += 1
        self.last.append(line)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()
