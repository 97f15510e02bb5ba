import contextlib
import io
import os
from typing import TextIO

import pytest
import trio
import trio.testing

from postee.actions import ActionError, ActionSpec, Delivery, build_action
from postee.actions.stdout import StdoutAction

SPEC = ActionSpec(name="out", type="stdout")


async def test_prints_the_description_to_stdout(capfd):
    async with build_action(SPEC) as action:
        result = await action.send(Delivery(content={"title": "T", "description": "line 1\nline 2"}))
    assert result.output == ""
    assert capfd.readouterr().out == "line 1\nline 2\n"


async def test_missing_description_prints_an_empty_line():
    stream = io.StringIO()
    action = StdoutAction.from_spec(SPEC, stream=stream)
    await action.send(Delivery(content={"title": "only a title"}))
    assert stream.getvalue() == "\n"


async def test_concurrent_sends_write_whole_messages():
    stream = io.StringIO()
    action = StdoutAction.from_spec(SPEC, stream=stream)
    messages = [f"message {n}: " + "x" * 5000 for n in range(20)]
    async with trio.open_nursery() as nursery:
        for message in messages:
            nursery.start_soon(action.send, Delivery(content={"description": message}))
    assert sorted(stream.getvalue().splitlines()) == sorted(messages)


async def test_a_closed_stream_is_a_failure_not_a_crash():
    stream = io.StringIO()
    stream.close()
    action = StdoutAction.from_spec(SPEC, stream=stream)
    with pytest.raises(ActionError) as info:
        await action.send(Delivery(content={"description": "x"}))
    assert not info.value.retryable


def _full_pipe() -> tuple[int, TextIO]:
    """A pipe filled to the brim: its read end, and a text stream on its write end that blocks on flush."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    try:
        while True:
            os.write(write_fd, b"x" * 4096)
    except BlockingIOError:
        pass
    os.set_blocking(write_fd, True)
    return read_fd, open(write_fd, "w", encoding="utf-8")


async def test_a_blocked_stdout_does_not_starve_other_worker_threads():
    """Sends stuck on a full pipe hold the action's own limiter, not Trio's default one.

    More sends than the default limiter has tokens: with the default limiter, each would hold a
    token in a blocked thread, and an unrelated `to_thread` call would wait for ever.
    """
    read_fd, stream = _full_pipe()
    action = StdoutAction.from_spec(SPEC, stream=stream)
    blocked_sends = trio.to_thread.current_default_thread_limiter().total_tokens + 1
    try:
        async with trio.open_nursery() as nursery:
            for _ in range(blocked_sends):
                nursery.start_soon(action.send, Delivery(content={"description": "y" * 100_000}))
            await trio.testing.wait_all_tasks_blocked()
            with trio.fail_after(5):
                assert await trio.to_thread.run_sync(lambda: "done") == "done"
            nursery.cancel_scope.cancel()  # the blocked write's thread is abandoned, still blocked
    finally:
        os.close(read_fd)  # the blocked write fails with EPIPE: its thread ends
        with trio.fail_after(5), pytest.raises(ActionError):
            await action.send(Delivery(content={"description": "after"}))  # waits for that thread first
        with contextlib.suppress(OSError):
            stream.close()
