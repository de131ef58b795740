"""The Quix Streams peer: the pipeline a careful Quix Streams 3.x user would write.

``streamml bench --systems streamml,peer,quix`` measures it beside ours (issue 19), so it has
to be what Quix's documentation teaches, with its own speed options on, not a straw man:

- one ``Application`` with ``processing_guarantee="exactly-once"`` (Kafka transactions),
  ``commit_interval`` 0.1 s (its default is 5 s, and under exactly-once every output waits for
  the checkpoint; docs/benchmarks.md says which intervals were tried), our fetch wait;
- ``StreamingDataFrame`` steps: a stateful ``apply`` for the card's features over its events
  kept in the state store (RocksDB, changelogged), ``group_by`` the merchant (a repartition
  topic), a ``sliding_window`` with ``Count`` for the merchant's hour, ``to_topic`` for the
  vectors and the predictions, ``BatchingSink``s that write Feast's online store once per
  checkpoint (the documented way to write to an outside store);
- ONNX Runtime's ``InferenceSession`` on each event's input row.

Where it is given what ours has, so that the comparison is about the pipelines: our Avro codec
as its serializers (decoding costs the same), ONNX Runtime with our scorer's thread settings,
the model's inputs built by name with the declared fills, the features from the same
declarations. It runs in a virtualenv of its own (``venv.py``: quixstreams pins an older
confluent-kafka and pydantic than ours).
"""
