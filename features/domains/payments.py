"""The payments domain: card transactions, fraud outcomes. Everything about it is declared here."""

from datetime import timedelta

from services.core.declarations import (
    Aggregation,
    Domain,
    Entity,
    Feature,
    Heuristic,
    Monitoring,
    Retraining,
    Segment,
    finite_at_least,
    matches,
    non_empty,
)

CARD = Entity(name="card", key_field="card_id")
MERCHANT = Entity(name="merchant", key_field="merchant_id")

MINUTES_5 = timedelta(minutes=5)
HOUR = timedelta(hours=1)
DAY = timedelta(hours=24)

DOMAIN = Domain(
    name="payments",
    events_name="transactions",
    entities=(CARD, MERCHANT),
    key_entity="card",
    features=(
        Feature("txn_count_5m", "card", Aggregation.COUNT, MINUTES_5),
        Feature("txn_count_1h", "card", Aggregation.COUNT, HOUR),
        Feature("txn_count_24h", "card", Aggregation.COUNT, DAY),
        Feature("amount_sum_1h", "card", Aggregation.SUM, HOUR, "amount"),
        Feature("amount_mean_24h", "card", Aggregation.MEAN, DAY, "amount"),
        Feature("amount_max_24h", "card", Aggregation.MAX, DAY, "amount"),
        Feature("seconds_since_last_txn", "card", Aggregation.SECONDS_SINCE_LAST, fill=86_400.0),
        Feature("merchant_txn_count_1h", "merchant", Aggregation.COUNT, HOUR, in_vector=False),
    ),
    passthrough=("amount",),
    checks=(
        non_empty("event_id"),
        finite_at_least("amount", 0.0),
        matches("currency", "[A-Z]{3}"),
    ),
    # The baseline a rules team would write: bursts of transactions and unusually large amounts.
    heuristic=Heuristic(
        weights={"txn_count_5m": 0.9, "amount": 0.004, "txn_count_1h": 0.05},
        bias=-5.0,
    ),
    label_field="is_fraud",
    model_name="payments-fraud",
    # Quality also per amount band: a model can be good on small payments, poor on large ones.
    monitoring=Monitoring(segments=(Segment("amount", (0.0, 50.0, 200.0, 1000.0)),)),
    # The trainer's loop (docs/trainer.md): the golden set holds frauds and ordinary payments
    # the business is sure of; the other rules are the defaults.
    retraining=Retraining(golden_set="golden/payments/v1"),
)
