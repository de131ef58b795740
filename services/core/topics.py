"""Every topic name and the schema each carries: the one place they are spelled."""

from __future__ import annotations

from dataclasses import dataclass

MODELS = "ml.models"
MODEL_EVENTS = "ml.models.events"
ALERTS = "ml.alerts"
RETRAIN_REQUESTS = "ml.retrain.requests"

DLQ_SUFFIX = ".dlq"
SHADOW_SUFFIX = ".shadow"
CHANGELOG_SUFFIX = ".changelog"
BY_EVENT_SUFFIX = ".by-event"
JOIN_STATE_SUFFIX = ".join-state"
MONITORING_SUFFIX = ".monitoring"

# Topics that share one generic schema: the subject is the schema file's stem.
_GENERIC_SUBJECTS = {
    DLQ_SUFFIX: "dlq",
    CHANGELOG_SUFFIX: "window_entry",
    BY_EVENT_SUFFIX: "monitor_part",
    JOIN_STATE_SUFFIX: "monitor_part",
    MONITORING_SUFFIX: "monitoring",
}


@dataclass(frozen=True)
class DomainTopics:
    """The topics one domain owns. ``events`` is declared by the domain (payments: transactions)."""

    domain: str
    events: str

    @classmethod
    def for_domain(cls, domain: str, events_name: str = "events") -> DomainTopics:
        return cls(domain=domain, events=f"{domain}.{events_name}")

    @property
    def events_dlq(self) -> str:
        return self.events + DLQ_SUFFIX

    @property
    def outcomes(self) -> str:
        return f"{self.domain}.outcomes"

    @property
    def outcomes_dlq(self) -> str:
        return self.outcomes + DLQ_SUFFIX

    @property
    def labelled(self) -> str:
        """Each prediction joined with its outcome and its vector, by the monitor."""
        return f"{self.domain}.labelled"

    @property
    def monitoring(self) -> str:
        """The monitor's snapshots of its figures (``schemas/monitoring.avsc``)."""
        return f"{self.domain}{MONITORING_SUFFIX}"

    @property
    def features(self) -> str:
        return f"{self.domain}.features"

    @property
    def features_dlq(self) -> str:
        return self.features + DLQ_SUFFIX

    @property
    def predictions(self) -> str:
        return f"{self.domain}.predictions"

    @property
    def shadow_predictions(self) -> str:
        return self.predictions + SHADOW_SUFFIX

    def by_entity(self, app_id: str, entity: str) -> str:
        """A featurizer app's own topic of accepted events re-keyed by another entity."""
        return f"{app_id}.{self.domain}.by-{entity}"

    def windows_changelog(self, app_id: str, entity: str) -> str:
        """A featurizer app's compacted changelog of one entity's windows (its state)."""
        return f"{app_id}.{self.domain}.{entity}-tiles{CHANGELOG_SUFFIX}"

    def by_event(self, app_id: str) -> str:
        """A monitor app's own topic of the domain's parts re-keyed by event id."""
        return f"{app_id}.{self.domain}{BY_EVENT_SUFFIX}"

    def join_state(self, app_id: str) -> str:
        """A monitor app's compacted changelog of its join tables (its state)."""
        return f"{app_id}.{self.domain}{JOIN_STATE_SUFFIX}"

    def data_topics(self) -> tuple[str, ...]:
        return (
            self.events,
            self.events_dlq,
            self.outcomes,
            self.outcomes_dlq,
            self.labelled,
            self.monitoring,
            self.features,
            self.features_dlq,
            self.predictions,
            self.shadow_predictions,
        )


def schema_subject(topic: str) -> str:
    """Name of the ``schemas/<subject>.avsc`` file that describes ``topic``'s values."""
    for suffix, subject in _GENERIC_SUBJECTS.items():
        if topic.endswith(suffix):
            return subject
    if topic.endswith(SHADOW_SUFFIX):
        return topic[: -len(SHADOW_SUFFIX)]
    return topic
