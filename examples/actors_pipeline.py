"""A runnable tour of the actors runtime: supervisor, actors, a lane, ask, a crash and a graceful stop.

    python examples/actors_pipeline.py

A `Counter` actor answers questions with `ask`; a `Lane` handles "jobs" strictly in order and
forwards them to the counter; one job makes the lane crash, the supervisor restarts it (the
queued jobs survive), and at the end the supervisor stops gracefully: the lane drains its
mailbox first, then the counter, before anything is cancelled.
"""

from __future__ import annotations

import trio

from actors import Actor, EventKind, Lane, Reply, RestartPolicy, Supervisor, SupervisorEvent, ask


class Counter(Actor):
    """Counts jobs; answers ("total", reply) questions."""

    def __init__(self) -> None:
        super().__init__(name="counter", capacity=10)
        self.total = 0

    async def handle(self, message) -> None:
        match message:
            case ("job", _name):
                self.total += 1
            case ("total", Reply() as reply):
                reply.send(self.total)


async def main() -> None:
    counter = Counter()
    crashed_once = False

    async def do_job(name: str) -> None:
        nonlocal crashed_once
        if name == "job-3" and not crashed_once:
            crashed_once = True
            raise RuntimeError("job-3 hit a bug")
        print(f"lane: handled {name}")
        await counter.address.send(("job", name))

    jobs = Lane(do_job, name="jobs", capacity=5)

    def on_event(event: SupervisorEvent) -> None:
        if event.kind is EventKind.CRASHED:
            print(f"supervisor: {event.child} crashed ({event.error}); restarting in {event.delay:g}s")

    supervisor = Supervisor("app", RestartPolicy(backoff_initial=0.05), on_event=on_event)
    supervisor.add(counter)  # downstream first: stopped last
    supervisor.add(jobs)
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        for i in range(1, 7):
            await jobs.address.send(f"job-{i}")
        await trio.sleep(0.2)
        total = await ask(counter.address, lambda reply: ("total", reply), timeout=1)
        print(f"counter: {total} jobs counted so far")
        await supervisor.stop(grace=2)
    print(f"stopped; final total {counter.total}, restarts {supervisor.restart_count}")


if __name__ == "__main__":
    trio.run(main)
