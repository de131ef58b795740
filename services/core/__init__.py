"""Shared core: settings, errors, topic names, Avro serde, Kafka I/O, metrics, model store."""
