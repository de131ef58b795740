"""The embedded stack: a Kafka-compatible broker and Redis on loopback, for one machine."""
