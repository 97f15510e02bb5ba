"""One restart policy for every supervised part of a node: the pipeline, the runner link, the bus side.

The design asks that a bug in any long-lived part of a node (a route, an action, the runner's outbox
drain, the controller's subscription to runner events) restarts that part, with backoff, and never
ends the node; only a part that keeps crashing escalates (`actors.SupervisorGaveUp`). Keeping the
policy and the restart counter in one place means the pipeline and the roles cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable

from actors import EventKind, RestartPolicy, Supervisor, SupervisorEvent
from postee.metrics import Metrics

ACTOR_POLICY = RestartPolicy(max_restarts=10, window=60.0, backoff_initial=0.1, backoff_max=5.0)
"""At most 10 restarts a minute per supervisor, waiting 0.1 s doubling to 5 s between them."""

DEFAULT_STOP_GRACE = 10.0


def count_restarts(metrics: Metrics | None) -> Callable[[SupervisorEvent], None]:
    """A supervisor `on_event` hook that counts restarts in `postee_actor_restarts{supervisor,child}`."""

    def on_event(event: SupervisorEvent) -> None:
        if metrics is not None and event.kind is EventKind.RESTARTED:
            metrics.restarts.labels(event.supervisor, event.child).inc()

    return on_event


def node_supervisor(name: str, metrics: Metrics | None, *, stop_grace: float = DEFAULT_STOP_GRACE,
                    fail_fast_on_start: bool = False) -> Supervisor:
    """A one-for-one supervisor with the node's policy, its restarts counted in `metrics`.

    `fail_fast_on_start` (see `actors.Supervisor`): for the bus side, whose first failure (a dead
    transport, a refused subscription) is a setting to fix, reported at once with its own error.
    """
    return Supervisor(name, ACTOR_POLICY, on_event=count_restarts(metrics), stop_grace=stop_grace,
                      fail_fast_on_start=fail_fast_on_start)
