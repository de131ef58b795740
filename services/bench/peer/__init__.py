"""The peer: the pipeline a team would write from the faust and Feast tutorials.

``streamml bench`` (issue 5) compares our pipeline with it, so it has to be what the tutorials
teach, not a straw man. It follows:

- faust-streaming's user guide: one app, one ``@app.agent`` per stage iterating its stream one
  event at a time (``async for value in stream``, no ``take()``), state in ``app.Table``s with
  ``.tumbling()`` windows and changelog topics, output with ``topic.send()``
  (https://faust-streaming.github.io/faust/userguide/agents.html, .../userguide/tables.html);
  one ``faust worker`` process;
- Feast's push-source page and quickstart: a ``PushSource`` per feature view, ``store.push()``
  of a one-row DataFrame as each event's features change, ``store.get_online_features()`` at
  scoring time (https://docs.feast.dev/reference/data-sources/push);
- ONNX Runtime's Python API: ``InferenceSession.run`` on the event's one input row.

Where it is given what ours has, so that the comparison is about the pipeline's shape: the same
Avro codec (decoding costs the same), our faust transport with our fetch wait and session timeout
(faust's hard-coded 1.5 s fetch wait would cost it over a second per hop on the embedded broker),
ONNX Runtime with our scorer's thread settings, and the model's inputs built by name and with
nulls filled exactly as our scorer does, so that its scores are comparable. Everything else is
faust's and Feast's defaults: producer acks and linger, offset reset, commit interval,
at-least-once processing (faust's exactly-once does not work on the embedded broker).

Where it departs from a tutorial, each time to its advantage or for the harness: faust's web
server is off, the worker writes a file when its partitions are assigned (``app.py``), a record
that does not decode is logged and skipped instead of crashing the agent, and the merchant table
is updated from the card-keyed stream, which is only right with one worker (see ``app.py``).

Start it with ``PeerPipeline`` (``runner.py``), or ``python -m services.bench.peer --home H
--model M --model-version V`` with the stack's ``STREAMML_*`` settings in the environment.
"""
