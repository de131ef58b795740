"""The Quix Streams peer's names, importable without quixstreams (the product's environment
has none): the runner and the tests find the peer's group and Feast project by them."""

DOMAIN = "payments"
APP_ID = "streamml-quix"  # its consumer group; its internal topics carry the name too
PROJECT = (
    "streamml_quix"  # its Feast project: its Redis keys meet neither ours nor the faust peer's
)
