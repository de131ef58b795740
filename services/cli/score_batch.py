"""``score-batch``: a parquet file of feature vectors scored as the scorer would score them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from services.scorer.offline import CHUNK_ROWS, score_batch


def register(commands: Any) -> None:
    score = commands.add_parser(
        "score-batch",
        help="score a parquet file of feature vectors with the serving models",
        description="Scores every row of INPUT (the fields of <domain>.features, and optionally "
        "the online features) with the registry's champion and canary, exactly as the "
        "scorer routes them, and writes INPUT's columns plus the prediction fields to OUTPUT. "
        "With no champion registered the heuristic scores (served_by=fallback).",
    )
    score.add_argument("domain")
    score.add_argument("--input", required=True, type=Path, help="parquet file of vectors")
    score.add_argument("--output", required=True, type=Path, help="parquet file to write")
    score.add_argument(
        "--chunk-rows", type=int, default=CHUNK_ROWS, help=f"rows per chunk (default {CHUNK_ROWS})"
    )
    score.add_argument(
        "--require-model",
        action="store_true",
        help="fail when no champion is registered, instead of scoring with the heuristic",
    )
    score.set_defaults(handler=cmd_score_batch)


def cmd_score_batch(args: argparse.Namespace) -> int:
    score_batch(
        args.domain,
        args.input,
        args.output,
        chunk_rows=args.chunk_rows,
        require_model=args.require_model,
    )
    return 0
