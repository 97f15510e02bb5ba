import pytest
import trio

from actors import Actor, AskTimeout, MailboxClosed, Reply, ask


class Echo(Actor[tuple[str, Reply]]):
    async def handle(self, message):
        text, reply = message
        if text == "boom":
            reply.fail(ValueError("boom requested"))
        elif text == "silent":
            return
        else:
            reply.send(text.upper())


async def test_ask_returns_the_reply():
    echo = Echo()
    async with trio.open_nursery() as nursery:
        await nursery.start(echo.run)
        assert await ask(echo.address, lambda r: ("hi", r), timeout=1) == "HI"
        nursery.cancel_scope.cancel()


async def test_ask_raises_the_actors_error():
    echo = Echo()
    async with trio.open_nursery() as nursery:
        await nursery.start(echo.run)
        with pytest.raises(ValueError, match="boom requested"):
            await ask(echo.address, lambda r: ("boom", r), timeout=1)
        nursery.cancel_scope.cancel()


async def test_ask_times_out_with_the_runtime_exception(autojump_clock):
    echo = Echo()
    async with trio.open_nursery() as nursery:
        await nursery.start(echo.run)
        start = trio.current_time()
        with pytest.raises(AskTimeout) as info:
            await ask(echo.address, lambda r: ("silent", r), timeout=3)
        assert trio.current_time() - start == pytest.approx(3)
        assert isinstance(info.value, TimeoutError)
        nursery.cancel_scope.cancel()


async def test_ask_timeout_covers_a_full_mailbox(autojump_clock):
    echo = Echo(capacity=0)  # never started: nobody receives
    with pytest.raises(AskTimeout):
        await ask(echo.address, lambda r: ("hi", r), timeout=2)


async def test_ask_a_closed_actor():
    echo = Echo()
    echo.begin_stop()
    with pytest.raises(MailboxClosed):
        await ask(echo.address, lambda r: ("hi", r), timeout=1)


def test_late_reply_is_a_no_op():
    reply = Reply()
    reply.abandon()
    assert reply.send(1) is False
