"""The river model kind: scores in [0, 1], learning, artifacts and input order."""

from __future__ import annotations

import numpy as np
import pytest

from services.core.errors import ModelError
from services.models.river import RiverModel
from services.models.runtimes import ModelRuntime

NAMES = ("amount", "txn_count_5m", "seconds_since_last_txn")


def toy_stream(n: int, seed: int = 1) -> tuple[np.ndarray, list[bool]]:
    """Separable: fraud is a burst (many recent transactions, seconds apart) of big amounts."""
    rng = np.random.default_rng(seed)
    fraud = rng.random(n) < 0.2
    amount = np.where(fraud, rng.uniform(300, 900, n), rng.uniform(1, 80, n))
    count = np.where(fraud, rng.integers(4, 9, n), rng.integers(0, 2, n))
    since = np.where(fraud, rng.uniform(1, 30, n), rng.uniform(3_600, 86_400, n))
    rows = np.column_stack([amount, count, since]).astype(np.float32)
    return rows, fraud.tolist()


def trained(n: int = 3000) -> RiverModel:
    model = RiverModel.new(NAMES)
    rows, labels = toy_stream(n)
    model.learn(rows, labels)
    return model


def test_an_untrained_model_scores_one_half() -> None:
    runtime: ModelRuntime = RiverModel.new(NAMES)  # it is a ModelRuntime
    scores = runtime.predict(toy_stream(5)[0])
    assert scores.dtype == np.float64
    assert scores.shape == (5,)
    np.testing.assert_array_equal(scores, np.full(5, 0.5))
    assert runtime.predict(np.zeros((0, 3), dtype=np.float32)).shape == (0,)


def test_it_learns_a_separable_stream() -> None:
    model = trained()
    assert model.rows_learned == 3000
    rows, labels = toy_stream(1000, seed=2)
    scores = model.predict(rows)
    fraud = np.asarray(labels)
    assert scores[fraud].min() > scores[~fraud].max()  # every fraud ranks above every other
    assert scores[fraud].mean() > 0.8 > 0.2 > scores[~fraud].mean()


def test_scores_are_finite_probabilities_whatever_the_input() -> None:
    model = trained()
    odd = np.array(
        [
            [0.0, 0.0, 0.0],
            [3e38, 3e38, 3e38],
            [-3e38, -1.0, -5.0],
            [np.nan, 1.0, 2.0],
            [np.inf, -np.inf, np.nan],
        ],
        dtype=np.float32,
    )
    scores = model.predict(odd)
    assert np.isfinite(scores).all()
    assert ((scores >= 0.0) & (scores <= 1.0)).all()
    before = model.predict(toy_stream(50, seed=3)[0])
    model.learn(odd, [True, False, True, False, True])  # non-finite inputs learn as zeros
    after = model.predict(toy_stream(50, seed=3)[0])
    assert np.isfinite(after).all()
    assert np.abs(after - before).max() < 0.5


def test_round_trip_gives_identical_scores_and_state() -> None:
    model = trained()
    copy = RiverModel.from_bytes(model.to_bytes(), NAMES)
    assert copy.feature_names == NAMES
    assert copy.rows_learned == model.rows_learned
    rows, labels = toy_stream(500, seed=4)
    np.testing.assert_array_equal(copy.predict(rows), model.predict(rows))
    model.learn(rows, labels)  # the whole learning state travelled, not only the weights
    copy.learn(rows, labels)
    np.testing.assert_array_equal(copy.predict(rows), model.predict(rows))


def test_inputs_are_read_by_name_in_feature_order() -> None:
    model = trained()
    rows, _ = toy_stream(200, seed=5)
    order = [2, 0, 1]
    permuted_names = tuple(NAMES[i] for i in order)
    same_pipeline = RiverModel.from_bytes(model.to_bytes(), NAMES)._pipeline
    reordered = RiverModel(same_pipeline, permuted_names)
    # Equal up to summation order: the weights are summed in the order the inputs come.
    np.testing.assert_allclose(reordered.predict(rows[:, order]), model.predict(rows), rtol=1e-12)
    assert not np.array_equal(model.predict(rows[:, order]), model.predict(rows))


def test_artifacts_for_other_inputs_or_not_river_are_refused() -> None:
    data = trained(100).to_bytes()
    with pytest.raises(ModelError, match="inputs"):
        RiverModel.from_bytes(data, tuple(reversed(NAMES)))
    with pytest.raises(ModelError, match="unpickle"):
        RiverModel.from_bytes(b"not a pickle", NAMES)
    with pytest.raises(ModelError, match="envelope"):
        RiverModel.from_bytes(__import__("pickle").dumps({"format": 99}), NAMES)


def test_rows_must_match_the_inputs() -> None:
    model = RiverModel.new(NAMES)
    with pytest.raises(ModelError, match="3 inputs"):
        model.predict(np.zeros((2, 4), dtype=np.float32))
    with pytest.raises(ModelError, match="3 inputs"):
        model.learn(np.zeros(3, dtype=np.float32), [True])
    with pytest.raises(ValueError, match="labels"):
        model.learn(np.zeros((2, 3), dtype=np.float32), [True])
    assert model.rows_learned == 0
