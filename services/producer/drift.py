"""Drift injected into the synthetic stream, from a given event on (``--drift KIND@N``).

- ``data@N``: amounts are ``DATA_FACTOR`` times larger from event N on. The amount's
  distribution shifts (and with it the card's amount windows); the fraud process does not.
- ``concept@N``: the truth changes from event N on: besides the generator's own frauds, a
  ``CONCEPT_SHARE`` of the transactions it calls legitimate turn out fraudulent. The inputs look
  as before; what they mean does not, so a model's error rate rises.
- ``pattern@N``: a new fraud pattern, which the declared features can express: from event N
  on, a ``PATTERN_SHARE`` of the payments are card testing, a stolen card's tiny test charge
  (``PATTERN_AMOUNT``, never seen before N) that turns out fraudulent. A model trained before
  N misses them; one retrained on what came after learns them from the amount.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.core.errors import ConfigError

DATA = "data"
CONCEPT = "concept"
PATTERN = "pattern"
DATA_FACTOR = 3.0
CONCEPT_SHARE = 0.3
PATTERN_SHARE = 0.1
PATTERN_AMOUNT = (0.1, 0.99)  # a legitimate payment this small is one in 20,000
_SYNTAX = re.compile(r"^(data|concept|pattern)@(\d+)$")


@dataclass(frozen=True)
class Drift:
    kind: str
    start: int  # index of the first drifted event (0-based)

    @classmethod
    def parse(cls, text: str) -> Drift:
        match = _SYNTAX.match(text.strip())
        if match is None:
            raise ConfigError(
                f"--drift {text!r}: write data@N, concept@N or pattern@N (N: an event index)"
            )
        return cls(match.group(1), int(match.group(2)))


class Drifts:
    """Applies every declared drift to the i-th event and its label."""

    def __init__(self, drifts: list[Drift], seed: int) -> None:
        self._drifts = tuple(drifts)
        self._rng = np.random.default_rng(seed)
        self.seen = 0  # events drifted so far: where a stream is now

    def begin(self, kind: str, after: int) -> Drift:
        """Adds a drift of ``kind`` from ``after`` events past the latest one, while a stream
        runs in another thread (a demo that waits for its pipeline to warm up first)."""
        drift = Drift(kind, self.seen + after)
        self._drifts = (*self._drifts, drift)  # one assignment: the stream sees all or none
        return drift

    def apply(self, i: int, record: dict[str, Any], is_fraud: bool) -> tuple[dict[str, Any], bool]:
        self.seen = i + 1
        for drift in self._drifts:
            if i < drift.start:
                continue
            if drift.kind == DATA:
                record = dict(record, amount=round(float(record["amount"]) * DATA_FACTOR, 2))
            elif drift.kind == PATTERN:
                if not is_fraud and self._rng.random() < PATTERN_SHARE:
                    amount = round(float(self._rng.uniform(*PATTERN_AMOUNT)), 2)
                    record, is_fraud = dict(record, amount=amount), True
            elif not is_fraud and self._rng.random() < CONCEPT_SHARE:
                is_fraud = True
        return record, is_fraud
