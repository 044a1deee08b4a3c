"""The benchmarks: the NumPy floor, PyTorch references and the harness (run.py)."""
