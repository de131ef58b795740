"""A faust app of another team that subscribes to streamml's predictions.

    python predictions_app.py <bootstrap> <prefix>

It prints one JSON line per prediction of an event whose id starts with <prefix>, as its agent
reads them. The values are Avro single-object records; ``value_serializer="streamml"`` is the
codec streamml registers with faust (the ``faust.codecs`` entry point), so the agent gets dicts.
``processing_guarantee="exactly_once"`` makes faust read committed records only: the scorer
publishes its predictions in Kafka transactions.
"""

from __future__ import annotations

import json
import sys

import faust

bootstrap, prefix = sys.argv[1], sys.argv[2]
app = faust.App(
    f"faust-predictions-{prefix}",
    broker=f"kafka://{bootstrap}",
    processing_guarantee="exactly_once",
    store="memory://",
    web_enabled=False,
    autodiscover=False,
)
predictions = app.topic("payments.predictions", key_type=bytes, value_serializer="streamml")


@app.agent(predictions)
async def show(stream: faust.StreamT) -> None:
    async for prediction in stream:
        if str(prediction["event_id"]).startswith(f"{prefix}-"):
            shown = {k: prediction[k] for k in ("event_id", "score", "decision", "model_version")}
            print(json.dumps(shown), flush=True)


if __name__ == "__main__":
    faust.Worker(app, loglevel="WARNING", redirect_stdouts=False).execute_from_commandline()
