"""Synthetic payment transactions, realistic enough for a fraud model to have something to learn.

Legitimate traffic: each card has a typical spend (lognormal across cards), a home currency
(mostly EUR) and a few favourite merchants drawn from a Zipf-like popularity; some cards pay
more often than others. Two kinds of noise keep the task honest: a card now and then makes a
quick legitimate run of purchases, or one unusually large purchase. Fraud: a compromised card
suddenly makes 3-8 payments within two minutes, at merchants it never pays at otherwise, each
several times its usual spend; only those are labelled fraud.

``rate_per_s`` spaces *event times* (exponential inter-arrival), it is not a send rate. Windowed
features only mean something when a card pays every so often, so ``rate_per_s / cards`` matters:
scoring traffic should have the per-card rate the model was trained on (see the model card).
"""

from __future__ import annotations

import heapq
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

CURRENCIES = ("EUR", "USD", "GBP")
_CURRENCY_SHARE = (0.86, 0.08, 0.06)
_CHUNK = 4096  # random draws are made this many events at a time, for speed
_BURST_SIZE = (3, 8)
_BURST_SPAN_MS = 120_000
_FRAUD_FACTOR = (3.0, 8.0)
_BIG_PURCHASE = 0.02  # share of legitimate payments that are 3-10x the card's usual
_SPREE = 0.01  # share of legitimate payments followed by 1-3 more within five minutes
_FAVOURITE = 0.85  # share of legitimate payments made at one of the card's favourites
_MIN_MERCHANTS = 20

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
# (event time ms, tie-break sequence, card, merchant, amount, is fraud)
_Scheduled = tuple[int, int, int, int, float, bool]


@dataclass(frozen=True, slots=True)
class LabelledTransaction:
    """One record with exactly the fields of payments.transactions.avsc, and its label."""

    record: dict[str, Any]
    is_fraud: bool


