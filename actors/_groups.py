"""Turn Trio's exception groups back into the one exception a caller should see."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import trio


def leaves(exc: BaseException) -> list[BaseException]:
    """Flatten (nested) exception groups into their leaf exceptions."""
    if isinstance(exc, BaseExceptionGroup):
        out: list[BaseException] = []
        for inner in exc.exceptions:
            out.extend(leaves(inner))
        return out
    return [exc]


def unwrap(exc: BaseException) -> BaseException:
    """The single meaningful exception inside `exc`, or `exc` itself when there are several.

    Cancellations are not meaningful when a real error is present: a nursery that failed
    cancels its siblings, and their `Cancelled` rides along in the group.
    """
    found = [e for e in leaves(exc) if not isinstance(e, trio.Cancelled)]
    return found[0] if len(found) == 1 else exc


@contextmanager
def one_error() -> Iterator[None]:
    """Re-raise an exception group holding one real error as that error (the public boundary rule).

    The error leaves as it was raised: same `__cause__`, same `__context__` (and whether that is
    shown). Raising it while the group is being handled would chain the group as its context, and
    a traceback would then show the error twice, the second time wrapped in the group.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        single = unwrap(group)
        if single is group:
            raise
        context, suppress = single.__context__, single.__suppress_context__
        try:
            raise single from single.__cause__
        finally:  # `raise` has just set the group as the context: put back the error's own
            single.__context__ = context
            single.__suppress_context__ = suppress
