"""Benchmarks of issue 7: the NumPy floor, PyTorch references and the harness (run.py)."""
