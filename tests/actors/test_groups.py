"""`one_error`: a single failure leaves as itself, chained as it was raised, never to the group."""

from __future__ import annotations

import traceback

import pytest
import trio

from actors import one_error


def _fail(cause: BaseException | None = None) -> None:
    if cause is None:
        raise KeyError("second")
    raise KeyError("second") from cause


async def _fail_while_handling() -> None:
    try:
        raise OSError("first")
    except OSError:
        _fail()  # implicitly chained: the KeyError's context is the OSError


async def _fail_from_cause() -> None:
    _fail(cause=ValueError("why"))


async def test_the_group_is_not_the_context_of_the_single_error() -> None:
    with pytest.raises(KeyError) as caught:
        with one_error():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.sleep_forever)
                raise KeyError("only this")
    error = caught.value
    assert not isinstance(error.__context__, BaseExceptionGroup)
    assert error.__context__ is None and error.__cause__ is None
    assert "During handling of the above exception" not in "".join(traceback.format_exception(error))


async def test_the_error_keeps_its_own_context() -> None:
    with pytest.raises(KeyError) as caught:
        with one_error():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_fail_while_handling)
                await trio.sleep_forever()
    error = caught.value
    assert not isinstance(error.__context__, BaseExceptionGroup)
    assert isinstance(error.__context__, OSError) and not error.__suppress_context__
    assert error.__cause__ is None


async def test_the_error_keeps_its_cause() -> None:
    with pytest.raises(KeyError) as caught:
        with one_error():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_fail_from_cause)
                await trio.sleep_forever()
    error = caught.value
    assert isinstance(error.__cause__, ValueError) and error.__suppress_context__
    assert not isinstance(error.__context__, BaseExceptionGroup)