@dataclass(frozen=True)
class _Population:
    """The cards and merchants: fixed by the seed, shared by every pass over the stream."""

    typical_spend: Floats
    activity_cdf: Floats
    currency: Ints
    favourites: tuple[Ints, ...]
    popularity_cdf: Floats

    @classmethod
    def draw(cls, rng: np.random.Generator, cards: int, merchants: int) -> _Population:
        popularity = rng.permutation(np.arange(1, merchants + 1, dtype=np.float64) ** -1.1)
        popularity /= popularity.sum()
        activity = rng.gamma(2.0, 1.0, cards)
        favourite_counts = np.minimum(2 + rng.poisson(4.0, cards), merchants // 2)
        return cls(
            typical_spend=np.exp(rng.normal(np.log(35.0), 0.8, cards)),
            activity_cdf=np.cumsum(activity) / activity.sum(),
            currency=rng.choice(len(CURRENCIES), size=cards, p=_CURRENCY_SHARE),
            favourites=tuple(
                rng.choice(merchants, size=int(k), replace=False, p=popularity)
                for k in favourite_counts
            ),
            popularity_cdf=np.cumsum(popularity),
        )


class PaymentsGenerator:
    """A deterministic stream of labelled transactions: same seed and start_ms, same events."""

    def __init__(
        self,
        *,
        seed: int,
        cards: int = 2000,
        merchants: int = 300,
        fraud_share: float = 0.01,
        start_ms: int | None = None,
        rate_per_s: float = 1000.0,
    ) -> None:
        if cards < 1 or merchants < _MIN_MERCHANTS:
            raise ValueError(f"need >= 1 card and >= {_MIN_MERCHANTS} merchants")
        if not 0.0 <= fraud_share < 0.5 or rate_per_s <= 0.0:
            raise ValueError("fraud_share must be in [0, 0.5) and rate_per_s > 0")
        self.seed = seed
        self.cards = cards
        self.merchants = merchants
        self.fraud_share = fraud_share
        self.start_ms = int(time.time() * 1000) if start_ms is None else start_ms
        self.rate_per_s = rate_per_s
        population_seed, self._stream_seed = np.random.SeedSequence(seed).spawn(2)
        self._population = _Population.draw(
            np.random.default_rng(population_seed), cards, merchants
        )

    def events(self, n: int) -> Iterator[LabelledTransaction]:
        """The first ``n`` events of the stream, lazily; each call starts from the beginning."""
        run = _Run(self, np.random.default_rng(self._stream_seed))
        for _ in range(n):
            yield run.next()


class _Run:
    """The mutable state of one pass over the stream (clock, scheduled bursts, merchants seen)."""

    def __init__(self, gen: PaymentsGenerator, rng: np.random.Generator) -> None:
        self._gen, self._pop, self._rng = gen, gen._population, rng
        self._gap_ms = 1000.0 / gen.rate_per_s
        self._next_arrival = float(gen.start_ms)
        # Bursts start after legitimate payments; pick the odds so fraud makes up fraud_share.
        legit_per_normal = 1.0 + _SPREE * 2.0
        burst_mean = sum(_BURST_SIZE) / 2.0
        share = gen.fraud_share
        self._burst_odds = share * legit_per_normal / (burst_mean * (1.0 - share))
        self._scheduled: list[_Scheduled] = []
        self._sequence = 0
        self._used: list[set[int]] = [set() for _ in range(gen.cards)]
        self._blocked: dict[int, set[int]] = {}  # fraudsters' merchants, never the holder's
        self._gaps: Floats
        self._u_card: Floats
        self._u_merchant: Floats
        self._u_big: Floats
        self._u_next: Floats
        self._noise: Floats
        self._cursor = 0
        self._refill()
        self._preroll(gen.start_ms)

    def next(self) -> LabelledTransaction:
        if self._scheduled and self._scheduled[0][0] <= self._next_arrival:
            when, _, card, merchant, amount, fraud = heapq.heappop(self._scheduled)
            return self._emit(when, card, merchant, amount, fraud)
        return self._legitimate()

    def _legitimate(self) -> LabelledTransaction:
        if self._cursor == len(self._gaps):
            self._refill()
        i, self._cursor = self._cursor, self._cursor + 1
        when = int(self._next_arrival)
        self._next_arrival += float(self._gaps[i])
        card = int(np.searchsorted(self._pop.activity_cdf, self._u_card[i], side="right"))
        card = min(card, self._gen.cards - 1)
        amount = float(self._pop.typical_spend[card] * self._noise[i])
        u_big = float(self._u_big[i])
        if u_big < _BIG_PURCHASE:
            amount *= 3.0 + 7.0 * u_big / _BIG_PURCHASE
        u_next = float(self._u_next[i])
        if u_next < self._burst_odds:
            self._schedule_fraud(when)
        elif u_next < self._burst_odds + _SPREE:
            self._schedule_spree(when, card)
        merchant = self._merchant(card, float(self._u_merchant[i]))
        return self._emit(when, card, merchant, amount, False)

    def _refill(self) -> None:
        rng, size = self._rng, _CHUNK
        self._gaps = rng.exponential(self._gap_ms, size)
        self._u_card, self._u_merchant = rng.random(size), rng.random(size)
        self._u_big, self._u_next = rng.random(size), rng.random(size)
        self._noise = rng.lognormal(0.0, 0.45, size)
        self._cursor = 0

    def _merchant(self, card: int, u: float) -> int:
        favourites = self._pop.favourites[card]
        if u < _FAVOURITE:
            return int(favourites[int(u / _FAVOURITE * len(favourites))])
        v = (u - _FAVOURITE) / (1.0 - _FAVOURITE)
        merchant = min(int(np.searchsorted(self._pop.popularity_cdf, v)), self._gen.merchants - 1)
        return int(favourites[0]) if merchant in self._blocked.get(card, ()) else merchant

    def _preroll(self, start: int) -> None:
        """Bursts already under way at the start, so fraud_share holds from the first event.

        Without them a stream shorter than a burst's span (two minutes is 120k events at
        1000/s) would hold almost no fraud: each burst's events trail in over its span.
        """
        expected = self._burst_odds * self._gen.rate_per_s * _BURST_SPAN_MS / 1000.0
        count = int(self._rng.poisson(expected))
        for began in np.sort(self._rng.integers(start - _BURST_SPAN_MS, start, count)):
            self._schedule_fraud(int(began), not_before=start)

    def _schedule_fraud(self, now: int, not_before: int | None = None) -> None:
        """A compromised card's burst, from ``now``; events before ``not_before`` are dropped."""
        rng = self._rng
        card = int(rng.integers(self._gen.cards))
        known = self._used[card] | set(self._pop.favourites[card].tolist())
        candidates = np.setdiff1d(np.arange(self._gen.merchants), np.fromiter(known, np.int64))
        if candidates.size == 0:  # a card that has paid everywhere cannot be defrauded here
            return
        size = int(rng.integers(_BURST_SIZE[0], _BURST_SIZE[1] + 1))
        merchants = rng.choice(candidates, size=size, replace=len(candidates) < size)
        factors = rng.uniform(*_FRAUD_FACTOR, size)
        offsets = np.sort(rng.integers(1, _BURST_SPAN_MS, size))
        self._used[card].update(merchants.tolist())
        self._blocked.setdefault(card, set()).update(merchants.tolist())
        spend = float(self._pop.typical_spend[card])
        floor = now if not_before is None else not_before
        for merchant, factor, offset in zip(merchants, factors, offsets, strict=True):
            if now + int(offset) >= floor:
                self._push(now + int(offset), card, int(merchant), spend * float(factor), True)

    def _schedule_spree(self, now: int, card: int) -> None:
        rng, favourites = self._rng, self._pop.favourites[card]
        size = int(rng.integers(1, 4))
        offsets = np.sort(rng.integers(10_000, 300_000, size))
        amounts = self._pop.typical_spend[card] * rng.lognormal(0.0, 0.45, size)
        for offset, amount in zip(offsets, amounts, strict=True):
            merchant = int(favourites[int(rng.integers(len(favourites)))])
            self._push(now + int(offset), card, merchant, float(amount), False)

    def _push(self, when: int, card: int, merchant: int, amount: float, fraud: bool) -> None:
        self._sequence += 1
        heapq.heappush(self._scheduled, (when, self._sequence, card, merchant, amount, fraud))

    def _emit(
        self, when: int, card: int, merchant: int, amount: float, fraud: bool
    ) -> LabelledTransaction:
        self._used[card].add(merchant)
        event_id = uuid.UUID(bytes=self._rng.bytes(16), version=4).hex
        record: dict[str, Any] = {
            "event_id": event_id,
            "card_id": f"card-{card:06d}",
            "merchant_id": f"m-{merchant:04d}",
            "amount": round(max(amount, 0.01), 2),
            "currency": CURRENCIES[int(self._pop.currency[card])],
            "event_time": when,
        }
        return LabelledTransaction(record, fraud)
