"""``score-batch``: columns in and out, row errors, the line-up it loads, and a whole file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from services.core.declarations import Domain
from services.core.errors import ConfigError, ModelError
from services.models.runtimes import OnnxModel
from services.registry.artifacts import ModelStore
from services.registry.versions import CANARY, CANDIDATE, CHAMPION, ModelVersion, RegistryView
from services.scorer.batch import ModelCaller, VectorScorer
from services.scorer.offline import (
    OUTPUT_FIELDS,
    check_columns,
    check_output,
    open_input,
    prediction_columns,
    rows_to_vectors,
    score_file,
    serving_lineup,
)
from services.scorer.serving import Lineup, canary_bucket, heuristic_serving
from services.scorer.vectors import VectorSpec
from tests.unit.test_scorer_http import ONLINE, vector

STORED = 4  # the online store's merchant count, for rows that do not bring one


@pytest.fixture
def spec(payments: Domain, schemas_dir: Path) -> VectorSpec:
    return VectorSpec.for_domain(payments, schemas_dir)


def write_vectors(path: Path, vectors: list[dict[str, Any]], **extra: list[Any]) -> Path:
    frame = pd.DataFrame(vectors)
    for name, values in extra.items():
        frame[name] = values
    frame.to_parquet(path, index=False)
    return path


def onnx_artifact(n_inputs: int, weight: float) -> bytes:
    """sigmoid(features @ w): a real ONNX graph with the scorer's input name."""
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.FLOAT, [n_inputs, 1], [weight / 1000] * n_inputs)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "w"], ["z"]),
            helper.make_node("Sigmoid", ["z"], ["p"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, n_inputs])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, [None, 1])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def registered(
    store: ModelStore, payments: Domain, version: str, stage: str, weight: float, **kw: Any
) -> ModelVersion:
    names = list(payments.model_inputs)
    stored = store.save(payments.model_name, version, onnx_artifact(len(names), weight), {})
    return ModelVersion(
        model_name=payments.model_name,
        version=version,
        stage=stage,
        kind="onnx",
        artifact_uri=stored.uri,
        sha256=stored.sha256,
        dataset_id="ds",
        feature_names=names,
        **kw,
    )


# --- columns ---


def test_every_schema_field_must_be_a_column(spec: VectorSpec) -> None:
    columns = [c for c in vector() if c not in ("amount", "txn_count_1h")]
    with pytest.raises(ConfigError, match=r"in\.parquet lacks the columns amount, txn_count_1h"):
        check_columns(columns, spec, Path("in.parquet"))
    check_columns([*vector(), "note", ONLINE], spec, Path("in.parquet"))  # others are kept


def test_a_column_named_like_an_output_field_is_refused(spec: VectorSpec) -> None:
    with pytest.raises(ConfigError, match="already has the columns score, served_by"):
        check_columns([*vector(), "score", "served_by"], spec, Path("in.parquet"))


