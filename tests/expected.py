"""The payments card features, in contract order, written out by hand.

Tests compare what the code derives from the declaration with this independent spelling.
"""

CARD_FEATURES = (
    "txn_count_5m",
    "txn_count_1h",
    "txn_count_24h",
    "amount_sum_1h",
    "amount_mean_24h",
    "amount_max_24h",
    "seconds_since_last_txn",
)
