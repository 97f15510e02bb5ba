"""Prometheus metrics for `GET /metrics`.

One `Metrics` object per app, with its own registry (not the global default), so several apps
can run in one process (tests, a controller and runners) without clashing. Mailbox depths are
read at scrape time from the mailboxes themselves instead of being pushed on every message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from actors import MailboxStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SEND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class _MailboxCollector(Collector):
    def __init__(self) -> None:
        self.sources: list[Callable[[], Iterable[MailboxStats]]] = []

    def collect(self) -> Iterable[GaugeMetricFamily]:
        depth = GaugeMetricFamily("postee_mailbox_depth", "Messages waiting in an actor's mailbox", labels=["mailbox"])
        high = GaugeMetricFamily("postee_mailbox_high_water", "Most messages ever waiting in a mailbox",
                                 labels=["mailbox"])
        capacity = GaugeMetricFamily("postee_mailbox_capacity", "Mailbox capacity", labels=["mailbox"])
        for source in list(self.sources):
            for stats in source():
                depth.add_metric([stats.name], stats.depth)
                high.add_metric([stats.name], stats.high_water)
                capacity.add_metric([stats.name], float(stats.capacity))
        yield depth
        yield high
        yield capacity


class Metrics:
    """Every metric the daemon exports."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.events_received = Counter("postee_events_received", "Events accepted", ["source"], registry=r)
        self.events_rejected = Counter("postee_events_rejected", "Requests refused at intake", ["reason"], registry=r)
        self.route_matches = Counter("postee_route_matches", "Events a route's rule matched", ["route"], registry=r)
        self.route_errors = Counter("postee_route_errors", "Route failures by stage", ["route", "stage"], registry=r)
        self.renders = Counter("postee_renders", "Template renders", ["template", "outcome"], registry=r)
        self.dedup_drops = Counter("postee_dedup_drops", "Events dropped as duplicates", ["route"], registry=r)
        self.aggregated = Counter("postee_aggregated_items", "Items queued for aggregation", ["route", "action"],
                                  registry=r)
        self.action_sends = Counter("postee_action_sends", "Action sends by final status", ["action", "type", "status"],
                                    registry=r)
        self.action_retries = Counter("postee_action_retries", "Action attempts that were retried", ["action"],
                                      registry=r)
        self.action_duration = Histogram("postee_action_send_seconds", "Time to a send's final outcome", ["action"],
                                         buckets=SEND_BUCKETS, registry=r)
        self.restarts = Counter("postee_actor_restarts", "Actor restarts by supervisor", ["supervisor", "child"],
                                registry=r)
        self.config_reloads = Counter("postee_config_reloads", "Config reloads", ["outcome"], registry=r)
        self.ready = Gauge("postee_ready", "1 when the daemon is ready to accept events", registry=r)
        self.runner_events = Counter("postee_runner_events", "Events reported by runners", ["runner"], registry=r)
        self.handovers = Counter("postee_handovers", "Events handed over to another side for a route's next step "
                                 "(side: the runner of that step, or controller)", ["route", "side"], registry=r)
        self.dispatch_expired = Counter("postee_dispatch_expired", "Steps for a runner recorded expired: not "
                                        "taken within runner-dispatch-ttl", ["runner", "route"], registry=r)
        self.dispatch_pending = Gauge("postee_dispatch_pending", "Steps waiting for their runner to take them",
                                      ["runner"], registry=r)
        self.runner_executions = Counter("postee_runner_executions", "Action executions reported by runners",
                                         ["runner", "action", "status"], registry=r)
        self.runner_execution_seconds = Histogram("postee_runner_execution_seconds",
                                                  "Duration of action executions on runners", ["runner"],
                                                  buckets=SEND_BUCKETS, registry=r)
        self.bus_connected = Gauge("postee_bus_connected", "1 while the controller/runner link is up", registry=r)
        self._mailboxes = _MailboxCollector()
        r.register(self._mailboxes)
        self.feed_subscribers = Gauge("postee_feed_subscribers", "Live feed subscribers (/feed clients, the dashboard)",
                                      registry=r)
        self.feed_dropped = Counter("postee_feed_dropped_messages",
                                    "Live feed messages a subscriber lost because it fell behind", registry=r)

    def watch_mailboxes(self, source: Callable[[], Iterable[MailboxStats]]) -> None:
        """Report the mailboxes `source()` returns at every scrape."""
        self._mailboxes.sources.append(source)

    def unwatch_mailboxes(self, source: Callable[[], Iterable[MailboxStats]]) -> None:
        if source in self._mailboxes.sources:
            self._mailboxes.sources.remove(source)

    def render(self) -> bytes:
        return generate_latest(self.registry)
