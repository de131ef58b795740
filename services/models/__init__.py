"""What a model is: the kinds streamml serves (ONNX, river), how each scores and is stored."""
