"""What Tidings counts for Prometheus: one :class:`Metrics` per application, in a registry of its own.

Counters and histograms are kept by the code that sees the thing happen (the HTTP middleware, the
intake, the attempts, the event-webhook sender, the quotas, the policy watcher); what is a state
rather than a happening (queue depth, breaker states, the policy version) is read when
``/metrics`` is scraped. Labels are bounded vocabularies only: route templates, channels,
provider instances, tenants and outcomes, all named in policy or in code, never a recipient, an id
or free text. A registry per application (not prometheus-client's global one) lets tests and
tools build several applications in one process.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, Info, generate_latest

from gateway import statuses
from gateway.store.records import DeadLettered, QueueDepth

CIRCUIT_STATES: Final = ["closed", "open", "half_open"]
METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Request methods kept as label values; any other a client invents is counted as ``other``."""
UNMATCHED: Final = "unmatched"
"""The route label of a request no route matched (a 404 or 405): its path is the client's free text."""
ATTEMPT_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
REQUEST_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class Metrics:
    """Every ``tidings_*`` metric of one application, and the render of them all for a scrape."""

    def __init__(self, version: str = "") -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "tidings_http_requests", "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"], registry=registry,
        )
        self.request_seconds = Histogram(
            "tidings_http_request_duration_seconds", "Time to answer an HTTP request, by route template.",
            ["route"], buckets=REQUEST_BUCKETS, registry=registry,
        )
        self.accepted = Counter(
            "tidings_notifications_accepted", "Notifications accepted (committed, answered 202), by tenant and key mode.",
            ["tenant", "mode"], registry=registry,
        )
        self.attempts = Counter(
            "tidings_delivery_attempts", "Sends to a provider instance, by channel, instance and outcome (sent, transient, permanent).",
            ["channel", "provider", "outcome"], registry=registry,
        )
        self.attempt_seconds = Histogram(
            "tidings_delivery_attempt_duration_seconds", "Time a provider instance took to answer a send, by channel and instance.",
            ["channel", "provider"], buckets=ATTEMPT_BUCKETS, registry=registry,
        )
        self.dead_letters = Counter(
            "tidings_dead_letters", "Deliveries that became dead letters, by channel and dead reason.",
            ["channel", "reason"], registry=registry,
        )
        self.queue_depth = Gauge(
            "tidings_queue_depth", "Deliveries queued or being sent, by channel (read at scrape time).", ["channel"], registry=registry,
        )
        self.queue_oldest = Gauge(
            "tidings_queue_oldest_due_seconds", "How long the longest-waiting due delivery has waited, by channel (0: none due).",
            ["channel"], registry=registry,
        )
        self.circuits = Enum(
            "tidings_provider_circuit", "Each provider instance's circuit breaker state.", ["instance"], states=CIRCUIT_STATES, registry=registry,
        )
        self.reloads = Counter(
            "tidings_policy_reloads", "Policy reloads that changed the set served (ok) or were refused (failed).", ["result"], registry=registry,
        )
        self.policy = Info("tidings_policy", "The policy set in force.", registry=registry)
        self.build = Info("tidings_build", "This Tidings.", registry=registry)
        self.event_webhooks = Counter(
            "tidings_event_webhook_attempts", "Event webhook sends to tenants' endpoints, by tenant and outcome.",
            ["tenant", "outcome"], registry=registry,
        )
        self.quota_rejections = Counter(
            "tidings_quota_rejections", "Messages or events refused by a tenant's quota, by tenant and refusal code.",
            ["tenant", "code"], registry=registry,
        )
        self.events_accepted = Counter(
            "tidings_business_events_accepted", "Business events accepted (answered 202), by tenant and key mode.",
            ["tenant", "mode"], registry=registry,
        )
        self.events_processed = Counter(
            "tidings_business_events_processed", "Business events routed into notifications (or suppressed), by tenant and key mode.",
            ["tenant", "mode"], registry=registry,
        )
        self.build.info({"version": version})
        # The series of the hot path by their label values: a dict hit instead of a labels() call each time (bounded, as the labels are).
        self._request_series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._attempt_series: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}

    def count_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """One answered request; a method outside :data:`METHODS` is counted as ``other``."""
        if method not in METHODS:
            method = "other"  # whatever a client invents: one series, never a key of its own below
        series = self._request_series.get((method, route, status))
        if series is None:
            series = self._request_series[(method, route, status)] = (
                self.requests.labels(method, route, str(status)), self.request_seconds.labels(route)
            )
        series[0].inc()
        series[1].observe(seconds)

    def count_attempt(self, channel: str, provider: str, outcome: str, seconds: float) -> None:
        series = self._attempt_series.get((channel, provider, outcome))
        if series is None:
            series = self._attempt_series[(channel, provider, outcome)] = (
                self.attempts.labels(channel, provider, outcome), self.attempt_seconds.labels(channel, provider)
            )
        series[0].inc()
        series[1].observe(seconds)

    def count_dead_letter(self, dead: DeadLettered) -> None:
        reason = dead.reason if dead.reason in statuses.DEAD_REASONS else "other"
        self.dead_letters.labels(dead.channel, reason).inc()

    def count_reload(self, ok: bool) -> None:
        self.reloads.labels("ok" if ok else "failed").inc()

    def show_policy(self, version: str) -> None:
        self.policy.info({"version": version})

    def show_queues(self, depths: Iterable[QueueDepth], now: float) -> None:
        """The queue gauges as the store has them now; a channel with nothing left reads 0 until the next start."""
        for child in (self.queue_depth, self.queue_oldest):
            for labels in list(_label_values(child)):
                child.labels(*labels).set(0)
        for depth in depths:
            self.queue_depth.labels(depth.channel).set(depth.waiting)
            self.queue_oldest.labels(depth.channel).set(max(now - depth.oldest_due_at, 0.0) if depth.oldest_due_at is not None else 0.0)

    def show_circuits(self, states: Mapping[str, str]) -> None:
        """Each provider instance's circuit; an instance dropped from policy stops being reported."""
        self.circuits.clear()
        for instance, state in states.items():
            self.circuits.labels(instance).state(state)

    def render(self) -> bytes:
        """Every metric in the Prometheus text format."""
        return generate_latest(self.registry)


def _label_values(gauge: Gauge) -> Iterable[tuple[str, ...]]:
    """The label values a labelled gauge has children for."""
    return (tuple(sample.labels.values()) for metric in gauge.collect() for sample in metric.samples)
