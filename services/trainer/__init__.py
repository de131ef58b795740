"""Trainer: datasets computed like the featurizer does, the MLP, its ONNX export and bootstrap."""
