"""Exporting trained models to other runtimes (ONNX): see dlrun.export.onnx."""
