"""Exporting trained models: the compact .sbts artifact and ONNX."""