def test_the_output_is_not_the_input(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must not be the input"):
        check_output(tmp_path / "a.parquet", tmp_path / "." / "a.parquet")
    with pytest.raises(ConfigError, match="is a folder"):
        check_output(tmp_path / "a.parquet", tmp_path)


def test_a_missing_or_unreadable_input_is_a_clear_error(tmp_path: Path, spec: VectorSpec) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        open_input(tmp_path / "nothing.parquet", spec)
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    with pytest.raises(ConfigError, match="is not a parquet file"):
        open_input(junk, spec)


def test_a_bad_row_is_named_by_its_index_and_field(spec: VectorSpec) -> None:
    rows = [vector(0), vector(1), {**vector(2), "amount": float("nan")}]
    with pytest.raises(ConfigError, match=r"row 102 \(0-based\): amount: expected a finite number"):
        rows_to_vectors(rows, spec, first_row=100)


def test_rows_become_keyed_vectors(spec: VectorSpec) -> None:
    rows = [{**vector(0), "note": "kept in the output, not scored", ONLINE: None}]
    ((key, record),) = rows_to_vectors(rows, spec, 0)
    assert key == b"card-0"
    assert record == vector(0)


def test_prediction_columns_are_typed_like_the_predictions_schema() -> None:
    columns = prediction_columns(
        [
            {
                "model_name": "m",
                "model_version": "3",
                "score": 0.25,
                "decision": False,
                "served_by": "champion",
                "predicted_at": 1_767_225_600_000,
            }
        ]
    )
    assert tuple(columns) == OUTPUT_FIELDS
    assert columns["predicted_at"].type == pa.timestamp("ms", tz="UTC")
    assert columns["decision"].type == pa.bool_()
    assert columns["score"].to_pylist() == [0.25]


# --- the line-up ---


def test_no_champion_means_the_heuristic(payments: Domain, tmp_path: Path) -> None:
    lineup = serving_lineup(RegistryView(()), payments, ModelStore(tmp_path), 1)
    assert (lineup.champion.version, lineup.champion.served_by) == ("heuristic", "fallback")
    assert lineup.canary is None


def test_the_champion_and_canary_are_loaded_as_the_scorer_loads_them(
    payments: Domain, tmp_path: Path
) -> None:
    store = ModelStore(tmp_path)
    view = RegistryView(
        [
            registered(store, payments, "1", CHAMPION, 1.0),
            registered(store, payments, "2", CANARY, -1.0, traffic_share=0.4),
            registered(store, payments, "3", CANDIDATE, 2.0),
        ]
    )
    lineup = serving_lineup(view, payments, store, 1)
    assert (lineup.champion.version, lineup.champion.served_by) == ("1", "champion")
    assert lineup.canary is not None
    assert (lineup.canary.version, lineup.canary.served_by) == ("2", "canary")
    assert lineup.canary_share == 0.4 and lineup.shadow is None


def test_an_unloadable_champion_is_an_error_and_an_unloadable_canary_is_left_out(
    payments: Domain, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ModelStore(tmp_path)
    champion = registered(store, payments, "1", CHAMPION, 1.0)
    canary = registered(store, payments, "2", CANARY, -1.0, traffic_share=0.4)
    broken_canary = ModelVersion(**{**canary.to_record(), "sha256": "0" * 64})
    lineup = serving_lineup(RegistryView([champion, broken_canary]), payments, store, 1)
    assert lineup.canary is None and lineup.champion.version == "1"
    assert "the canary payments-fraud@2 cannot be loaded" in capsys.readouterr().err
    broken = ModelVersion(**{**champion.to_record(), "sha256": "0" * 64})
    with pytest.raises(ModelError, match="the champion payments-fraud@1 cannot be loaded"):
        serving_lineup(RegistryView([broken]), payments, store, 1)


# --- a whole file ---


def test_a_file_is_scored_in_chunks_with_its_columns_kept(
    payments: Domain, spec: VectorSpec, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ModelStore(tmp_path / "models")
    view = RegistryView(
        [
            registered(store, payments, "1", CHAMPION, 1.0),
            registered(store, payments, "2", CANARY, -1.0, traffic_share=0.5),
        ]
    )
    lineup = serving_lineup(view, payments, store, 1)
    vectors = [vector(i) for i in range(25)]
    counts = [None if i % 5 == 0 else i for i in range(25)]  # null: read from the store
    source = open_input(
        write_vectors(
            tmp_path / "in.parquet", vectors, note=[f"n{i}" for i in range(25)], **{ONLINE: counts}
        ),
        spec,
    )

    class Store:
        feature_names = (ONLINE,)

        def enrich(self, batch: list[dict[str, Any]]) -> None:
            for v in batch:
                v.setdefault(ONLINE, STORED)

    scorer = VectorScorer(payments, 0.5, Store(), ModelCaller(0))  # type: ignore[arg-type]
    output = tmp_path / "out" / "scored.parquet"
    summary = score_file(source, output, spec, scorer, lineup, chunk_rows=10)

    table = pq.read_table(output)
    assert table.column_names == [*vectors[0], "note", ONLINE, *OUTPUT_FIELDS]
    out = table.to_pylist()
    assert [r["note"] for r in out] == [f"n{i}" for i in range(25)]
    assert [r[ONLINE] for r in out] == counts  # the input as given, not what was read
    models = {"1": 1.0, "2": -1.0}
    for i, row in enumerate(out):
        in_canary = canary_bucket(vectors[i]["card_id"].encode()) < 0.5
        assert row["served_by"] == ("canary" if in_canary else "champion")
        names = payments.model_inputs
        model = OnnxModel(onnx_artifact(len(names), models[row["model_version"]]), names, 1)
        count = STORED if counts[i] is None else counts[i]
        inputs = np.array([payments.input_row({**vectors[i], ONLINE: count}, names)], np.float32)
        assert row["score"] == pytest.approx(float(model.predict(inputs)[0]))
        assert row["decision"] == (row["score"] >= 0.5)
    assert summary.rows == 25 and summary.fallbacks == {}  # the store's value where none given
    err = capsys.readouterr().err
    assert "10/25 rows (40%)" in err and "25/25 rows (100%)" in err
    assert not list(output.parent.glob(".*partial"))


def test_a_bad_row_leaves_no_output(payments: Domain, spec: VectorSpec, tmp_path: Path) -> None:
    vectors = [vector(i) for i in range(15)]
    frame = pd.DataFrame(vectors)
    frame.loc[12, "amount"] = float("inf")
    frame.to_parquet(tmp_path / "in.parquet", index=False)
    source = open_input(tmp_path / "in.parquet", spec)
    scorer = VectorScorer(payments, 0.5, None, ModelCaller(0))
    output = tmp_path / "out.parquet"
    with pytest.raises(
        ConfigError, match=r"row 12 \(0-based\): amount: expected a finite number, got inf"
    ):
        score_file(source, output, spec, scorer, Lineup(heuristic_serving(payments)), 5)
    assert not output.exists()
    assert not list(tmp_path.glob(".*partial"))


def test_timestamp_columns_and_an_empty_file(
    payments: Domain, spec: VectorSpec, tmp_path: Path
) -> None:
    frame = pd.DataFrame([vector(i) for i in range(3)])
    frame["event_time"] = pd.to_datetime(frame["event_time"], unit="ms", utc=True)
    frame.to_parquet(tmp_path / "ts.parquet")  # with the pandas index and its metadata
    scorer = VectorScorer(payments, 0.5, None, ModelCaller(0))
    lineup = Lineup(heuristic_serving(payments))
    out = tmp_path / "ts-out.parquet"
    score_file(open_input(tmp_path / "ts.parquet", spec), out, spec, scorer, lineup, 100)
    scored = pd.read_parquet(out)
    assert list(scored["event_time"]) == list(frame["event_time"])
    assert list(scored["score"]) == pytest.approx(
        [payments.heuristic.score(vector(i)) for i in range(3)]
    )
    frame.iloc[:0].to_parquet(tmp_path / "empty.parquet")
    empty = tmp_path / "empty-out.parquet"
    summary = score_file(
        open_input(tmp_path / "empty.parquet", spec), empty, spec, scorer, lineup, 100
    )
    assert summary.rows == 0
    assert pq.read_table(empty).num_rows == 0
    assert pq.read_table(empty).column_names[-len(OUTPUT_FIELDS) :] == list(OUTPUT_FIELDS)
